//! What a view's round computes, before it commits: each partition's rows apart (late events
//! split off, windows given, the part of the query below the aggregate, `Partial` states),
//! then the partitions together (the states merged, windows closed, the rows out).
//!
//! ```text
//!  partition 0 rows ─► late? ─► windows ─► pre ─► Partial ─┐
//!  partition 1 rows ─► late? ─► windows ─► pre ─► Partial ─┼─► merge into state ─► close ─► Final ─► post
//!  …  (each on its own task: as many at once as there are cores)  ┘
//! ```
//!
//! Everything here is a function of the committed state and what was read: nothing of the
//! view changes until its commit lands, and a round repeated after a crash computes what the
//! first attempt did. Partitions' results are put together in partition order, whatever order
//! their tasks end in, so that order-sensitive aggregates (`array_agg` without `ORDER BY`) are
//! the same on every run.

use std::future::Future;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{concat_batches, filter_record_batch, not};
use arrow::datatypes::TimestampMicrosecondType;

use super::plan::{Shape, ViewPlan};
use super::state::{self, State};
use super::watermark::Micros;
use crate::decode;
use crate::exactly_once::{Positions, past};
use crate::source::SourceRead;
use crate::{PipelineError, Result};

/// What a round computed, before it commits.
pub(super) struct Output {
    pub rows: Vec<RecordBatch>,
    /// Rows of the errors table: the late events.
    pub late: Vec<RecordBatch>,
    pub state: Option<State>,
    /// Whether the state changed in a way a restart must see.
    pub changed: bool,
}

/// The round's output, from the committed `state` and `read`; `positions` are the view's
/// (rows before them were taken by an earlier commit), `now_ms` the wall clock (idle
/// partitions), `idle_ms` the idle timeout.
pub(super) async fn compute(
    plan: &Arc<ViewPlan>,
    state: Option<&State>,
    read: &SourceRead,
    positions: &Positions,
    now_ms: u64,
    idle_ms: u64,
) -> Result<Output> {
    let mut taken = Vec::with_capacity(read.parts.len());
    for part in &read.parts {
        taken.push((part, past(&part.rows, positions)?));
    }
    let parts: Vec<RecordBatch> = taken
        .iter()
        .map(|(_, rows)| rows.clone())
        .filter(|rows| rows.num_rows() > 0)
        .collect();
    match &plan.shape {
        Shape::Join(join) => {
            let state = state.ok_or_else(|| missing("state"))?;
            let mut output =
                super::join::round(join, state, &taken, now_ms, idle_ms, &plan.task).await?;
            output.rows = plan.to_lake(output.rows)?;
            Ok(output)
        }
        Shape::Stateless(_) => {
            let outputs = per_partition(parts, |rows| {
                let plan = plan.clone();
                async move { plan.run_stateless(&[rows]).await }
            })
            .await?;
            Ok(Output {
                rows: outputs.into_iter().flatten().collect(),
                late: Vec::new(),
                state: None,
                changed: false,
            })
        }
        Shape::Updating { .. } => {
            let state = state.ok_or_else(|| missing("state"))?;
            let partial = per_partition(parts, |rows| partial(plan.clone(), rows, None)).await?;
            let (_, partial): (Vec<_>, Vec<_>) = partial.into_iter().unzip();
            let finished = finish(plan, &state.groups, flat(partial), None).await?;
            Ok(Output {
                rows: finished.rows,
                late: Vec::new(),
                changed: finished.changed,
                state: Some(State {
                    groups: finished.groups,
                    watermarks: None,
                    sides: Vec::new(),
                }),
            })
        }
        Shape::Windowed(_) => {
            let state = state.ok_or_else(|| missing("state"))?;
            let (_, time) = plan.input.window.ok_or_else(|| missing("window"))?;
            let mut watermarks = state
                .watermarks
                .clone()
                .ok_or_else(|| missing("watermarks"))?;
            // Lateness is judged against the watermark the last commit left.
            let before = watermarks.current();
            for (part, rows) in &taken {
                if part.records > 0 || part.gap.is_some() {
                    watermarks.observe(part.partition as usize, latest(rows, time), now_ms);
                }
            }
            let done = per_partition(parts, |rows| partial(plan.clone(), rows, before)).await?;
            let (late, partial): (Vec<RecordBatch>, Vec<Vec<RecordBatch>>) =
                done.into_iter().unzip();
            let watermark = watermarks.advance(now_ms, idle_ms);
            let finished = finish(plan, &state.groups, flat(partial), watermark).await?;
            let changed = read.records() > 0 || !finished.rows.is_empty();
            Ok(Output {
                rows: finished.rows,
                late,
                changed,
                state: Some(State {
                    groups: finished.groups,
                    watermarks: Some(watermarks),
                    sides: Vec::new(),
                }),
            })
        }
    }
}

/// One partition's rows taken into an aggregating view's state: for a windowed view, the
/// rows older than `late_before` (or without an event time) split off as rows of the errors
/// table and the others put in their windows; then the Partial states of those on time.
pub(super) async fn partial(
    plan: Arc<ViewPlan>,
    rows: RecordBatch,
    late_before: Option<Micros>,
) -> Result<(RecordBatch, Vec<RecordBatch>)> {
    match (&plan.shape, plan.input.window) {
        (Shape::Windowed(_), Some((window, time))) => {
            let (late, on_time) = split_late(&rows, time, late_before)?;
            let windowed = window.assign(&on_time, time, &plan.input.schema)?;
            Ok((late, plan.partial(&[windowed]).await?))
        }
        _ => Ok((
            RecordBatch::new_empty(decode::error_schema()),
            plan.partial(&[rows]).await?,
        )),
    }
}

/// An aggregating view's state with Partial states merged in, and the rows out.
pub(super) struct Finished {
    pub rows: Vec<RecordBatch>,
    /// The groups still open.
    pub groups: RecordBatch,
    /// Whether a group changed (an updating view's: then there are rows).
    pub changed: bool,
}

/// Merges `partial` into `groups` and finishes what is done: a windowed view's windows that
/// end at or before `close_at`, an updating view's groups the merge changed (as upserts, with
/// the deletes of groups gone).
pub(super) async fn finish(
    plan: &ViewPlan,
    groups: &RecordBatch,
    partial: Vec<RecordBatch>,
    close_at: Option<Micros>,
) -> Result<Finished> {
    let (groups, changed) = state::absorb(plan, groups, partial).await?;
    let aggregation = plan.aggregation().ok_or_else(|| missing("aggregate"))?;
    match &plan.shape {
        Shape::Updating { keys, .. } => {
            let upserts = plan.finish(vec![changed.clone()]).await?;
            let rows = super::upsert::with_deletes(
                upserts,
                &changed,
                &aggregation.keys,
                keys,
                &plan.schema,
            )?;
            Ok(Finished {
                rows,
                groups,
                changed: changed.num_rows() > 0,
            })
        }
        _ => {
            let end = aggregation.window.ok_or_else(|| missing("window"))?.1;
            let (closed, open) = state::close(&groups, end, close_at)?;
            Ok(Finished {
                rows: plan.finish(vec![closed]).await?,
                groups: open,
                changed: changed.num_rows() > 0,
            })
        }
    }
}

fn missing(what: &str) -> PipelineError {
    PipelineError::Internal(format!("an aggregating view without its {what}"))
}

fn flat(batches: Vec<Vec<RecordBatch>>) -> Vec<RecordBatch> {
    batches.into_iter().flatten().collect()
}

/// Runs `work` on each partition's rows, each on its own task, and gives the results in
/// partition order. A task that panics panics the round (the supervisor reports it).
async fn per_partition<T, F, Fut>(parts: Vec<RecordBatch>, work: F) -> Result<Vec<T>>
where
    F: Fn(RecordBatch) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|rows| tokio::spawn(work(rows)))
        .collect();
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(result) => done.push(result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(PipelineError::Internal(e.to_string())),
        }
    }
    Ok(done)
}

/// The latest event time among `rows` (none when all lack one).
pub(super) fn latest(rows: &RecordBatch, time: usize) -> Option<Micros> {
    arrow::compute::max(rows.column(time).as_primitive::<TimestampMicrosecondType>())
}

/// Splits `rows` into the late events (older than `watermark`, or without an event time), as
/// rows of the errors table, and the others.
pub(super) fn split_late(
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
                _ => format!("late: {name} is null, so the event has no place in event time"),
            })
        })
        .collect();
    Ok((decode::error_rows(&late_rows, reasons)?, on_time))
}

/// The late rows of `output` and the gap rows of `read` that an errors table at `positions`
/// does not hold yet, in one batch.
pub(super) fn error_rows(
    output: &Output,
    read: &SourceRead,
    positions: &Positions,
    now_ms: i64,
) -> Result<RecordBatch> {
    let mut rows = vec![past(&read.gap_rows(now_ms)?, positions)?];
    for late in &output.late {
        rows.push(past(late, positions)?);
    }
    Ok(concat_batches(&decode::error_schema(), &rows)?)
}
