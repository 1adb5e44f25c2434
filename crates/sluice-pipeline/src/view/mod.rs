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
//! **In a cluster** every worker runs every view over the partitions of its input it holds (the
//! stream's consumer group splits them, as for the raw tables). A view without state (a
//! filter, a projection, a lookup) writes the view's table as the raw pipelines write theirs:
//! each commit records the partitions its worker holds (rule 7). An aggregating view is spread
//! (`spread`): each worker makes pieces of its partitions (Partial states, late events, marks)
//! into the lake, and the holder of partition 0 finishes the view from every partition's
//! pieces, its state snapshots in the lake too. When partition 0 moves, the view is opened
//! again on its new holder from what its table recorded, and its first commit there says how
//! long the view went without one (`failover_ms`, as a raw pipeline's). A worker that has not
//! yet heard that it lost a partition can neither write a piece where the new holder did nor
//! commit the view: its commit would record positions the table has moved past (rule 7).
//!
//! **Late events** (older than the watermark that the previous round left; in a cluster, than
//! their partition's mark, see `spread`) go to `<view>_errors` with the reason, committed
//! *before* the view's commit. Lateness is judged against the committed watermark, so a round
//! repeated after a crash between the two commits judges exactly as the first attempt did, and
//! the errors table takes no row it has (its own positions, rule 3). Records retention deleted
//! before the view took them are a row there too.

pub mod catalog;
pub mod input;
pub mod join;
pub mod pieces;
pub mod plan;
mod round;
pub mod shape;
mod spread;
pub mod state;
pub mod temporal;
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
use pieces::{Cursor, Pieces};
use plan::{Shape, ViewPlan};
use spread::Spread;
use state::{Snapshots, State};
use watermark::{Micros, Watermarks};

use crate::decode;
use crate::exactly_once::{self, Partition, Positions, Writer, advanced, committed, new_gaps};
use crate::runtime::{Cadence, Kind, Pipeline, Resumed, Round};
use crate::source::joined::side_of;
use crate::source::{
    Assignment, Bounds, Gap, Joined, Limits, SharedSource, Source, SourceRead, StreamSource,
    UpstreamView, pending, shares,
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

/// The refusal of a view joining two streams in a cluster.
pub fn joins_in_a_cluster() -> crate::PipelineError {
    crate::PipelineError::Unsupported(
        "a view joining two streams runs on a single Sluice for now, not in a cluster".into(),
    )
}

/// The table property saying what kind of view writes it (`stateless`, `windowed`, `updating`).
pub const KIND: &str = "sluice.view.kind";

/// Where a view runs and keeps its state.
#[derive(Clone)]
pub struct Placement {
    /// Where its state snapshots are kept.
    pub snapshots: Snapshots,
    /// On a worker of a cluster, how the view is shared with the others. None on a single
    /// Sluice.
    pub cluster: Option<Shared>,
}

/// How a view is shared by a cluster's workers: each runs it over the partitions of its input
/// it holds; an aggregating view's are pieces (`spread`), finished by the holder of partition 0.
#[derive(Clone)]
pub struct Shared {
    /// The input stream's assignment: the partitions this worker holds.
    pub assignment: Arc<dyn Assignment>,
    /// Where an aggregating view's pieces go.
    pub pieces: Pieces,
}

impl Placement {
    /// A single Sluice's view, its snapshots in `dir`.
    pub fn local(dir: std::path::PathBuf) -> Self {
        Placement {
            snapshots: Snapshots::Dir(dir),
            cluster: None,
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
    /// In a cluster, the partitions it was opened with (those this worker holds): it is
    /// opened again when they change.
    opened: Option<BTreeSet<Partition>>,
    /// In a cluster, an aggregating view's part on this worker.
    spread: Option<Spread>,
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
        let Placement { snapshots, cluster } = placement;
        let mut whole = None;
        let (source, delay_ms): (SharedSource, u64) =
            match (&plan.shape, &plan.input.source, &cluster) {
                (Shape::Join(_), _, Some(_)) => return Err(joins_in_a_cluster()),
                (Shape::Join(join), _, None) => {
                    let [left, right] = [0, 1].map(|s| join.sides[s].input.source.name());
                    let source = Joined::new(
                        Arc::new(StreamSource::open(&log, left)?),
                        Arc::new(StreamSource::open(&log, right)?),
                    );
                    (Arc::new(source), 0)
                }
                (_, Input::Stream(name), cluster) => {
                    let source = StreamSource::open(&log, name)?;
                    let delay = source.definition().watermark_ms.unwrap_or(0);
                    // In a cluster each worker runs the view over the partitions it holds.
                    let source = match cluster {
                        Some(shared) => {
                            whole = Some(source.clone());
                            source.held(shared.assignment.clone())
                        }
                        None => source,
                    };
                    (Arc::new(source), delay)
                }
                (_, Input::View(name), None) => {
                    (Arc::new(UpstreamView::open(&lake, name).await?), 0)
                }
                (_, Input::View(name), Some(_)) => return Err(views_of_views(name)),
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
        // The partitions it reads here; in a cluster, the positions its table records are of
        // every partition (an aggregating view's finisher takes every partition's pieces).
        let held: BTreeSet<Partition> = source.bounds().await?.into_keys().collect();
        let mut partitions = held.clone();
        if let Some(whole) = &whole {
            partitions.extend(whole.bounds().await?.into_keys());
        }
        let positions = committed(&table, partitions.iter().copied()).await?;
        let error_positions = committed(&errors, partitions.iter().copied()).await?;
        let resumed =
            Resumed::new(exactly_once::written(&table, partitions.iter().copied()).await?);
        let snapshot = exactly_once::snapshot(&table).await?;
        let now = clock.now_ms();
        let opened = whole.is_some().then(|| held.clone());
        // In a cluster only the worker that finishes an aggregating view (the holder of
        // partition 0) keeps its state, which has no watermarks (its pieces carry marks).
        let keeps_state = whole.is_none() || held.contains(&0);
        let mut state = match (&plan.shape, plan.aggregation()) {
            (Shape::Join(join), _) => {
                let mut sides = [0, 0];
                for &p in &partitions {
                    sides[side_of(p).0] += 1;
                }
                Some(match snapshot {
                    0 => join.empty(sides, now),
                    n => {
                        let mut state = snapshots.read(n, &join.state_schema).await?;
                        if state.sides.len() != 2 {
                            return Err(crate::PipelineError::Internal(format!(
                                "view '{name}': its state snapshot {n} lacks its inputs' \
                                 watermarks"
                            )));
                        }
                        state.sides = (0..2)
                            .map(|s| state.sides[s].clone().restarted(sides[s], now))
                            .collect();
                        state
                    }
                })
            }
            (_, None) => None,
            (_, Some(a)) => {
                let watermarks = (matches!(plan.shape, Shape::Windowed(_)) && whole.is_none())
                    .then(|| Watermarks::new(partitions.len(), delay_ms as Micros * 1000, now));
                Some(match snapshot {
                    n if n == 0 || !keeps_state => State::empty(a.state_schema.clone(), watermarks),
                    n => {
                        let mut state = snapshots.read(n, &a.state_schema).await?;
                        state.watermarks =
                            state.watermarks.map(|w| w.restarted(partitions.len(), now));
                        state
                    }
                })
            }
        };
        if keeps_state {
            snapshots.retain(snapshot).await?;
        }
        let spread = match (cluster, whole, plan.aggregation()) {
            (Some(shared), Some(whole), Some(aggregation)) => {
                // Windows closed before the view was spread: its snapshot's watermark.
                let closed = state
                    .as_mut()
                    .and_then(|s| s.watermarks.take())
                    .and_then(|w| w.current());
                let cursors = exactly_once::cursors(&table, partitions.iter().copied()).await?;
                let delay = delay_ms as Micros * 1000;
                let schema = aggregation.state_schema.clone();
                let spread = Spread::open(
                    shared.pieces,
                    schema,
                    whole,
                    delay,
                    &held,
                    cursors,
                    closed,
                    now,
                );
                Some(spread.await?)
            }
            _ => None,
        };
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
            opened,
            spread,
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
        round.resumed_since_ms = self.write(rows, late, next, None, state).await?;
        round.committed = true;
        Ok(round)
    }

    /// A round of a view spread over a cluster's workers (`spread`): a piece of each partition
    /// this worker holds that took records; then, on the worker that finishes the view, the
    /// pieces of every partition merged into its state and the rows done committed.
    async fn spread_round(&mut self, read: SourceRead) -> Result<Round> {
        let now_ms = self.clock.now_ms();
        let idle_ms = self.config.idle_timeout.as_millis() as u64;
        let gaps: Vec<Gap> = read.parts.iter().filter_map(|p| p.gap).collect();
        let mut round = Round {
            records: read.records(),
            rows: 0,
            errors: 0,
            lost: gaps.iter().map(Gap::records).sum(),
            gap: gaps.last().copied(),
            backlog: read.backlog,
            committed: false,
            resumed_since_ms: None,
        };
        let Some(spread) = self.spread.as_mut() else {
            return Err(crate::PipelineError::Internal("a view not spread".into()));
        };
        round.committed = spread
            .make_pieces(&self.plan, &read, now_ms, idle_ms)
            .await?
            > 0;
        let interval_ms = self.config.interval.as_millis() as u64;
        let groups = &self
            .state
            .as_ref()
            .ok_or_else(|| missing_state(&self.definition))?
            .groups;
        let end = match (&self.plan.shape, self.plan.aggregation()) {
            (Shape::Windowed(_), Some(aggregation)) => Some(
                aggregation
                    .window
                    .ok_or_else(|| missing_state(&self.definition))?
                    .1,
            ),
            _ => None,
        };
        let Some(taken) = spread
            .take(groups, end, read.backlog, now_ms, interval_ms)
            .await?
        else {
            return Ok(round);
        };
        let finished =
            round::finish(&self.plan, groups, taken.states.clone(), taken.close_at).await?;
        if taken.pieces == 0 && finished.rows.is_empty() {
            return Ok(round);
        }
        let late = exactly_once::past(&taken.errors, &self.error_positions)?;
        let next: Positions = taken
            .cursors
            .iter()
            .filter_map(|(&p, c)| Some((p, c.position?)))
            .collect();
        round.rows = finished.rows.iter().map(RecordBatch::num_rows).sum();
        round.errors = late.num_rows();
        let state = State {
            groups: finished.groups,
            watermarks: None,
            sides: Vec::new(),
        };
        round.resumed_since_ms = self
            .write(finished.rows, late, next, Some(&taken.cursors), Some(state))
            .await?;
        round.committed = true;
        if let Some(spread) = self.spread.as_mut() {
            spread.committed(taken, now_ms);
        }
        Ok(round)
    }

    /// Writes a round: its `late` rows to the errors table, then its `rows` to the view's
    /// table, recording the positions `next` (and a spread view's `cursors`) and naming the
    /// snapshot of `state` (`exactly_once`, rules 3, 4, 7 and 8). Returns when the partitions
    /// it moved first had last been committed, if this is their first commit here.
    async fn write(
        &mut self,
        rows: Vec<RecordBatch>,
        late: RecordBatch,
        next: Positions,
        cursors: Option<&BTreeMap<Partition, Cursor>>,
        state: Option<State>,
    ) -> Result<Option<i64>> {
        // Refused before any write if another worker ran the view since its last commit (rule
        // 7): in a cluster, as of the table's latest version, so that a worker that has not
        // yet heard the view moved does not write its late events either.
        if self.opened.is_some() {
            self.table.refresh().await?;
            if state.is_some() {
                exactly_once::still_named(&self.table, self.snapshot).await?;
            }
        }
        exactly_once::still_held(&self.table, &self.positions, &next).await?;
        let snapshot = match &state {
            Some(state) => Some(self.snapshots.write(self.snapshot, state).await?),
            None => None,
        };
        if late.num_rows() > 0 {
            let error_next = advanced(&self.error_positions, &next);
            exactly_once::append(
                &mut self.errors,
                vec![late],
                &self.error_positions,
                &error_next,
            )
            .await?;
            self.error_positions = error_next;
        }
        let mut versions = exactly_once::versions(&next, snapshot);
        versions.extend(
            cursors
                .map(exactly_once::cursor_versions)
                .unwrap_or_default(),
        );
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
        let resumed = self.resumed.committed(&self.positions, &next);
        self.positions = next;
        if let Some(number) = snapshot {
            self.snapshot = number;
            // Older snapshots are no longer needed; one left behind is deleted next time.
            if let Err(e) = self.snapshots.retain(number).await {
                tracing::warn!(view = self.definition.name, error = %e, "cannot delete old snapshots");
            }
        }
        self.state = state;
        Ok(resumed)
    }
}

fn missing_state(view: &ViewDefinition) -> crate::PipelineError {
    crate::PipelineError::Internal(format!(
        "view '{}' aggregates without a state (or windows)",
        view.name
    ))
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
        match &self.spread {
            Some(spread) => spread.next_read(),
            None => self.positions.clone(),
        }
    }

    fn limits(&self, from: &Positions, bounds: &BTreeMap<Partition, Bounds>) -> Limits {
        let shares = shares(&pending(bounds, from), self.config.max_records_per_round);
        exactly_once::reaching(shares, from, &self.error_positions)
    }

    async fn process(&mut self, read: SourceRead) -> Result<Round> {
        if self.plan.reads_tables {
            // Enrichment sees the tables as they are now.
            self.plan = Arc::new(ViewPlan::new(&self.definition, &self.log, &self.lake).await?);
        }
        if self.spread.is_some() {
            return self.spread_round(read).await;
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
        match &self.spread {
            Some(spread) => spread.watermark(),
            None => {
                let state = self.state.as_ref()?;
                match &state.watermarks {
                    Some(w) => w.current(),
                    // A join's: the lower of its sides'.
                    None => state.sides.iter().map(Watermarks::current).min()?,
                }
            }
        }
    }
}
