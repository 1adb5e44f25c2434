//! Materialized views: a query over a stream (or an append-only view), maintained continuously
//! into a lake table of the view's name, exactly once.
//!
//! ```text
//!  source ──read from the view's positions──► (each partition apart) late? ──yes──► <view>_errors
//!                                                                      │no
//!           stateless: pre ──────────────────────────────────────────────────► <view>  appended
//!           windowed:  pre ─► Partial ─► merge into state ─► windows the watermark passed
//!                                                        ─► Final ─► post ─► <view>  appended
//!           updating:  pre ─► Partial ─► merge into state ─► keys changed
//!                                                        ─► Final ─► post ─► <view>  upserted
//! ```
//!
//! [`plan`] cuts the query into those parts, `round` computes a round, [`state`] keeps the
//! state and its snapshots, [`catalog`] the views' definitions.
//!
//! **Exactly once**, as `exactly_once` says: each round is one Delta commit to the view's
//! table carrying the round's rows, every partition's next position and the number of the
//! state snapshot written just before it. After a crash the view resumes from what its last
//! commit recorded — positions and state together — so no window is emitted twice or missed
//! and no key counts an event twice.
//!
//! **In a cluster** a view without state (a filter, a projection, a lookup) runs wherever its
//! input's partitions are: each worker over the partitions it holds, writing the view's table as
//! the raw pipelines write theirs (each commit recording the partitions it holds, rule 7). An
//! aggregating view runs on one worker at a time: the one that holds partition 0 of its
//! input stream (that stream's consumer group elects it, as it elects the worker that keeps the
//! raw tables). It reads every partition, so its rows, its watermark (the lowest over all
//! partitions) and its late events are those of a single Sluice; its state snapshots are in the
//! lake. On the other workers it reads nothing until partition 0 moves to them; then it is
//! opened again, from what its table recorded, and its first commit there says how long the
//! view went without one (`failover_ms`, as a raw pipeline's). A worker that has not yet heard
//! that it lost partition 0 cannot commit: its commit would record positions the table has
//! moved past (`exactly_once`, rule 7).
//!
//! **Late events** (older than the watermark that the previous round left) go to
//! `<view>_errors` with the reason, committed *before* the view's commit. Lateness is judged
//! against the committed watermark, so a round repeated after a crash between the two commits
//! judges exactly as the first attempt did, and the errors table takes no row it has (its own
//! positions, rule 3). Records retention deleted before the view took them are a row there too.

pub mod catalog;
pub mod input;
pub mod plan;
mod round;
pub mod shape;
pub mod state;
mod upsert;
pub mod watermark;
pub mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use sluice_lake::{Lake, LakeTable};
use sluice_log::Log;
use sluice_sql::ViewDefinition;

pub use catalog::{Catalog, StoredView};
use input::Input;
use plan::{Shape, ViewPlan};
use state::{Snapshots, State};
use watermark::{Micros, Watermarks};

use crate::decode;
use crate::exactly_once::{self, Partition, Positions, Writer, advanced, committed, new_gaps};
use crate::runtime::{Cadence, Kind, Pipeline, Resumed, Round};
use crate::source::{
    Assignment, Bounds, Gap, Limits, SharedSource, SourceRead, StreamSource, UpstreamView, pending,
    shares,
};
use crate::{Result, errors_table};

/// How a view's pipeline runs.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// How often a view takes what its stream received since its last round.
    pub interval: Duration,
    /// Most records one round takes, from all shards (bounds a round's memory).
    pub max_records_per_round: usize,
    /// Compact the view's table (Delta OPTIMIZE) after this many commits.
    pub compact_every: usize,
    /// A shard that has received nothing for this long does not hold the watermark back.
    pub idle_timeout: Duration,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            max_records_per_round: 500_000,
            compact_every: 100,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

impl ViewConfig {
    /// How often the runtime runs its rounds and compacts.
    pub fn cadence(&self) -> Cadence {
        Cadence {
            interval: self.interval,
            compact_every: self.compact_every,
        }
    }
}

/// Wall-clock time in milliseconds, for idle shards and status: pipelines take it from here,
/// so that tests can move it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Drops the tables of view `view_id` named `view` (only those it made).
pub async fn drop_tables(lake: &Lake, view: &str, view_id: u64) -> Result<()> {
    exactly_once::drop_owned(
        lake,
        &[view.to_string(), errors_table(view)],
        Writer::View(view_id),
    )
    .await
}

/// Fences the tables of view `view_id` named `view`, which reads `partitions`, before they are
/// dropped in a cluster: a worker still running it, not yet having heard it was dropped,
/// commits to them no more (`exactly_once::fence`).
pub async fn fence_tables(
    lake: &Lake,
    view: &str,
    view_id: u64,
    partitions: impl IntoIterator<Item = Partition> + Clone,
) -> Result<()> {
    let names = [view.to_string(), errors_table(view)];
    for mut table in exactly_once::owned(lake, &names, Writer::View(view_id)).await? {
        exactly_once::fence(&mut table, partitions.clone()).await?;
    }
    Ok(())
}

/// The refusal of a view of view `input` in a cluster.
pub fn views_of_views(input: &str) -> crate::PipelineError {
    crate::PipelineError::Unsupported(format!(
        "'{input}' is a materialized view: in a cluster a view reads a stream (views of views \
         run on a single Sluice)"
    ))
}

/// The table property saying what kind of view writes it (`stateless`, `windowed`, `updating`).
pub const KIND: &str = "sluice.view.kind";

/// Where a view runs and keeps its state.
#[derive(Clone)]
pub struct Placement {
    /// Where its state snapshots are kept.
    pub snapshots: Snapshots,
    /// On a worker of a cluster, its input stream's assignment: a view without state runs over
    /// the partitions this worker holds, one with state while it holds partition 0. None on a
    /// single Sluice.
    pub lead: Option<Arc<dyn Assignment>>,
}

impl Placement {
    /// A single Sluice's view, its snapshots in `dir`.
    pub fn local(dir: std::path::PathBuf) -> Self {
        Placement {
            snapshots: Snapshots::Dir(dir),
            lead: None,
        }
    }
}

/// One view's pipeline.
pub struct ViewPipeline {
    definition: ViewDefinition,
    log: Arc<Log>,
    lake: Lake,
    source: SharedSource,
    plan: Arc<ViewPlan>,
    config: ViewConfig,
    clock: Arc<dyn Clock>,
    table: LakeTable,
    errors: LakeTable,
    /// The positions the view's table recorded.
    positions: Positions,
    /// The positions its errors table recorded.
    error_positions: Positions,
    /// The number of the snapshot the last commit names (0: none).
    snapshot: u64,
    state: Option<State>,
    snapshots: Snapshots,
    /// In a cluster, the partitions it was opened with (all, or none on a worker that does
    /// not run it): it is opened again when they change.
    opened: Option<BTreeSet<Partition>>,
    /// How long its partitions went without a commit when it was opened.
    resumed: Resumed,
}

impl ViewPipeline {
    /// Plans the view, opens (or creates) its tables and resumes from what they recorded.
    /// `id` is the view's, which its tables carry.
    pub async fn open(
        definition: ViewDefinition,
        id: u64,
        log: Arc<Log>,
        lake: Lake,
        placement: Placement,
        config: ViewConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let plan = ViewPlan::new(&definition, &log, &lake).await?;
        let Placement { snapshots, lead } = placement;
        let led = lead.is_some();
        let (source, delay_ms): (SharedSource, u64) = match (&plan.input.source, lead) {
            (Input::Stream(name), lead) => {
                let mut source = StreamSource::open(&log, name)?;
                let delay = source.definition().watermark_ms.unwrap_or(0);
                // A view without state is a function of each record: each partition's holder
                // runs it over its partitions. One with state runs on one worker at a time.
                if let Some(lead) = lead {
                    source = match plan.shape {
                        Shape::Stateless(_) => source.held(lead),
                        _ => source.led_by(lead),
                    };
                }
                (Arc::new(source), delay)
            }
            (Input::View(name), None) => (Arc::new(UpstreamView::open(&lake, name).await?), 0),
            (Input::View(name), Some(_)) => return Err(views_of_views(name)),
        };
        let name = definition.name.clone();
        let kind = plan.kind();
        let input_id = source.id().to_string();
        // A view that only appends keeps a change data feed, for the views that read it.
        let mut properties = vec![
            (KIND, kind.as_str()),
            (exactly_once::VIEW_INPUT, input_id.as_str()),
        ];
        if kind != Kind::Updating {
            properties.push(("delta.enableChangeDataFeed", "true"));
        }
        let writer = Writer::View(id);
        let table = exactly_once::own_table(
            &lake,
            &name,
            &plan.schema,
            &definition.partition_by,
            writer,
            &properties,
        )
        .await?;
        if table.property(exactly_once::VIEW_INPUT).as_deref() != Some(input_id.as_str()) {
            return Err(crate::PipelineError::InputGone(format!(
                "'{}' was dropped and created again since view '{name}' was: its positions are \
                 the old one's; drop the view and create it again",
                source.name()
            )));
        }
        let errors = exactly_once::own_table(
            &lake,
            &errors_table(&name),
            &decode::error_schema(),
            &[],
            writer,
            &[],
        )
        .await?;
        let partitions: Vec<Partition> = source.bounds().await?.into_keys().collect();
        let positions = committed(&table, partitions.iter().copied()).await?;
        let error_positions = committed(&errors, partitions.iter().copied()).await?;
        let resumed =
            Resumed::new(exactly_once::written(&table, partitions.iter().copied()).await?);
        let snapshot = exactly_once::snapshot(&table).await?;
        // A worker of a cluster that does not run the view now keeps no state.
        let standby = led && partitions.is_empty();
        let now = clock.now_ms();
        let delay = delay_ms as Micros * 1000;
        let state = match plan.aggregation() {
            None => None,
            Some(a) => {
                let watermarks = matches!(plan.shape, Shape::Windowed(_))
                    .then(|| Watermarks::new(partitions.len(), delay, now));
                Some(match snapshot {
                    0 => State::empty(a.state_schema.clone(), watermarks),
                    _ if standby => State::empty(a.state_schema.clone(), watermarks),
                    n => {
                        let mut state = snapshots.read(n, &a.state_schema).await?;
                        state.watermarks =
                            state.watermarks.map(|w| w.restarted(partitions.len(), now));
                        state
                    }
                })
            }
        };
        if !standby {
            snapshots.retain(snapshot).await?;
        }
        Ok(Self {
            definition,
            log,
            lake,
            source,
            plan: Arc::new(plan),
            config,
            clock,
            table,
            errors,
            positions,
            error_positions,
            snapshot,
            state,
            snapshots,
            opened: led.then(|| partitions.into_iter().collect()),
            resumed,
        })
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// Commits a round: late events (and gaps) to the errors table, then the view's table with
    /// the positions and the snapshot of the state after the round. Nothing changes in memory
    /// unless the view's commit lands.
    async fn commit(&mut self, read: SourceRead, output: round::Output) -> Result<Round> {
        let now_ms = self.clock.now_ms() as i64;
        let late = round::error_rows(&output, &read, &self.error_positions, now_ms)?;
        let gaps: Vec<Gap> = new_gaps(&read, &self.error_positions).collect();
        let round::Output {
            rows,
            state,
            changed,
            ..
        } = output;
        let next = advanced(&self.positions, &read.next());
        let mut round = Round {
            records: read.records(),
            rows: rows.iter().map(RecordBatch::num_rows).sum(),
            errors: late.num_rows(),
            lost: gaps.iter().map(Gap::records).sum(),
            gap: gaps.last().copied(),
            backlog: read.backlog,
            committed: false,
            resumed_since_ms: None,
        };
        if next == self.positions && !changed && round.rows == 0 && round.errors == 0 {
            return Ok(round);
        }
        // Refused before any write if another worker ran the view since its last commit (rule
        // 7): in a cluster, as of the table's latest version, so that a worker that has not
        // yet heard the view moved does not write its late events either.
        if self.opened.is_some() {
            self.table.refresh().await?;
        }
        exactly_once::still_held(&self.table, &self.positions, &next).await?;
        let snapshot = match &state {
            Some(state) => Some(self.snapshots.write(self.snapshot, state).await?),
            None => None,
        };
        if late.num_rows() > 0 {
            let error_next = advanced(&self.error_positions, &read.next());
            exactly_once::append(
                &mut self.errors,
                vec![late],
                &self.error_positions,
                &error_next,
            )
            .await?;
            self.error_positions = error_next;
        }
        let versions = exactly_once::versions(&next, snapshot);
        match &self.plan.shape {
            Shape::Updating { keys, .. } => {
                self.table
                    .upsert(
                        rows,
                        &sluice_lake::Upsert::new(keys, upsert::DELETE),
                        versions,
                    )
                    .await?;
            }
            _ => self.table.append(rows, versions).await?,
        }
        round.committed = true;
        round.resumed_since_ms = self.resumed.committed(&self.positions, &next);
        self.positions = next;
        if let Some(number) = snapshot {
            self.snapshot = number;
            // Older snapshots are no longer needed; one left behind is deleted next time.
            if let Err(e) = self.snapshots.retain(number).await {
                tracing::warn!(view = self.definition.name, error = %e, "cannot delete old snapshots");
            }
        }
        self.state = state;
        Ok(round)
    }
}

#[async_trait]
impl Pipeline for ViewPipeline {
    fn source(&self) -> &SharedSource {
        &self.source
    }

    fn kind(&self) -> Kind {
        self.plan.kind()
    }

    fn keys(&self) -> Vec<String> {
        match &self.plan.shape {
            Shape::Updating { keys, .. } => keys.clone(),
            _ => Vec::new(),
        }
    }

    fn partitions(&self) -> Option<&BTreeSet<Partition>> {
        self.opened.as_ref()
    }

    fn standby(&self) -> bool {
        self.opened.as_ref().is_some_and(BTreeSet::is_empty)
    }

    fn next_read(&self) -> Positions {
        self.positions.clone()
    }

    fn limits(&self, from: &Positions, bounds: &BTreeMap<Partition, Bounds>) -> Limits {
        shares(&pending(bounds, from), self.config.max_records_per_round)
    }

    async fn process(&mut self, read: SourceRead) -> Result<Round> {
        if self.plan.reads_tables {
            // Enrichment sees the tables as they are now.
            self.plan = Arc::new(ViewPlan::new(&self.definition, &self.log, &self.lake).await?);
        }
        let output = round::compute(
            &self.plan,
            self.state.as_ref(),
            &read,
            &self.positions,
            self.clock.now_ms(),
            self.config.idle_timeout.as_millis() as u64,
        )
        .await?;
        self.commit(read, output).await
    }

    async fn compact(&mut self) -> Result<()> {
        self.table.compact().await?;
        Ok(())
    }

    fn watermark(&self) -> Option<Micros> {
        self.state.as_ref()?.watermarks.as_ref()?.current()
    }
}
