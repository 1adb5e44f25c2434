//! Materialized views: a query over a stream, maintained continuously into a lake table of the
//! view's name, exactly once.
//!
//! ```text
//!  shards ──read from the view's positions──► decode ──► late? ──yes──► <view>_errors
//!                                                          │no
//!           stateless: pre ──────────────────────────────────────────► <view>  appended
//!           windowed:  pre ─► Partial ─► merge into state ─► windows the watermark passed
//!                                                            ─► Final ─► post ─► <view>  appended
//!           updating:  pre ─► Partial ─► merge into state ─► keys changed
//!                                                            ─► Final ─► post ─► <view>  upserted
//! ```
//!
//! (See [`plan`] for how the query is cut and [`state`] for the state.)
//!
//! **Exactly once.** The view's table is the commit point: each round is one Delta commit that
//! carries the round's rows, every shard's next sequence number (`txn` app ids `shard-<n>`) and
//! the number of the state snapshot written just before it (`txn` app id `snapshot`). After a
//! crash the view resumes from what its last commit recorded — positions and state together —
//! so no window is emitted twice or missed and no key counts an event twice.
//!
//! **Late events** (older than the watermark that the previous round left) go to
//! `<view>_errors` with the reason, committed *before* the view's commit and recording the
//! round's end positions. Lateness is judged against the committed watermark, so a round repeated
//! after a crash between the two commits judges exactly as the first attempt did; the repeat
//! reads exactly up to the errors table's positions and writes the errors table no row it has.

mod catalog;
pub mod plan;
mod source;
pub mod state;
pub mod watermark;
pub mod window;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{concat_batches, filter_record_batch, not};
use arrow::datatypes::{Int32Type, TimestampMicrosecondType};
use serde::Serialize;
use sluice_lake::{Lake, LakeTable};
use sluice_log::{Log, Stream};
use sluice_sql::{StreamDefinition, ViewDefinition};
use tokio::sync::watch;

use crate::decode::{self, Decoder};
use crate::raw::{self, LogRead};
use crate::{PipelineError, Result};
pub use catalog::{Catalog, StoredView};
use plan::{Shape, ViewPlan};
use source::Source;
use state::{Snapshots, State};
use watermark::{Micros, Watermarks};

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

/// Wall-clock time in milliseconds, for idle shards: the views take it from here, so that tests
/// can move it.
pub trait Clock: Send + Sync {
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

/// What a view is doing, for `GET /v1/views` and the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewStatus {
    pub name: String,
    /// `stateless`, `windowed` or `updating`.
    pub kind: &'static str,
    /// The stream or view it reads.
    pub input: String,
    /// The columns that name a row of an updating view (its group's); empty for the others.
    pub keys: Vec<String>,
    /// Records the stream holds past the view's positions.
    pub input_lag: u64,
    /// The watermark (windowed views), RFC 3339.
    pub watermark: Option<String>,
    /// How long the last round took, from its read to its commit.
    pub last_round_ms: Option<u64>,
    /// When the last commit landed (ms since the epoch).
    pub last_commit_ms: Option<u64>,
    /// Rows the view has written since it started (upserts count each time).
    pub rows_out: u64,
    /// Late events since it started (sent to the errors table).
    pub late: u64,
    pub last_error: Option<String>,
}

/// The name of a view's errors table (late events).
pub fn errors_table(view: &str) -> String {
    raw::errors_table(view)
}

/// Drops the tables of view `view_id` named `view` (only those it made).
pub async fn drop_tables(lake: &Lake, view: &str, view_id: u64) -> Result<()> {
    raw::drop_owned(lake, view, OWNER, view_id).await
}

/// The table property naming the view (by id) whose pipeline writes the table.
pub const OWNER: &str = "sluice.view.id";
/// The table property saying what kind of view writes it (`stateless`, `windowed`, `updating`).
pub const KIND: &str = "sluice.view.kind";
/// The table property naming the view's input by its id (a stream's, or an upstream view's):
/// the positions the table records are that input's, and no other incarnation's.
const INPUT_ID: &str = "sluice.view.input.id";
const SNAPSHOT: &str = "snapshot";
/// A flag column of an upsert's rows: the key is deleted (its group no longer passes HAVING).
const DELETE: &str = "_sluice_delete";

/// One view's pipeline.
pub struct ViewPipeline {
    definition: ViewDefinition,
    id: u64,
    log: Arc<Log>,
    lake: Lake,
    input: Input,
    plan: ViewPlan,
    config: ViewConfig,
    clock: Arc<dyn Clock>,
    table: LakeTable,
    errors: LakeTable,
    /// Per shard: the next sequence number the view's table has not taken.
    positions: Vec<u64>,
    error_positions: Vec<u64>,
    /// The number of the snapshot the last commit names (0: none).
    snapshot: u64,
    state: Option<State>,
    snapshots: Snapshots,
    status: Arc<Mutex<ViewStatus>>,
    commits: usize,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ViewRound {
    pub records: usize,
    pub rows: usize,
    pub late: usize,
    /// Some shard had more than the round could take.
    pub backlog: bool,
    pub committed: bool,
}

/// What a view reads.
enum Input {
    /// A stream's records, decoded.
    Stream {
        stream: Arc<Stream>,
        decoder: Arc<Decoder>,
    },
    /// The rows an upstream view appends, read through its table's change data feed: one
    /// "shard" whose sequence numbers are the table's versions (position n: every commit before
    /// version n taken).
    View {
        name: String,
        table: Arc<tokio::sync::Mutex<LakeTable>>,
        /// The upstream table's latest version, as the last read saw it.
        latest: Arc<std::sync::atomic::AtomicU64>,
        /// The rows' columns: the upstream table's, then `_shard`, `_seq`, `_ingested_at`.
        schema: arrow::datatypes::SchemaRef,
    },
}

impl Input {
    /// The input's id: a stream's incarnation, or the upstream view's.
    fn id(&self) -> Result<u64> {
        match self {
            Input::Stream { stream, .. } => Ok(stream.meta().id),
            Input::View { name, table, .. } => table
                .try_lock()
                .ok()
                .and_then(|t| t.property(OWNER)?.parse().ok())
                .ok_or_else(|| PipelineError::Internal(format!("view '{name}' has no id"))),
        }
    }

    fn name(&self) -> String {
        match self {
            Input::Stream { stream, .. } => stream.name().to_string(),
            Input::View { name, .. } => name.clone(),
        }
    }

    fn shards(&self) -> usize {
        match self {
            Input::Stream { stream, .. } => stream.shards().len(),
            Input::View { .. } => 1,
        }
    }

    /// Per shard, the position after the last record the input holds.
    fn ends(&self) -> Vec<u64> {
        match self {
            Input::Stream { stream, .. } => stream.shards().iter().map(|s| s.bounds().1).collect(),
            Input::View { latest, .. } => {
                vec![latest.load(std::sync::atomic::Ordering::SeqCst) + 1]
            }
        }
    }
}

/// Most commits of an upstream view one round takes.
const MAX_UPSTREAM_COMMITS: u64 = 100;

/// A read of the log started early: where it starts, and the read.
type ReadAhead = (Vec<u64>, tokio::task::JoinHandle<Result<LogRead>>);

/// What a round computed, before it commits.
struct Output {
    rows: Vec<RecordBatch>,
    /// Rows of the errors table: the late events.
    late: RecordBatch,
    state: Option<State>,
    /// Whether the state changed in a way a restart must see.
    changed: bool,
}

impl ViewPipeline {
    /// Plans the view, opens (or creates) its tables and resumes from what they recorded.
    /// `snapshots` is the folder of its state snapshots.
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
        let (input, delay_ms) = match &plan.input.source {
            Source::Stream(name) => {
                let stream = log.stream(name)?;
                let stream_definition = StreamDefinition::from_log(&stream.meta().definition);
                let decoder = Arc::new(Decoder::new(&stream_definition)?);
                let delay = stream_definition.watermark_ms.unwrap_or(0);
                (Input::Stream { stream, decoder }, delay)
            }
            Source::View(name) => {
                let table = lake.open(name).await?;
                let latest = table.version().unwrap_or(0);
                // The rows come as the upstream view's table has them (a round gives them
                // their windows).
                let mut fields: Vec<arrow::datatypes::Field> = table
                    .arrow_schema()?
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.extend(decode::meta_fields());
                let schema = arrow::datatypes::Schema::new(fields);
                let input = Input::View {
                    name: name.clone(),
                    table: Arc::new(tokio::sync::Mutex::new(table)),
                    latest: Arc::new(latest.into()),
                    schema: Arc::new(schema),
                };
                (input, 0)
            }
        };
        let name = definition.name.clone();
        let (kind, keys) = match &plan.shape {
            Shape::Stateless(_) => ("stateless", vec![]),
            Shape::Windowed(_) => ("windowed", vec![]),
            Shape::Updating { keys, .. } => ("updating", keys.clone()),
        };
        let input_id = input.id()?.to_string();
        // A view that only appends keeps a change data feed, for the views that read it.
        let mut properties = vec![(KIND, kind), (INPUT_ID, input_id.as_str())];
        if kind != "updating" {
            properties.push(("delta.enableChangeDataFeed", "true"));
        }
        let table = raw::own_table(
            &lake,
            &name,
            &plan.schema,
            &definition.partition_by,
            (OWNER, id),
            &properties,
        )
        .await?;
        if table.property(INPUT_ID).as_deref() != Some(input_id.as_str()) {
            return Err(PipelineError::Unsupported(format!(
                "'{}' was dropped and created again since view '{name}' was: its positions are \
                 the old one's; drop the view and create it again",
                input.name()
            )));
        }
        let errors = raw::own_table(
            &lake,
            &errors_table(&name),
            &decode::error_schema(),
            &[],
            (OWNER, id),
            &[],
        )
        .await?;
        let shards = input.shards();
        let positions = raw::positions(&table, shards).await?;
        let error_positions = raw::positions(&errors, shards).await?;
        let snapshot = table
            .position(SNAPSHOT)
            .await?
            .map_or(0, |v| v.max(0) as u64);
        let snapshots = Snapshots::new(snapshots);
        let now = clock.now_ms();
        let delay = delay_ms as Micros * 1000;
        let state = match &plan.shape {
            Shape::Stateless(_) => None,
            Shape::Windowed(a) | Shape::Updating { aggregation: a, .. } => {
                let watermarks = matches!(plan.shape, Shape::Windowed(_))
                    .then(|| Watermarks::new(shards, delay, now));
                Some(match snapshot {
                    0 => State::empty(a.state_schema.clone(), watermarks),
                    n => {
                        let mut state = snapshots.read(n, &a.state_schema)?;
                        state.watermarks = state.watermarks.map(|w| w.restarted(shards, now));
                        state
                    }
                })
            }
        };
        snapshots.retain(snapshot);
        let status = Arc::new(Mutex::new(ViewStatus {
            name,
            kind,
            input: input.name(),
            keys,
            ..ViewStatus::default()
        }));
        Ok(Self {
            definition,
            id,
            log,
            lake,
            input,
            plan,
            config,
            clock,
            table,
            errors,
            positions,
            error_positions,
            snapshot,
            state,
            snapshots,
            status,
            commits: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.definition.name
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stream or view the view reads.
    pub fn input(&self) -> String {
        self.input.name()
    }

    /// The view's status, kept current by its rounds.
    pub fn status(&self) -> Arc<Mutex<ViewStatus>> {
        self.status.clone()
    }

    /// Takes what the stream holds past the view's positions (within the round's limits),
    /// computes the view's rows and commits them.
    pub async fn round(&mut self) -> Result<ViewRound> {
        self.round_ahead(&mut None).await
    }

    /// A round that takes its records from `ahead` when they were read from where the view
    /// is, and that, when the stream holds more than a round, starts reading the next round
    /// into `ahead` while it commits (one core decodes while the other writes Parquet). A read
    /// ahead that a failed commit leaves behind starts elsewhere than the view and is dropped.
    async fn round_ahead(&mut self, ahead: &mut Option<ReadAhead>) -> Result<ViewRound> {
        let started = Instant::now();
        if let Input::Stream { stream, .. } = &self.input
            && self.log.stream(stream.name()).map(|s| s.meta().id).ok() != Some(stream.meta().id)
        {
            return Err(PipelineError::Unsupported(format!(
                "stream '{}' was dropped: drop the view (or create it again)",
                stream.name()
            )));
        }
        let from = self.positions.clone();
        let reading = match ahead.take() {
            Some((start, reading)) if start == from => reading,
            _ => self.read_from(from),
        };
        let read = reading
            .await
            .map_err(|e| PipelineError::Internal(e.to_string()))??;
        let output = self.compute(&read).await?;
        if read.backlog {
            *ahead = Some((read.next.clone(), self.read_from(read.next.clone())));
        }
        let round = self.commit(read, output).await?;
        let lag = self.lag();
        let mut status = self.status.lock().expect("status lock");
        status.input_lag = lag;
        if round.committed {
            status.last_round_ms = Some(started.elapsed().as_millis() as u64);
            status.last_commit_ms = Some(self.clock.now_ms());
        }
        status.rows_out += round.rows as u64;
        status.late += round.late as u64;
        status.last_error = None;
        status.watermark = self
            .state
            .as_ref()
            .and_then(|s| s.watermarks.as_ref()?.current())
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        Ok(round)
    }

    fn lag(&self) -> u64 {
        self.input
            .ends()
            .iter()
            .zip(&self.positions)
            .map(|(end, &at)| end.saturating_sub(at))
            .sum()
    }

    /// Reads and decodes a round's records from `from` (on the blocking pool). A round that
    /// the errors table has recorded but the view's table has not is read again exactly.
    fn read_from(&self, from: Vec<u64>) -> tokio::task::JoinHandle<Result<LogRead>> {
        let pending: Vec<u64> = self
            .input
            .ends()
            .iter()
            .zip(&from)
            .map(|(end, &from)| end.saturating_sub(from))
            .collect();
        let mut limits = raw::shares(&pending, self.config.max_records_per_round);
        for ((limit, &at), &recorded) in limits.iter_mut().zip(&from).zip(&self.error_positions) {
            if recorded > at {
                *limit = (recorded - at) as usize;
            }
        }
        match &self.input {
            Input::Stream { stream, decoder } => {
                let (stream, decoder) = (stream.clone(), decoder.clone());
                tokio::task::spawn_blocking(move || {
                    raw::read(&stream, &decoder, &from, &limits, usize::MAX)
                })
            }
            Input::View {
                table,
                latest,
                schema,
                ..
            } => {
                let (table, latest, schema) = (table.clone(), latest.clone(), schema.clone());
                let repeat = self.error_positions[0] > from[0];
                tokio::spawn(async move {
                    let mut table = table.lock().await;
                    table.refresh().await?;
                    let newest = table.version().unwrap_or(0);
                    latest.store(newest, std::sync::atomic::Ordering::SeqCst);
                    let to = match repeat {
                        true => from[0] + limits[0] as u64 - 1,
                        false => newest.min(from[0] + MAX_UPSTREAM_COMMITS - 1),
                    };
                    appended(&table, from[0], to, newest, &schema).await
                })
            }
        }
    }

    /// The round's output, from the committed state and what was read.
    async fn compute(&mut self, read: &LogRead) -> Result<Output> {
        if self.plan.reads_tables {
            // Enrichment sees the tables as they are now.
            self.plan = ViewPlan::new(&self.definition, &self.log, &self.lake).await?;
        }
        let rows = raw::past(&read.decoded.rows, &self.positions)?;
        let input = [rows];
        let no_late = || RecordBatch::new_empty(decode::error_schema());
        match &self.plan.shape {
            Shape::Stateless(plan) => Ok(Output {
                rows: self.plan.run_stateless(plan, &input).await?,
                late: no_late(),
                state: None,
                changed: false,
            }),
            Shape::Updating { aggregation, keys } => {
                let state = self.state.as_ref().expect("an aggregating view has state");
                let partial = self.plan.partial(aggregation, &input).await?;
                let (groups, changed) =
                    state::absorb(&self.plan, aggregation, &state.groups, partial).await?;
                let upserts = self.plan.finish(aggregation, vec![changed.clone()]).await?;
                let rows = with_deletes(
                    upserts,
                    &changed,
                    aggregation.keys.as_slice(),
                    keys,
                    &self.plan.schema,
                )?;
                let touched = changed.num_rows() > 0;
                Ok(Output {
                    rows,
                    late: no_late(),
                    state: Some(State {
                        groups,
                        watermarks: None,
                    }),
                    changed: touched,
                })
            }
            Shape::Windowed(aggregation) => {
                let state = self.state.as_ref().expect("a windowed view has state");
                let (window, time) = self
                    .plan
                    .input
                    .window
                    .expect("a windowed view has a window");
                let mut watermarks = state
                    .watermarks
                    .clone()
                    .expect("a windowed view has watermarks");
                let before = watermarks.current();
                let now = self.clock.now_ms();
                observe(
                    &mut watermarks,
                    &input[0],
                    time,
                    &read.next,
                    &self.positions,
                    now,
                )?;
                let (late, on_time) = split_late(&input[0], time, before)?;
                let windowed = window.assign(&on_time, time, &self.plan.input.schema)?;
                let partial = self.plan.partial(aggregation, &[windowed]).await?;
                let (groups, _) =
                    state::absorb(&self.plan, aggregation, &state.groups, partial).await?;
                let watermark =
                    watermarks.advance(now, self.config.idle_timeout.as_millis() as u64);
                let end = aggregation.window.expect("windowed").1;
                let (done, open) = state::close(&groups, end, watermark)?;
                let rows = self.plan.finish(aggregation, vec![done]).await?;
                let changed = read.records > 0 || !rows.is_empty();
                Ok(Output {
                    rows,
                    late,
                    state: Some(State {
                        groups: open,
                        watermarks: Some(watermarks),
                    }),
                    changed,
                })
            }
        }
    }

    /// Commits a round: late events to the errors table, then the view's table with the
    /// positions and the snapshot of the state after the round. Nothing changes in memory
    /// unless the view's commit lands.
    async fn commit(&mut self, read: LogRead, output: Output) -> Result<ViewRound> {
        let Output {
            rows,
            late,
            state,
            changed,
        } = output;
        let late = raw::past(&late, &self.error_positions)?;
        let mut round = ViewRound {
            records: read.records,
            rows: rows.iter().map(RecordBatch::num_rows).sum(),
            late: late.num_rows(),
            backlog: read.backlog,
            committed: false,
        };
        let moved = read.next != self.positions;
        if !moved && !changed && round.rows == 0 {
            return Ok(round);
        }
        let mut versions = raw::as_versions(&read.next);
        let snapshot = match &state {
            Some(state) => {
                let number = self.snapshot + 1;
                let snapshots = self.snapshots.clone();
                let state = state.clone();
                tokio::task::spawn_blocking(move || snapshots.write(number, &state))
                    .await
                    .map_err(|e| PipelineError::Internal(e.to_string()))??;
                versions.push((SNAPSHOT.to_string(), number as i64));
                Some(number)
            }
            None => None,
        };
        if late.num_rows() > 0 {
            self.errors
                .append(vec![late], raw::as_versions(&read.next))
                .await?;
            self.error_positions = read.next.clone();
        }
        match &self.plan.shape {
            Shape::Updating { keys, .. } => {
                self.table.upsert(rows, keys, DELETE, versions).await?;
            }
            _ => self.table.append(rows, versions).await?,
        }
        round.committed = true;
        self.positions = read.next;
        if let Some(number) = snapshot {
            self.snapshot = number;
            self.snapshots.retain(number);
        }
        self.state = state;
        self.commits += 1;
        Ok(round)
    }

    /// Compacts the view's table (Delta OPTIMIZE); returns the files removed.
    pub async fn compact(&mut self) -> Result<u64> {
        Ok(self.table.compact().await?.files_removed)
    }

    /// Runs a round every interval (at once after a round that left a backlog) until `stop`
    /// turns true. A failed round is reported in the status and retried at the next interval,
    /// from what the tables recorded.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut rounds = crate::Rounds::every(self.config.interval);
        let mut backlog = false;
        let mut ahead = None;
        while rounds.next(backlog, &mut stop).await {
            backlog = match self.round_ahead(&mut ahead).await {
                Ok(round) => {
                    if self.commits >= self.config.compact_every {
                        self.commits = 0;
                        if let Err(e) = self.compact().await {
                            tracing::warn!(view = self.name(), error = %e, "compaction failed");
                            let _ = self.reopen().await;
                        }
                    }
                    round.backlog
                }
                Err(e) => {
                    tracing::error!(view = self.name(), error = %e, "view round failed");
                    self.status.lock().expect("status lock").last_error = Some(e.to_string());
                    if let Err(e) = self.reopen().await {
                        tracing::error!(view = self.name(), error = %e, "cannot reload the view");
                    }
                    false
                }
            };
        }
    }

    /// Reloads the tables, positions and state after a failure, whatever it left behind.
    async fn reopen(&mut self) -> Result<()> {
        self.table.refresh().await?;
        self.errors.refresh().await?;
        let shards = self.input.shards();
        self.positions = raw::positions(&self.table, shards).await?;
        self.error_positions = raw::positions(&self.errors, shards).await?;
        let snapshot = self
            .table
            .position(SNAPSHOT)
            .await?
            .map_or(0, |v| v.max(0) as u64);
        if snapshot != self.snapshot {
            if let Some(state) = &self.state {
                let schema = state.groups.schema();
                let now = self.clock.now_ms();
                let mut read = self.snapshots.read(snapshot, &schema)?;
                read.watermarks = read.watermarks.map(|w| w.restarted(shards, now));
                self.state = Some(read);
            }
            self.snapshot = snapshot;
        }
        Ok(())
    }
}

/// What an upstream view's commits `from..=to` appended (nothing when `from` is past its
/// `newest` version), as rows of `schema`: its columns, then `_shard` 0, `_seq` the commit's
/// version and `_ingested_at` the commit's time.
async fn appended(
    table: &LakeTable,
    from: u64,
    to: u64,
    newest: u64,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<LogRead> {
    use arrow::array::{ArrayRef, Int32Array};
    use arrow::datatypes::{DataType, TimeUnit};

    let no_errors = RecordBatch::new_empty(decode::error_schema());
    let rows_schema = schema.clone();
    if from > newest {
        return Ok(LogRead {
            decoded: decode::Decoded {
                rows: RecordBatch::new_empty(rows_schema),
                errors: no_errors,
            },
            next: vec![from],
            records: 0,
            backlog: false,
        });
    }
    let mut rows = Vec::new();
    for batch in table.appended(from, to).await? {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| PipelineError::Internal(format!("the change feed lacks {name}")))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields().iter().take(schema.fields().len() - 3) {
            columns.push(arrow::compute::cast(
                column(field.name())?,
                field.data_type(),
            )?);
        }
        let version = arrow::compute::cast(column("_commit_version")?, &DataType::Int64)?;
        let at = arrow::compute::cast(
            column("_commit_timestamp")?,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?;
        columns.push(Arc::new(Int32Array::from(vec![0; batch.num_rows()])));
        columns.push(version);
        columns.push(at);
        rows.push(RecordBatch::try_new(rows_schema.clone(), columns)?);
    }
    let rows = concat_batches(&rows_schema, &rows)?;
    Ok(LogRead {
        records: rows.num_rows(),
        decoded: decode::Decoded {
            rows,
            errors: no_errors,
        },
        next: vec![to + 1],
        backlog: to < newest,
    })
}

/// Notes, per shard that carried records this round, the latest event time among `rows`.
fn observe(
    watermarks: &mut Watermarks,
    rows: &RecordBatch,
    time: usize,
    next: &[u64],
    from: &[u64],
    now_ms: u64,
) -> Result<()> {
    let shards = rows
        .column_by_name(decode::SHARD)
        .ok_or_else(|| PipelineError::Internal("decoded rows lack _shard".into()))?
        .as_primitive::<Int32Type>();
    let times = rows.column(time).as_primitive::<TimestampMicrosecondType>();
    let mut latest: Vec<Option<Micros>> = vec![None; next.len()];
    for (shard, t) in shards.values().iter().zip(times.iter()) {
        if let Some(t) = t {
            let l = &mut latest[*shard as usize];
            *l = Some(l.map_or(t, |l| l.max(t)));
        }
    }
    for (shard, latest) in latest.into_iter().enumerate() {
        if next[shard] > from[shard] {
            watermarks.observe(shard, latest, now_ms);
        }
    }
    Ok(())
}

/// Splits `rows` into the late events (older than `watermark`, or without an event time), as
/// rows of the errors table, and the others.
fn split_late(
    rows: &RecordBatch,
    time: usize,
    watermark: Option<Micros>,
) -> Result<(RecordBatch, RecordBatch)> {
    let times = rows.column(time).as_primitive::<TimestampMicrosecondType>();
    let late: BooleanArray = times
        .iter()
        .map(|t| Some(t.is_none() || watermark.is_some_and(|w| t.is_some_and(|t| t < w))))
        .collect();
    if late.true_count() == 0 {
        return Ok((RecordBatch::new_empty(decode::error_schema()), rows.clone()));
    }
    let late_rows = filter_record_batch(rows, &late)?;
    let on_time = filter_record_batch(rows, &not(&late)?)?;
    let name = rows.schema().field(time).name().clone();
    let stamp = |micros: Micros| {
        chrono::DateTime::from_timestamp_micros(micros).map_or(micros.to_string(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
    };
    let times = late_rows
        .column(time)
        .as_primitive::<TimestampMicrosecondType>();
    let reasons: StringArray = times
        .iter()
        .map(|t| {
            Some(match (t, watermark) {
                (Some(t), Some(w)) => format!(
                    "late: {name} {} is behind the watermark {}",
                    stamp(t),
                    stamp(w)
                ),
                _ => format!("late: {name} is null, so the event is in no window"),
            })
        })
        .collect();
    Ok((decode::error_rows(&late_rows, reasons)?, on_time))
}

/// An updating view's upsert: `upserts` with a false [`DELETE`] flag, and a row flagged true
/// (its other columns null) for each key among `changed` (the state's touched groups, whose key
/// columns are `state_keys`) that `upserts` no longer holds — a group its HAVING now filters out.
fn with_deletes(
    upserts: Vec<RecordBatch>,
    changed: &RecordBatch,
    state_keys: &[usize],
    keys: &[String],
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Vec<RecordBatch>> {
    use arrow::array::new_null_array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::row::{RowConverter, SortField};

    let flagged_schema = {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DELETE, DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    };
    let key_types: Vec<DataType> = keys
        .iter()
        .map(|k| schema.field_with_name(k).map(|f| f.data_type().clone()))
        .collect::<Result<_, _>>()?;
    let converter = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
    let upserts = concat_batches(schema, &upserts)?;
    // The state's key columns have the query's types, the view's the lake's: compare as the latter.
    let as_keys = |columns: Vec<&ArrayRef>| -> Result<Vec<ArrayRef>> {
        columns
            .into_iter()
            .zip(&key_types)
            .map(|(c, t)| Ok(arrow::compute::cast(c, t)?))
            .collect()
    };
    let upserted_keys = as_keys(
        keys.iter()
            .map(|k| {
                upserts
                    .column_by_name(k)
                    .ok_or_else(|| PipelineError::Internal(format!("no key column {k}")))
            })
            .collect::<Result<_>>()?,
    )?;
    let changed_keys = as_keys(state_keys.iter().map(|&i| changed.column(i)).collect())?;
    let present = converter.convert_columns(&upserted_keys)?;
    let present: std::collections::HashSet<&[u8]> = present.iter().map(|r| r.data()).collect();
    let candidates = converter.convert_columns(&changed_keys)?;
    let gone: BooleanArray = candidates
        .iter()
        .map(|r| Some(!present.contains(r.data())))
        .collect();
    let mut out = Vec::new();
    if upserts.num_rows() > 0 {
        let mut columns = upserts.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(vec![
            false;
            upserts.num_rows()
        ])));
        out.push(RecordBatch::try_new(flagged_schema.clone(), columns)?);
    }
    let deleted = gone.true_count();
    if deleted > 0 {
        let columns = schema
            .fields()
            .iter()
            .map(|f| match keys.iter().position(|k| k == f.name()) {
                Some(i) => Ok(arrow::compute::filter(&changed_keys[i], &gone)?),
                None => Ok(new_null_array(f.data_type(), deleted)),
            })
            .chain(std::iter::once(Ok(
                Arc::new(BooleanArray::from(vec![true; deleted])) as _,
            )))
            .collect::<Result<Vec<_>>>()?;
        out.push(RecordBatch::try_new(flagged_schema, columns)?);
    }
    Ok(out)
}
