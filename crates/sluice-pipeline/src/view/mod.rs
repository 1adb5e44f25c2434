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

use std::collections::BTreeMap;
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
use crate::runtime::{Cadence, Kind, Pipeline, Round};
use crate::source::{
    Bounds, Gap, Limits, SharedSource, SourceRead, StreamSource, UpstreamView, pending, shares,
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

/// The table property saying what kind of view writes it (`stateless`, `windowed`, `updating`).
pub const KIND: &str = "sluice.view.kind";

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
}

impl ViewPipeline {
    /// Plans the view, opens (or creates) its tables and resumes from what they recorded.
    /// `snapshots` is the folder of its state snapshots; `id` the view's, which its tables
    /// carry.
    pub async fn open(
        definition: ViewDefinition,
        id: u64,
        log: Arc<Log>,
        lake: Lake,
        snapshots: std::path::PathBuf,
        config: ViewConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let plan = ViewPlan::new(&definition, &log, &lake).await?;
        let (source, delay_ms): (SharedSource, u64) = match &plan.input.source {
            Input::Stream(name) => {
                let source = StreamSource::open(&log, name)?;
                let delay = source.definition().watermark_ms.unwrap_or(0);
                (Arc::new(source), delay)
            }
            Input::View(name) => (Arc::new(UpstreamView::open(&lake, name).await?), 0),
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
        let snapshot = exactly_once::snapshot(&table).await?;
        let snapshots = Snapshots::new(snapshots);
        let now = clock.now_ms();
        let delay = delay_ms as Micros * 1000;
        let state = match plan.aggregation() {
            None => None,
            Some(a) => {
                let watermarks = matches!(plan.shape, Shape::Windowed(_))
                    .then(|| Watermarks::new(partitions.len(), delay, now));
                Some(match snapshot {
                    0 => State::empty(a.state_schema.clone(), watermarks),
                    n => {
                        let mut state = snapshots.read(n, &a.state_schema)?;
                        state.watermarks =
                            state.watermarks.map(|w| w.restarted(partitions.len(), now));
                        state
                    }
                })
            }
        };
        snapshots.retain(snapshot);
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
        let snapshot = match &state {
            Some(state) => {
                let number = self.snapshot + 1;
                let (snapshots, state) = (self.snapshots.clone(), state.clone());
                tokio::task::spawn_blocking(move || snapshots.write(number, &state))
                    .await
                    .map_err(|e| crate::PipelineError::Internal(e.to_string()))??;
                Some(number)
            }
            None => None,
        };
        if late.num_rows() > 0 {
            let error_next = advanced(&self.error_positions, &read.next());
            self.errors
                .append(vec![late], exactly_once::versions(&error_next, None))
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
        self.positions = next;
        if let Some(number) = snapshot {
            self.snapshot = number;
            self.snapshots.retain(number);
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
