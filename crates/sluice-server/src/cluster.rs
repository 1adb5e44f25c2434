//! Cluster mode: this server is one of several workers started the same way (`--cluster NAME`
//! with one lake), with no leader.
//!
//! ```text
//!  lake/.sluice/cluster-<name>-streams/<stream>.json   the catalog: one document a stream
//!  lake/.sluice/cluster-<name>-views/<view>.json       … and a view (`sluice_pipeline::view`)
//!  lake/.sluice/cluster-<name>-states/…                the views' state snapshots
//!  lake/.sluice/cluster-<name>-sources/<source>.json    … and a PostgreSQL source
//!  lake/.sluice/cluster-<name>-workers/<worker>.json   each worker's word on itself
//!
//!  CREATE STREAM (any worker) ─ claim: a conditional put ─► the catalog
//!  CREATE MATERIALIZED VIEW   ─ a conditional put ────────► the catalog
//!  every second, every worker: the catalog ─► Log::follow ─► its streams (same ids)
//!                                          └► Pipelines::follow_views ─► its views
//!        Pipelines: a raw pipeline a stream, sharing the topic's partitions through a group;
//!                   a view's pipeline, running where the stream's partition 0 is held
//! ```
//!
//! Responsibilities and invariants:
//! - The catalog in the lake is the truth of which streams exist: a stream is created once a
//!   conditional put of its document succeeded (of two workers creating one name, one is
//!   told it exists), dropped from it before any worker drops it, and every worker makes its
//!   log the catalog's within a second ([`follow`]), ids included: the workers' pipelines write
//!   the same tables as one writer's partitions (`exactly_once`, rule 7).
//! - A cluster's streams read Kafka topics: the catalog takes nothing else, and a worker's data
//!   directory holds no records of its own (a server whose log holds some does not start as a
//!   worker). A stream declared without a connector, through any door (SQL, the Kinesis API's
//!   CreateStream, Firehose's CreateDeliveryStream, a config file), gets a topic of its own on
//!   the cluster's brokers (`--kafka`) as the catalog claims its name (deleted again if the
//!   claim fails), and every worker's doors produce into its stream's topic
//!   (`sluice_pipeline::source::forward_appends`): a record is acknowledged once the brokers
//!   have it. Every worker that sees a stream leave the catalog deletes the topic made for it,
//!   [`RETIRE_TOPIC_AFTER`] later, so that it goes even if the worker that dropped it died.
//! - A PostgreSQL source is the cluster's too: kept in the lake
//!   (`.sluice/cluster-<name>-sources/`), followed by every worker within a second, its
//!   tables' streams topics of their own (which only its reader produces into); every worker
//!   runs a reader of it, and the one PostgreSQL lets hold the slot reads while the others
//!   stand by (`sluice_ingest::postgres`).
//! - A view is the cluster's: created or dropped on any worker, known to every worker within
//!   a second, run by one worker at a time (the holder of its stream's partition 0, which
//!   reads every partition), its rows in the lake for every worker's queries.
//! - Each worker writes its own document every few seconds (its streams' partitions and their
//!   lag); `GET /v1/cluster` shows them all, a worker silent for longer than
//!   [`GONE_AFTER`] as gone.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sluice_error::Classify;
use sluice_lake::Documents;
use sluice_log::{Log, StreamMeta};
use sluice_pipeline::Pipelines;
use sluice_pipeline::source::TopicHome;
use sluice_sql::{Connector, StreamDefinition};

use crate::error::{HttpError, ServerError};
use crate::router::AppState;

/// How often a worker makes its streams the catalog's and lists the lake's tables.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How often a worker writes its own document.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// How long after its stream was dropped a topic Sluice created is deleted: by then every worker
/// has followed the catalog and closed its clients of the topic. (A client asking for a topic
/// just deleted gets an answer that crashes librdkafka 2.12 from Tansu, which names no topic.)
pub const RETIRE_TOPIC_AFTER: Duration = Duration::from_secs(10);
/// A worker whose document is older than this is shown as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(15);

/// This server as a worker of a cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The cluster's name.
    pub name: String,
    /// This worker's name.
    pub worker: String,
    /// The address its HTTP API answers on.
    pub http: String,
    /// Where streams declared without a connector get their topics (`--kafka`).
    pub home: Option<TopicHome>,
    streams: Documents,
    workers: Documents,
}

impl Cluster {
    /// Worker `worker` (its HTTP API on `http`) of cluster `name`, whose catalog is in `lake`
    /// and whose brokers, if given, are `kafka`.
    pub fn new(
        name: &str,
        worker: &str,
        http: &str,
        kafka: Option<&str>,
        lake: &sluice_lake::Lake,
    ) -> Cluster {
        Cluster {
            name: name.to_string(),
            worker: worker.to_string(),
            http: http.to_string(),
            home: kafka.map(|brokers| TopicHome {
                brokers: brokers.to_string(),
                cluster: name.to_string(),
            }),
            streams: lake.documents(&format!("cluster-{name}-streams")),
            workers: lake.documents(&format!("cluster-{name}-workers")),
        }
    }

    /// Joins: refuses a log that holds records of its own, then shares the log's streams
    /// through the catalog and sends the doors' records to their topics.
    pub fn join(&self, log: &Log) -> Result<(), ServerError> {
        if let Some(own) = log.streams().iter().find(|s| s.meta().elsewhere.is_none()) {
            return Err(ServerError::Config(format!(
                "the data directory holds stream '{}', whose records are its own: a worker of \
                 cluster '{}' keeps none (its streams read Kafka topics); give the worker a data \
                 directory of its own",
                own.name(),
                self.name
            )));
        }
        log.share(Arc::new(Catalog {
            documents: self.streams.clone(),
            runtime: tokio::runtime::Handle::current(),
            read: std::sync::Mutex::default(),
            home: self.home.clone(),
        }));
        log.forward_appends(sluice_pipeline::source::forward_appends()?);
        Ok(())
    }
}

/// The catalog of a cluster's streams: a document a stream, in the lake.
struct Catalog {
    documents: Documents,
    /// The server's runtime: the log asks the catalog from blocking threads.
    runtime: tokio::runtime::Handle,
    /// The streams as last read, by name, with their documents' tags: the log follows the
    /// catalog every second, and only a document written anew is read again.
    read: std::sync::Mutex<std::collections::HashMap<String, (String, StreamMeta)>>,
    /// Where a stream declared without a connector gets a topic of its own: the cluster's
    /// brokers (`--kafka`), if any.
    home: Option<TopicHome>,
}

impl Catalog {
    fn unavailable(e: impl std::fmt::Display) -> sluice_log::Error {
        sluice_log::Error::Catalog(e.to_string())
    }

    /// Deletes, [`RETIRE_TOPIC_AFTER`] from now, the topic Sluice created for dropped stream
    /// `meta`, if it did, unless the catalog has a stream of that topic by then (created again).
    /// Every worker does so as it sees the stream leave the catalog, the one that dropped it
    /// too, so that the topic goes even when that one dies meanwhile; a topic already deleted
    /// is no error.
    fn retire_later(&self, meta: StreamMeta) {
        let definition = StreamDefinition::from_log(&meta.definition);
        let Some(Connector::Kafka(topic)) = &definition.connector else {
            return;
        };
        if !topic.owned {
            return;
        }
        let (documents, topic) = (self.documents.clone(), topic.topic.clone());
        self.runtime.spawn(async move {
            tokio::time::sleep(RETIRE_TOPIC_AFTER).await;
            let reads_it = |content: &[u8]| {
                serde_json::from_slice::<StreamMeta>(content).is_ok_and(|now| {
                    matches!(StreamDefinition::from_log(&now.definition).connector,
                        Some(Connector::Kafka(k)) if k.topic == topic)
                })
            };
            match documents.get(&meta.name).await {
                Ok(Some(content)) if reads_it(&content) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stream = meta.name, error = %e, "cannot read the catalog: the dropped stream's topic stays");
                    return;
                }
            }
            let name = meta.name.clone();
            let retired = tokio::task::spawn_blocking(move || {
                sluice_pipeline::source::retire_stream(&name, &definition)
            });
            if let Ok(Err(e)) = retired.await {
                // Its topic stays, and a stream created under its name is told.
                tracing::warn!(stream = meta.name, error = %e, "cannot delete the dropped stream's topic");
            }
        });
    }
}

impl sluice_log::Catalog for Catalog {
    fn claim(&self, meta: &mut StreamMeta) -> sluice_log::Result<()> {
        let mut definition = StreamDefinition::from_log(&meta.definition);
        // Whichever door creates it (SQL, the Kinesis API, Firehose, a config file), a stream
        // declared without a place for its records gets a topic of its own.
        let made = match (&definition.connector, &self.home) {
            (Some(Connector::Kafka(_)), _) => false,
            (None, Some(home)) => {
                let topic = sluice_pipeline::source::new_topic(home, &meta.name, meta.shards)
                    .map_err(|e| match e.class() {
                        sluice_error::Class::Unavailable => Self::unavailable(e),
                        _ => sluice_log::Error::NotShared(e.to_string()),
                    })?;
                // A source's stream keeps its word on where its records come from: the doors
                // refuse it, its reader produces into the topic.
                meta.elsewhere.get_or_insert_with(|| topic.produce_to());
                definition.connector = Some(topic);
                meta.definition = definition.to_log();
                true
            }
            _ => {
                return Err(sluice_log::Error::NotShared(format!(
                    "stream '{}' does not read a Kafka topic: the streams of a cluster do, so \
                     that its workers can share their partitions; declare it with connector = \
                     'kafka', or start the workers with --kafka BROKERS to give streams topics \
                     of their own",
                    meta.name
                )));
            }
        };
        let claimed = serde_json::to_vec(meta)
            .map_err(Self::unavailable)
            .and_then(|content| {
                self.runtime
                    .block_on(self.documents.put(&meta.name, content, true))
                    .map_err(Self::unavailable)
            })
            .and_then(|created| match created {
                true => Ok(()),
                false => Err(sluice_log::Error::StreamExists(meta.name.clone())),
            });
        if made
            && claimed.is_err()
            && let Err(e) = sluice_pipeline::source::retire_stream(&meta.name, &definition)
        {
            // Nothing of a stream not created stays behind: not the topic made for it (another
            // worker may have claimed the name a moment before, for a topic of its own).
            tracing::warn!(stream = meta.name, error = %e, "cannot delete the topic made for a stream not created");
        }
        claimed
    }

    fn redefine(&self, meta: &StreamMeta) -> sluice_log::Result<()> {
        self.runtime.block_on(async {
            let had = self
                .documents
                .get(&meta.name)
                .await
                .map_err(Self::unavailable)?;
            let had: Option<StreamMeta> = match had {
                Some(content) => Some(serde_json::from_slice(&content).map_err(Self::unavailable)?),
                None => None,
            };
            if had.is_none_or(|had| had.id != meta.id) {
                return Err(sluice_log::Error::StreamNotFound(meta.name.clone()));
            }
            let content = serde_json::to_vec(meta).map_err(Self::unavailable)?;
            (self.documents.put(&meta.name, content, false).await).map_err(Self::unavailable)?;
            Ok(())
        })
    }

    fn release(&self, name: &str, id: u64) -> sluice_log::Result<()> {
        self.runtime.block_on(async {
            let Some(content) = self.documents.get(name).await.map_err(Self::unavailable)? else {
                return Ok(());
            };
            let meta: StreamMeta = serde_json::from_slice(&content).map_err(Self::unavailable)?;
            if meta.id == id {
                self.documents
                    .delete(name)
                    .await
                    .map_err(Self::unavailable)?;
            }
            Ok(())
        })
    }

    fn streams(&self) -> sluice_log::Result<Vec<StreamMeta>> {
        let mut read = std::mem::take(&mut *self.read.lock().expect("catalog lock"));
        let now = self.runtime.block_on(async {
            let mut now = std::collections::HashMap::new();
            for (name, tag) in self.documents.tags().await.map_err(Self::unavailable)? {
                let meta = match read.remove(&name) {
                    Some((was, meta)) if was == tag => meta,
                    _ => {
                        // Deleted since it was listed: not there.
                        let Some(content) =
                            self.documents.get(&name).await.map_err(Self::unavailable)?
                        else {
                            continue;
                        };
                        serde_json::from_slice(&content)
                            .map_err(|e| Self::unavailable(format!("stream '{name}': {e}")))?
                    }
                };
                now.insert(name, (tag, meta));
            }
            Ok::<_, sluice_log::Error>(now)
        })?;
        let streams = now.values().map(|(_, meta)| meta.clone()).collect();
        *self.read.lock().expect("catalog lock") = now;
        // What is left was dropped since the last reading.
        for (_, (_, dropped)) in read {
            self.retire_later(dropped);
        }
        Ok(streams)
    }
}

/// What a worker says of itself in its document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    /// Its name.
    pub worker: String,
    /// Its HTTP API.
    pub http: String,
    /// When it wrote this (ms since the Unix epoch).
    pub reported_ms: i64,
    /// Its streams: the partitions it holds of each, with their lag.
    pub streams: Vec<WorkerStream>,
    /// The views it runs (those whose stream's partition 0 it holds).
    #[serde(default)]
    pub views: Vec<String>,
    /// Whether it has been silent for longer than [`GONE_AFTER`] (set when shown).
    #[serde(default)]
    pub gone: bool,
}

/// A worker's share of one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStream {
    /// The stream.
    pub stream: String,
    /// Per partition it holds, the records the topic holds past its tables' positions.
    pub partition_lag: std::collections::BTreeMap<u32, u64>,
    /// Times its pipeline was opened again because its partitions changed.
    pub reassignments: u64,
    /// How long partitions last went without a commit when they moved to it (ms).
    #[serde(default)]
    pub failover_ms: Option<u64>,
    /// Why its pipeline last failed, while it is failing.
    pub last_error: Option<String>,
}

/// Follows the catalog and reports this worker, until aborted.
pub async fn run(cluster: Cluster, state: AppState) {
    let (log, pipelines, lake) = (&state.log, &state.pipelines, &state.lake);
    let mut follow = tokio::time::interval(FOLLOW_EVERY);
    let mut report = tokio::time::interval(REPORT_EVERY);
    for tick in [&mut follow, &mut report] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = follow.tick() => {
                let following = log.clone();
                match tokio::task::spawn_blocking(move || following.follow()).await {
                    Ok(Ok(followed)) => {
                        if !followed.nothing() {
                            tracing::info!(?followed, "streams of the cluster followed");
                        }
                        // A stream redefined (a column added) has its pipeline opened anew, to
                        // read with its definition now.
                        for stream in &followed.redefined {
                            pipelines.reopen(stream).await;
                        }
                        if !followed.created.is_empty() || !followed.dropped.is_empty() {
                            pipelines.reconcile().await;
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot follow the cluster's catalog"),
                    Err(e) => tracing::error!(error = %e, "following the catalog panicked"),
                }
                if let Err(e) = pipelines.follow_views().await {
                    tracing::warn!(error = %e, "cannot follow the cluster's views");
                }
                // After the streams: a source another worker created starts here once its
                // tables' streams are known.
                #[cfg(feature = "postgres")]
                if let Err(e) = state.sources.follow().await {
                    tracing::warn!(error = %e, "cannot follow the cluster's sources");
                }
                // Tables other workers created or dropped.
                if let Err(e) = lake.rescan().await {
                    tracing::warn!(error = %e, "cannot list the lake's tables");
                }
            }
            _ = report.tick() => {
                if let Err(e) = report_self(&cluster, log, pipelines).await {
                    tracing::warn!(error = %e, "cannot write this worker's document");
                }
            }
        }
    }
}

async fn report_self(
    cluster: &Cluster,
    log: &Log,
    pipelines: &Pipelines,
) -> Result<(), ServerError> {
    let streams = log
        .streams()
        .iter()
        .filter_map(|s| pipelines.stream_status(s.name()))
        .map(|status| WorkerStream {
            stream: status.name,
            partition_lag: status.partition_lag,
            reassignments: status.reassignments,
            failover_ms: status.failover_ms,
            last_error: status.last_error,
        })
        .collect();
    let worker = Worker {
        worker: cluster.worker.clone(),
        http: cluster.http.clone(),
        reported_ms: now_ms(),
        streams,
        views: pipelines.views_run_here(),
        gone: false,
    };
    let content = serde_json::to_vec(&worker).map_err(|e| ServerError::Internal(e.to_string()))?;
    cluster
        .workers
        .put(&document_name(&cluster.worker), content, false)
        .await?;
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A worker's document's name: its name with what a document's name cannot hold made `_`.
fn document_name(worker: &str) -> String {
    worker
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What `GET /v1/cluster` answers.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// The worker that answers.
    pub worker: String,
    /// Every worker that wrote its document, by name.
    pub workers: Vec<Worker>,
}

/// `GET /v1/cluster`: the workers, the partitions each holds and their lag.
pub async fn status(State(state): State<AppState>) -> Result<Json<ClusterStatus>, HttpError> {
    let Some(cluster) = &state.cluster else {
        return Err(HttpError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_a_cluster",
            "this server is not a worker of a cluster (sluice serve --cluster NAME)",
        ));
    };
    let now = now_ms();
    let mut workers: Vec<Worker> = Vec::new();
    for (_, content) in cluster
        .workers
        .list()
        .await
        .map_err(|e| HttpError::of(&e))?
    {
        if let Ok(mut worker) = serde_json::from_slice::<Worker>(&content) {
            worker.gone = now - worker.reported_ms > GONE_AFTER.as_millis() as i64;
            workers.push(worker);
        }
    }
    workers.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(Json(ClusterStatus {
        cluster: cluster.name.clone(),
        worker: cluster.worker.clone(),
        workers,
    }))
}
