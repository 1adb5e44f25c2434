//! The pipelines a server runs — a raw pipeline for every stream of the log, a pipeline for
//! every view of the catalog — kept running by the supervisor, and the views' lifecycle.
//!
//! Streams come and go through SQL and through the Kinesis API, so rather than being told,
//! [`Pipelines::reconcile`] compares what should run with what runs: it starts a pipeline for
//! each stream and view that has none, and stops those of streams that were dropped (or
//! dropped and created again: a pipeline is known by its stream's or view's id, not its name),
//! deleting their tables.
//!
//! Rules kept here, for every door: a view's tables are its alone, so a view cannot take a
//! stream's name or a table's; a stream or view that views read cannot be dropped before them
//! (the log asks [`Pipelines`] before any drop, whichever door asked for it); a view that
//! cannot start leaves nothing behind.
//!
//! On a worker of a cluster the views are the cluster's (their catalog is in the lake, and
//! [`Pipelines::follow_views`] makes this worker's the lake's): every worker opens every view,
//! and a view runs where its input stream's partitions are held (without state, each partition's
//! holder over its own) or where partition 0 is (with state: `view`). A worker takes part
//! in a stream's consumer group once (`Groups`), for the stream's raw pipeline and its views.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_lake::Lake;
use sluice_log::Log;
use sluice_sql::ViewDefinition;

use crate::exactly_once::Writer;
use crate::runtime::{Kind, Monitor, Open, Pipeline, PipelineStatus, Supervisor};
use crate::source::{Assignment, StreamSource};
use crate::view::input::Input;
use crate::view::plan::ViewPlan;
use crate::view::{Catalog, Clock, Placement, Shared, StoredView, ViewConfig, ViewPipeline};
use crate::{PipelineError, RawConfig, RawPipeline, Result, errors_table};

/// How a server's pipelines run.
#[derive(Debug, Clone, Default)]
pub struct PipelinesConfig {
    /// The streams' raw tables.
    pub raw: RawConfig,
    /// The views.
    pub views: ViewConfig,
    /// The cluster this server is a worker of, if any: then the partitions of each stream's
    /// topic are shared among the workers through a Kafka consumer group, and the views are
    /// the cluster's.
    pub cluster: Option<ClusterMember>,
}

/// A worker of a cluster, as its pipelines know it.
#[derive(Debug, Clone)]
pub struct ClusterMember {
    /// The cluster's name: every worker of it is started with it.
    pub cluster: String,
    /// This worker's name among them.
    pub worker: String,
}

impl ClusterMember {
    /// The consumer group through which the workers share the partitions of stream `name`
    /// incarnation `id` (one a stream, so that each stream's partitions are spread apart).
    pub fn group_id(&self, name: &str, id: u64) -> String {
        format!("sluice-{}-{name}-{id:016x}", self.cluster)
    }
}

/// How long a worker that drops a view waits, once the view has left the cluster's catalog,
/// before dropping its tables: the worker running it follows the catalog within a second and
/// stops it once its round is done.
const LET_GO: Duration = Duration::from_secs(3);

/// Every pipeline of a server.
pub struct Pipelines {
    log: Arc<Log>,
    lake: Lake,
    catalog: Arc<Catalog>,
    /// In a cluster, this worker's memberships of its streams' consumer groups.
    groups: Option<Arc<Groups>>,
    config: PipelinesConfig,
    clock: Arc<dyn Clock>,
    supervisor: Supervisor,
    /// One change at a time: reconciling, creating and dropping views.
    ddl: tokio::sync::Mutex<()>,
}

impl Pipelines {
    /// The pipelines of `log`'s streams and of the views kept in `views_dir` (in a cluster,
    /// the cluster's, in the lake: known after [`Pipelines::follow_views`]), writing to
    /// `lake`; none runs until [`Pipelines::reconcile`]. From now on the log refuses to drop a
    /// stream that views read.
    pub fn open(
        log: Arc<Log>,
        lake: Lake,
        views_dir: PathBuf,
        config: PipelinesConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Pipelines>> {
        let catalog = Arc::new(match &config.cluster {
            Some(member) => Catalog::in_lake(&lake, &member.cluster),
            None => Catalog::open(views_dir)?,
        });
        let groups = config.cluster.clone().map(|member| {
            Arc::new(Groups {
                member,
                joined: Mutex::default(),
            })
        });
        let readers = catalog.clone();
        log.guard_drops(Arc::new(move |stream| {
            let views = readers.reading(stream);
            (!views.is_empty()).then(|| {
                format!(
                    "materialized views read it: drop them first ({})",
                    views.join(", ")
                )
            })
        }));
        Ok(Arc::new(Pipelines {
            log,
            lake,
            catalog,
            groups,
            config,
            clock,
            supervisor: Supervisor::default(),
            ddl: tokio::sync::Mutex::default(),
        }))
    }

    /// Starts a pipeline for every stream and view that has none, and stops (deleting their
    /// tables) those of streams that are gone.
    pub async fn reconcile(&self) {
        let _ddl = self.ddl.lock().await;
        self.reconcile_locked().await;
    }

    /// [`Pipelines::reconcile`], the DDL lock held.
    async fn reconcile_locked(&self) {
        let mut wanted: Vec<(String, Writer)> = self
            .log
            .streams()
            .iter()
            .map(|s| (s.name().to_string(), Writer::Stream(s.id())))
            .collect();
        wanted.extend(
            self.catalog
                .list()
                .into_iter()
                .map(|v| (v.definition.name, Writer::View(v.id))),
        );
        let running = self.supervisor.keys();
        for key in running.iter().filter(|k| !wanted.contains(k)) {
            self.supervisor.stop(key).await;
            if let (name, Writer::Stream(id)) = key {
                if let Some(groups) = &self.groups {
                    groups.leave(*id);
                }
                if let Err(e) = crate::raw::drop_tables(&self.lake, name, *id).await {
                    tracing::error!(stream = name, error = %e, "cannot drop the tables of a dropped stream");
                }
            }
        }
        for key in wanted.into_iter().filter(|k| !running.contains(k)) {
            let (opener, input): (Arc<dyn Open>, String) = match &key {
                (name, Writer::Stream(_)) => (
                    Arc::new(OpenRaw {
                        log: self.log.clone(),
                        lake: self.lake.clone(),
                        stream: name.clone(),
                        config: self.config.raw.clone(),
                        groups: self.groups.clone(),
                    }),
                    name.clone(),
                ),
                (name, Writer::View(_)) => {
                    let Some(view) = self.catalog.get(name) else {
                        continue;
                    };
                    let input = view.reads();
                    (Arc::new(self.view_opener(view)), input)
                }
            };
            // Opened here, before the caller goes on: a stream's tables exist once
            // `CREATE STREAM` has answered.
            let first = opener.open().await;
            self.supervise(key, opener, first, &input);
        }
    }

    fn supervise(
        &self,
        key: (String, Writer),
        opener: Arc<dyn Open>,
        first: Result<Box<dyn Pipeline>>,
        input: &str,
    ) {
        let (kind, cadence) = match key.1 {
            Writer::Stream(_) => (Some(Kind::Raw), self.config.raw.cadence()),
            Writer::View(_) => (None, self.config.views.cadence()),
        };
        let monitor = Monitor::new(&key.0, kind, input);
        self.supervisor
            .start(key, opener, first, cadence, monitor, self.clock.clone());
    }

    fn view_opener(&self, view: StoredView) -> OpenView {
        OpenView {
            snapshots: self.catalog.snapshots(&view),
            pieces: self.catalog.pieces(&view),
            groups: self.groups.clone(),
            view,
            log: self.log.clone(),
            lake: self.lake.clone(),
            config: self.config.views.clone(),
            clock: self.clock.clone(),
        }
    }

    /// `CREATE MATERIALIZED VIEW`: checks the query, records the view, creates its tables and
    /// starts it (backfilling what its input holds). A view that cannot start leaves nothing
    /// behind, and the caller gets the reason.
    pub async fn create_view(&self, definition: ViewDefinition) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        let name = definition.name.clone();
        if self.catalog.get(&name).is_some() {
            return Err(PipelineError::ViewExists(name));
        }
        if self.log.stream(&name).is_ok() {
            return Err(PipelineError::NameTaken {
                taken: format!("'{name}' is a stream"),
            });
        }
        for table in [name.clone(), errors_table(&name)] {
            if self.table_taken(&table).await? {
                return Err(PipelineError::NameTaken {
                    taken: format!("table '{table}' exists in the lake"),
                });
            }
        }
        let plan = ViewPlan::new(&definition, &self.log, &self.lake).await?;
        let input = plan.input.source.clone();
        if let (Some(_), Input::View(view)) = (&self.config.cluster, &input) {
            return Err(crate::view::views_of_views(view));
        }
        if self.config.cluster.is_some() && plan.inputs().len() > 1 {
            return Err(crate::view::joins_in_a_cluster());
        }
        let stored = self.catalog.create(definition, &plan.inputs()).await?;
        // The incarnations of the streams it reads, as the view opens them.
        let streams: Vec<(String, Option<u64>)> = plan
            .inputs()
            .into_iter()
            .filter_map(|i| match i {
                Input::Stream(stream) => {
                    Some((stream.clone(), self.log.stream(stream).ok().map(|s| s.id())))
                }
                Input::View(_) => None,
            })
            .collect();
        let opener = Arc::new(self.view_opener(stored.clone()));
        let opened = match opener.open().await {
            // The drop guard knows the view now: a stream it reads cannot be dropped any more,
            // but one dropped a moment ago may be going still. Wait for that, then look.
            Ok(pipeline) => match streams.iter().find(|(stream, id)| {
                id.is_none_or(|id| self.log.confirm_stream(stream, id).is_err())
            }) {
                Some((stream, _)) => Err(PipelineError::InputGone(format!(
                    "stream '{stream}' was dropped while the view was created"
                ))),
                None => Ok(pipeline),
            },
            Err(e) => Err(e),
        };
        match opened {
            Ok(pipeline) => {
                let key = (name, Writer::View(stored.id));
                let input = stored.reads();
                self.supervise(key, opener, Ok(pipeline), &input);
                Ok(())
            }
            Err(e) => {
                // Nothing of a view that cannot start stays behind.
                let _ = crate::view::drop_tables(&self.lake, &name, stored.id).await;
                let _ = self.catalog.drop_view(&name).await;
                Err(e)
            }
        }
    }

    /// Whether table `name` is in the lake, and not the leftover of a view no longer in the
    /// catalog (a worker that died while dropping it): a new view takes such a table's place.
    async fn table_taken(&self, name: &str) -> Result<bool> {
        if !self.lake.table_names().iter().any(|t| t == name) {
            return Ok(false);
        }
        Ok(match self.lake.open(name).await {
            Ok(table) => match crate::exactly_once::writer(&table) {
                Some(Writer::View(id)) => self.catalog.list().iter().any(|v| v.id == id),
                _ => true,
            },
            Err(sluice_lake::Error::TableNotFound(_)) => false,
            Err(e) => return Err(e.into()),
        })
    }

    /// Makes this worker's views the cluster's (its catalog in the lake), starting those
    /// created and stopping those dropped on other workers (nothing to do on a single Sluice).
    pub async fn follow_views(&self) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        if self.catalog.follow().await? {
            self.reconcile_locked().await;
        }
        Ok(())
    }

    /// `DROP MATERIALIZED VIEW`: stops the view, drops its tables and forgets it.
    pub async fn drop_view(&self, name: &str, if_exists: bool) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        let Some(view) = self.catalog.get(name) else {
            return match if_exists {
                true => Ok(()),
                false => Err(PipelineError::ViewNotFound(name.to_string())),
            };
        };
        let readers = self.catalog.reading(name);
        if !readers.is_empty() {
            return Err(PipelineError::InUse(format!(
                "materialized views read view '{name}': drop them first ({})",
                readers.join(", ")
            )));
        }
        let key = (name.to_string(), Writer::View(view.id));
        if self.config.cluster.is_some() {
            // Forgotten first, so that the worker running it stops, then given time to; one
            // that has not heard by then is fenced off its tables before they go.
            let snapshots = self.catalog.snapshots(&view);
            let pieces = self.catalog.pieces(&view);
            self.catalog.drop_view(name).await?;
            self.supervisor.stop(&key).await;
            tokio::time::sleep(LET_GO).await;
            let shards = self.log.stream(&view.input).map_or(0, |s| s.shards().len());
            crate::view::fence_tables(&self.lake, name, view.id, 0..shards as u32).await?;
            crate::view::drop_tables(&self.lake, name, view.id).await?;
            snapshots.retain(u64::MAX).await?;
            if let Some(pieces) = pieces {
                pieces.delete(None).await?;
            }
        } else {
            // Stopped and its tables dropped first: a crash before it is forgotten leaves a
            // view that starts again.
            self.supervisor.stop(&key).await;
            crate::view::drop_tables(&self.lake, name, view.id).await?;
            self.catalog.drop_view(name).await?;
        }
        Ok(())
    }

    /// Every view, by name.
    pub fn views(&self) -> Vec<StoredView> {
        self.catalog.list()
    }

    /// View `name`, if there is one.
    pub fn view(&self, name: &str) -> Option<StoredView> {
        self.catalog.get(name)
    }

    /// The status of stream `stream`'s raw pipeline.
    pub fn stream_status(&self, stream: &str) -> Option<PipelineStatus> {
        self.supervisor
            .monitor(stream)
            .map(|m| m.status())
            .filter(|s| s.kind == Some(Kind::Raw))
    }

    /// Where stream `stream`'s tables have all taken its shard 0 to (a source with one shard a
    /// stream acknowledges its own source as far): at its pipeline's last round, or in a
    /// cluster, where the partition's holder may be another worker, as the lake records it.
    pub async fn taken(&self, stream: &sluice_log::Stream) -> Option<u64> {
        if self.config.cluster.is_none() {
            return self.stream_status(stream.name())?.taken.get(&0).copied();
        }
        match crate::raw::taken(&self.lake, stream.name(), stream.id(), 0).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(stream = stream.name(), error = %e, "cannot read how far the lake has taken a stream");
                None
            }
        }
    }

    /// Stops stream `name`'s pipeline and starts it again: it reads the stream's definition
    /// anew (a column added to it, which its tables get first). Returns once it runs.
    pub async fn reopen(&self, name: &str) {
        // Under the DDL lock: a pipeline opened meanwhile (at start-up) with the definition
        // before is stopped here, or not yet opened.
        let _ddl = self.ddl.lock().await;
        let key = (self.supervisor.keys().into_iter())
            .find(|(n, w)| n == name && matches!(w, Writer::Stream(_)));
        if let Some(key) = key {
            self.supervisor.stop(&key).await;
        }
        self.reconcile_locked().await;
    }

    /// Every view's status, by name.
    pub fn view_statuses(&self) -> Vec<PipelineStatus> {
        self.catalog
            .list()
            .into_iter()
            .map(
                |view| match self.supervisor.monitor(&view.definition.name) {
                    Some(monitor) => monitor.status(),
                    None => Monitor::new(&view.definition.name, None, &view.reads()).status(),
                },
            )
            .collect()
    }

    /// The views that read their input here at their last round: on a worker of a cluster,
    /// those it runs (on standby elsewhere, they read no partition).
    pub fn views_run_here(&self) -> Vec<String> {
        self.view_statuses()
            .into_iter()
            .filter(|status| !status.partition_lag.is_empty())
            .map(|status| status.name)
            .collect()
    }

    /// Stops every pipeline, letting a round in progress finish.
    pub async fn stop_all(&self) {
        self.supervisor.stop_all().await;
    }
}

/// Opens a stream's raw pipeline.
struct OpenRaw {
    log: Arc<Log>,
    lake: Lake,
    stream: String,
    config: RawConfig,
    /// In a cluster, the worker's memberships: it writes the partitions it holds.
    groups: Option<Arc<Groups>>,
}

#[async_trait]
impl Open for OpenRaw {
    async fn open(&self) -> Result<Box<dyn Pipeline>> {
        let mut source = StreamSource::open(&self.log, &self.stream)?;
        if let Some(groups) = &self.groups {
            let assignment = groups.assignment(&source)?;
            source = source.held(assignment);
        }
        Ok(Box::new(
            RawPipeline::open(source, &self.lake, self.config.clone()).await?,
        ))
    }
}

/// A worker's memberships of its streams' consumer groups, by stream incarnation: each joined
/// when a pipeline of the stream first opens, and left when the stream is dropped.
struct Groups {
    member: ClusterMember,
    joined: Mutex<HashMap<u64, Arc<dyn Assignment>>>,
}

impl Groups {
    /// This worker's share of `stream`'s partitions.
    fn assignment(&self, stream: &StreamSource) -> Result<Arc<dyn Assignment>> {
        let id = stream.stream().id();
        let mut joined = self.joined.lock().expect("groups lock");
        if let Some(assignment) = joined.get(&id) {
            return Ok(assignment.clone());
        }
        let name = stream.stream().name();
        let assignment: Arc<dyn Assignment> = match &stream.definition().connector {
            #[cfg(feature = "kafka")]
            Some(sluice_sql::Connector::Kafka(topic)) => {
                use crate::source::membership::{Group, Membership, SESSION_TIMEOUT};
                Arc::new(Membership::join(&Group {
                    brokers: topic.brokers.clone(),
                    topic: topic.topic.clone(),
                    group_id: self.member.group_id(name, id),
                    member: self.member.worker.clone(),
                    session_timeout: SESSION_TIMEOUT,
                })?)
            }
            _ => {
                return Err(PipelineError::Unsupported(format!(
                    "stream '{name}' does not read a Kafka topic: the workers of a cluster \
                     share only Kafka partitions"
                )));
            }
        };
        joined.insert(id, assignment.clone());
        Ok(assignment)
    }

    /// Leaves stream incarnation `id`'s group (once its pipelines let go of it).
    fn leave(&self, id: u64) {
        self.joined.lock().expect("groups lock").remove(&id);
    }
}

/// Opens a view's pipeline.
struct OpenView {
    view: StoredView,
    snapshots: crate::view::state::Snapshots,
    /// In a cluster, where its pieces go.
    pieces: Option<crate::view::pieces::Pieces>,
    /// In a cluster, the worker's memberships: where the view runs follows its stream's
    /// partitions.
    groups: Option<Arc<Groups>>,
    log: Arc<Log>,
    lake: Lake,
    config: ViewConfig,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl Open for OpenView {
    async fn open(&self) -> Result<Box<dyn Pipeline>> {
        let cluster = match (&self.groups, &self.pieces) {
            (Some(groups), Some(pieces)) => Some(Shared {
                assignment: groups.assignment(&StreamSource::open(&self.log, &self.view.input)?)?,
                pieces: pieces.clone(),
            }),
            _ => None,
        };
        let placement = Placement {
            snapshots: self.snapshots.clone(),
            cluster,
        };
        Ok(Box::new(
            ViewPipeline::open(
                self.view.definition.clone(),
                self.view.id,
                self.log.clone(),
                self.lake.clone(),
                placement,
                self.config.clone(),
                self.clock.clone(),
            )
            .await?,
        ))
    }
}
