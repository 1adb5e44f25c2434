//! Joins of two inputs within a time bound: an authorization and its capture within 5 minutes,
//! a bid and its auction while it is open, the persons and auctions of the same window.
//!
//! ```text
//!  FROM a [LEFT | RIGHT | FULL] JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL … AND a.ts + INTERVAL …
//!  FROM TUMBLE(a, ts, …) JOIN TUMBLE(b, ts, …) ON a.k = b.k AND a.window_start = b.window_start
//!
//!  round:  new rows of a ─► late? ─┐            held rows of a ─┐
//!          new rows of b ─► late? ─┴─ a new ⋈ (b held + new),  a held ⋈ b new ─► the query above the join ─► <view>
//!          held + new rows, less those the other side's watermark has passed ─► held
//!          rows let go that never matched (outer joins) ─► padded with NULLs ─► the query above ─► <view>
//! ```
//!
//! The condition bounds the sides' event times against each other: every match has
//! `t_b - t_a` within `lo..=hi` (a window join: both in one window, so within a window's
//! size). Each side's watermark (its own partitions', as a windowed view's) says which of the
//! other side's rows can still match: a row of `a` waits until `b`'s watermark passes
//! `t_a + hi`, a row of `b` until `a`'s passes `t_b - lo`. The state holds those rows (Arrow,
//! a struct column a side) and, for the sides an outer join keeps, whether each has matched;
//! one that leaves without a match is emitted then, padded with NULLs, through the query as
//! written. So an inner join's matches come as soon as both rows are read, and an unmatched
//! row comes once, exactly when the watermark proves no match can come.
//!
//! A row older than its own side's watermark (as the last commit left it) is late: it goes to
//! the view's errors table, and matches nothing. A side whose every partition is idle follows
//! the other's watermark, as an idle shard does not hold a stream's back.
//!
//! The query runs as DataFusion planned it: the join made inner for matches, a semi join of it
//! for which rows matched, and the query as written for the rows left unmatched. Exactly once
//! as every view: the state is a snapshot named by the commit that records both sides'
//! positions (the second side's partitions numbered from `source::joined::SECOND_SIDE`).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StructArray,
    new_null_array,
};
use arrow::compute::{concat_batches, filter_record_batch, not};
use arrow::datatypes::{
    DataType, Field, Fields, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Operator,
};
use datafusion::logical_expr::{Join as JoinNode, LogicalPlan::Join as JoinPlan};
use datafusion::physical_plan::{ExecutionPlan, collect, replace_children_if_necessary};

use super::input::{InputExec, InputTable, fill, fresh};
use super::round::{Output, latest, split_late};
use super::state::State;
use super::temporal::{self, Temporal};
use super::watermark::{Micros, Watermarks};
use super::window::{WINDOW_END, WINDOW_START, Window};
use crate::decode::{SEQ, SHARD};
use crate::error::refused;
use crate::source::PartRead;
use crate::source::joined::side_of;
use crate::{PipelineError, Result};
use sluice_sql::StreamDefinition;

/// A view's join of two inputs, planned (see the module's documentation).
pub struct Join {
    /// The join's left input, then its right.
    pub sides: [Side; 2],
    /// The state's columns: each side's rows as a struct (null in the other side's rows),
    /// then whether the row has matched.
    pub state_schema: SchemaRef,
    /// How a row meets the other side's.
    meeting: Meeting,
}

/// How the rows of a join's sides meet.
enum Meeting {
    /// Within a time bound of each other (interval and window joins).
    Within(Within),
    /// A row of the left side with the right side's version valid at its time
    /// ([`super::temporal`]).
    AsOf(Temporal),
}

/// An interval or window join, planned.
struct Within {
    /// Every match has `t_right - t_left` at least this (µs)…
    lo: Micros,
    /// … and at most this.
    hi: Micros,
    /// The query with the join made inner: matches, through the query above the join.
    inner: Arc<dyn ExecutionPlan>,
    /// The query as written: rows left unmatched, padded with NULLs.
    outer: Arc<dyn ExecutionPlan>,
    /// Per side an outer join keeps, the `_shard` and `_seq` of its rows that match.
    matched: [Option<Arc<dyn ExecutionPlan>>; 2],
}

/// One input of a join.
pub struct Side {
    /// The stream or view, as the query reads it (windowed or not).
    pub input: InputTable,
    /// Its event-time column among the rows read.
    pub time: usize,
    /// How far its events may lag behind the latest before they are late (µs): its stream's
    /// watermark delay.
    pub delay: Micros,
    /// The columns of its rows the state holds (a temporal join's: those the query reads).
    pub kept: Vec<usize>,
}

impl Side {
    /// The columns of its rows the state holds.
    pub fn held(&self) -> Result<SchemaRef> {
        Ok(Arc::new(self.input.rows.project(&self.kept)?))
    }
}

impl Join {
    /// Plans the join of `logical` (the query as SQL gave it) and `optimized` (as DataFusion
    /// optimized it), whose inputs are `inputs`, the streams `streams` defines.
    pub(super) async fn new(
        state: &SessionState,
        logical: &LogicalPlan,
        optimized: &LogicalPlan,
        inputs: [InputTable; 2],
        streams: [&StreamDefinition; 2],
    ) -> Result<Self> {
        let join = joining(optimized)?;
        let delays = streams.map(|s| s.watermark_ms.unwrap_or(0) as Micros * 1000);
        let as_of = [&join.left, &join.right].map(|side| temporal::versioned(side));
        let (meeting, times, kept) = match as_of {
            [Some(_), _] => {
                return Err(PipelineError::Unsupported(
                    "the stream read FOR SYSTEM_TIME AS OF is the join's right side: FROM o \
                     JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON …"
                        .into(),
                ));
            }
            [None, Some(column)] => {
                let (temporal, times) = Temporal::new(
                    state,
                    logical,
                    join,
                    [&inputs[0], &inputs[1]],
                    &column,
                    streams[1],
                )
                .await?;
                let kept = temporal.kept.clone();
                (Meeting::AsOf(temporal), times, kept)
            }
            [None, None] => {
                let (within, times) = Within::new(state, logical, join, &inputs).await?;
                let kept = [0, 1].map(|s| (0..inputs[s].rows.fields().len()).collect());
                (Meeting::Within(within), times, kept)
            }
        };
        let [left, right] = inputs;
        let [kept_left, kept_right] = kept;
        let sides = [
            (left, times[0], delays[0], kept_left),
            (right, times[1], delays[1], kept_right),
        ]
        .map(|(input, time, delay, kept)| Side {
            input,
            time,
            delay,
            kept,
        });
        let state_schema = Arc::new(Schema::new(vec![
            Field::new("left", row_struct(&sides[0].held()?), true),
            Field::new("right", row_struct(&sides[1].held()?), true),
            Field::new("matched", DataType::Boolean, false),
        ]));
        Ok(Join {
            sides,
            state_schema,
            meeting,
        })
    }

    /// The plans a round runs.
    pub fn plans(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        match &self.meeting {
            Meeting::Within(within) => {
                let mut plans = vec![&within.inner, &within.outer];
                plans.extend(within.matched.iter().flatten());
                plans
            }
            Meeting::AsOf(temporal) => vec![temporal.plan()],
        }
    }

    /// The state before the first round: nothing held, no event seen on the `partitions`
    /// of each side (`now_ms` starts their idle clocks).
    pub fn empty(&self, partitions: [usize; 2], now_ms: u64) -> State {
        State {
            groups: RecordBatch::new_empty(self.state_schema.clone()),
            watermarks: None,
            sides: (0..2)
                .map(|s| Watermarks::new(partitions[s], self.sides[s].delay, now_ms))
                .collect(),
        }
    }

    /// The held rows of `groups` (the state) of side `side`, and whether each has matched.
    pub(super) fn held(
        &self,
        groups: &RecordBatch,
        side: usize,
    ) -> Result<(RecordBatch, BooleanArray)> {
        let mine: BooleanArray = groups.column(side).logical_nulls().map_or_else(
            || BooleanArray::from(vec![true; groups.num_rows()]),
            |n| BooleanArray::new(n.inner().clone(), None),
        );
        let groups = filter_record_batch(groups, &mine)?;
        let rows = groups.column(side).as_struct();
        let rows = RecordBatch::try_new(self.sides[side].held()?, rows.columns().to_vec())?;
        Ok((rows, groups.column(2).as_boolean().clone()))
    }

    /// `rows` of side `side`, with whether each has matched, as rows of the state.
    pub(super) fn holding(
        &self,
        side: usize,
        rows: &RecordBatch,
        matched: BooleanArray,
    ) -> Result<RecordBatch> {
        let n = rows.num_rows();
        let fields = |s: usize| match self.state_schema.field(s).data_type() {
            DataType::Struct(fields) => fields.clone(),
            _ => unreachable!("a side's rows are a struct"),
        };
        let mut columns: Vec<ArrayRef> = vec![
            new_null_array(self.state_schema.field(0).data_type(), n),
            new_null_array(self.state_schema.field(1).data_type(), n),
            Arc::new(matched),
        ];
        columns[side] = Arc::new(StructArray::try_new(
            fields(side),
            rows.columns().to_vec(),
            None,
        )?);
        Ok(RecordBatch::try_new(self.state_schema.clone(), columns)?)
    }

    /// `rows` of side `side` as its leaf in the plans takes them: with their windows, if the
    /// side is windowed.
    fn fed(&self, side: usize, rows: &RecordBatch) -> Result<RecordBatch> {
        match self.sides[side].input.window {
            Some((window, time)) => window.assign(rows, time, &self.sides[side].input.schema),
            None => Ok(rows.clone()),
        }
    }

    /// Runs `plan` with `left` and `right` as its sides' rows.
    async fn run(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        left: &RecordBatch,
        right: &RecordBatch,
        task: &Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let sides = [self.fed(0, left)?, self.fed(1, right)?];
        let plan = fresh(feed_sides(plan, &sides)?)?;
        Ok(collect(plan, task.clone()).await?)
    }
}

impl Within {
    /// Plans the interval or window join `join` (of the optimized query) of `logical`, whose
    /// inputs are `inputs`. Returns it with each side's time column.
    async fn new(
        state: &SessionState,
        logical: &LogicalPlan,
        join: &JoinNode,
        inputs: &[InputTable; 2],
    ) -> Result<(Self, [usize; 2])> {
        let kind = join.join_type;
        if !matches!(
            kind,
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
        ) {
            return Err(PipelineError::Unsupported(format!(
                "a {kind} join of two streams: a view joins them INNER, LEFT, RIGHT or FULL"
            )));
        }
        for input in inputs {
            match input.window {
                Some((Window::Session { .. }, _)) => {
                    return Err(PipelineError::Unsupported(
                        "a join of SESSION windows: a session's bounds move as it grows".into(),
                    ));
                }
                // A row is in several windows, and may match in one but not another: an outer
                // join would need to know in which it went unmatched.
                Some((Window::Hop { .. }, _)) if kind != JoinType::Inner => {
                    return Err(PipelineError::Unsupported(
                        "an outer join of HOP windows: join them INNER, or join TUMBLE windows"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        let (times, lo, hi) = bounds(join, [&inputs[0], &inputs[1]])?;
        let physical = |plan: LogicalPlan| async move {
            state.create_physical_plan(&plan).await.map_err(refused)
        };
        let inner = physical(replace_join(logical, |j| {
            Ok(JoinPlan(JoinNode::try_new(
                j.left.clone(),
                j.right.clone(),
                j.on.clone(),
                j.filter.clone(),
                JoinType::Inner,
                j.join_constraint,
                j.null_equality,
                false,
            )?))
        })?)
        .await?;
        let outer = physical(logical.clone()).await?;
        let kept = [
            matches!(kind, JoinType::Left | JoinType::Full),
            matches!(kind, JoinType::Right | JoinType::Full),
        ];
        let mut matched = [None, None];
        for (side, semi) in [(0, JoinType::LeftSemi), (1, JoinType::RightSemi)] {
            if kept[side] {
                matched[side] = Some(physical(semi_join(logical, semi)?).await?);
            }
        }
        let within = Within {
            lo,
            hi,
            inner,
            outer,
            matched,
        };
        Ok((within, times))
    }
}

/// What a round read of a join's sides: the watermarks after it, each side's late rows (as
/// rows of the errors table) and its rows on time.
pub(super) struct SidesRead {
    pub marks: Vec<Watermarks>,
    pub late: Vec<RecordBatch>,
    pub new: Vec<RecordBatch>,
    /// Each side's rows, late or not.
    pub all: Vec<RecordBatch>,
}

/// A round of a join view (see the module's documentation): `taken` is each partition read,
/// with its rows not yet taken.
pub(super) async fn round(
    join: &Join,
    state: &State,
    taken: &[(&PartRead, RecordBatch)],
    now_ms: u64,
    idle_ms: u64,
    task: &Arc<TaskContext>,
) -> Result<Output> {
    let read = join.read(state, taken, now_ms, idle_ms)?;
    let records = taken.iter().map(|(p, _)| p.records).sum::<usize>();
    let (rows, groups) = match &join.meeting {
        Meeting::Within(within) => within.round(join, state, &read, task).await?,
        Meeting::AsOf(temporal) => temporal.round(join, state, &read, task).await?,
    };
    Ok(Output {
        changed: records > 0 || !rows.is_empty(),
        rows,
        late: read.late,
        state: Some(State {
            groups: concat_batches(&join.state_schema, &groups)?,
            watermarks: None,
            sides: read.marks,
        }),
    })
}

impl Join {
    /// The rows of `taken` by side, late or on time (judged against the watermarks the last
    /// commit left), and the watermarks they move on.
    fn read(
        &self,
        state: &State,
        taken: &[(&PartRead, RecordBatch)],
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<SidesRead> {
        let mut marks = state.sides.clone();
        let before = [marks[0].current(), marks[1].current()];
        let mut read: [Vec<RecordBatch>; 2] = Default::default();
        for (part, rows) in taken {
            let (side, own) = side_of(part.partition);
            if part.records > 0 || part.gap.is_some() {
                marks[side].observe(own as usize, latest(rows, self.sides[side].time), now_ms);
            }
            read[side].push(rows.clone());
        }
        let mut late = Vec::with_capacity(2);
        let mut new = Vec::with_capacity(2);
        let mut all = Vec::with_capacity(2);
        for (side, rows) in read.iter().enumerate() {
            let rows = concat_batches(&self.sides[side].input.rows, rows)?;
            let (l, on_time) = split_late(&rows, self.sides[side].time, before[side])?;
            late.push(l);
            new.push(on_time);
            all.push(rows);
        }
        for mark in &mut marks {
            mark.advance(now_ms, idle_ms);
        }
        for side in 0..2 {
            if marks[side].idle(now_ms, idle_ms)
                && let Some(other) = marks[1 - side].current()
            {
                marks[side].raise(other);
            }
        }
        Ok(SidesRead {
            marks,
            late,
            new,
            all,
        })
    }
}

impl Within {
    /// A round's matches and unmatched rows let go, and the rows each side holds after it
    /// (as rows of the state).
    async fn round(
        &self,
        join: &Join,
        state: &State,
        read: &SidesRead,
        task: &Arc<TaskContext>,
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let new = &read.new;
        let (held_left, matched_left) = join.held(&state.groups, 0)?;
        let (held_right, matched_right) = join.held(&state.groups, 1)?;
        // New rows meet everything of the other side; held rows only the other side's new ones.
        let right = concat_batches(&held_right.schema(), [&held_right, &new[1]])?;
        let pairs = [(&new[0], &right), (&held_left, &new[1])];
        let mut rows = Vec::new();
        for (l, r) in pairs {
            if l.num_rows() > 0 && r.num_rows() > 0 {
                rows.extend(join.run(&self.inner, l, r, task).await?);
            }
        }
        let left = concat_batches(&held_left.schema(), [&held_left, &new[0]])?;
        let matched = [
            flags(
                &left,
                &matched_left,
                &new[0],
                &self.matching(join, 0, &pairs, task).await?,
            )?,
            flags(
                &right,
                &matched_right,
                &new[1],
                &self.matching(join, 1, &pairs, task).await?,
            )?,
        ];
        // A left row waits for the right side's watermark to pass `t + hi`; a right row for
        // the left side's to pass `t - lo`.
        let wait = [
            (read.marks[1].current(), self.hi),
            (read.marks[0].current(), -self.lo),
        ];
        let mut groups = Vec::with_capacity(2);
        for (side, all) in [left, right].iter().enumerate() {
            let (watermark, reach) = wait[side];
            let times = all
                .column(join.sides[side].time)
                .as_primitive::<TimestampMicrosecondType>();
            let gone: BooleanArray = times
                .iter()
                .map(|t| {
                    Some(watermark.is_some_and(|w| t.is_some_and(|t| t.saturating_add(reach) < w)))
                })
                .collect();
            let unmatched = arrow::compute::and(&gone, &not(&matched[side])?)?;
            if self.matched[side].is_some() && unmatched.true_count() > 0 {
                let alone = filter_record_batch(all, &unmatched)?;
                let none = RecordBatch::new_empty(join.sides[1 - side].input.rows.clone());
                let (l, r) = match side {
                    0 => (&alone, &none),
                    _ => (&none, &alone),
                };
                rows.extend(join.run(&self.outer, l, r, task).await?);
            }
            let stays = not(&gone)?;
            let kept = filter_record_batch(all, &stays)?;
            let kept_matched = arrow::compute::filter(&matched[side], &stays)?;
            groups.push(join.holding(side, &kept, kept_matched.as_boolean().clone())?);
        }
        Ok((rows, groups))
    }

    /// The rows of side `side` that matched a row of the other side in the pairs `pairs`
    /// (left rows, right rows) run through its semi join.
    async fn matching(
        &self,
        join: &Join,
        side: usize,
        pairs: &[(&RecordBatch, &RecordBatch)],
        task: &Arc<TaskContext>,
    ) -> Result<HashSet<(i32, i64)>> {
        let mut matched = HashSet::new();
        let Some(plan) = &self.matched[side] else {
            return Ok(matched);
        };
        for (left, right) in pairs {
            for batch in join.run(plan, left, right, task).await? {
                let (shards, seqs) = ids(&batch)?;
                matched.extend(
                    shards
                        .values()
                        .iter()
                        .copied()
                        .zip(seqs.values().iter().copied()),
                );
            }
        }
        Ok(matched)
    }
}

/// Whether each row of `all` (the held rows, then `new`) has matched: a held one if it had
/// (`held`) or its id is in `ids`, a new one if its id is.
fn flags(
    all: &RecordBatch,
    held: &BooleanArray,
    new: &RecordBatch,
    matched: &HashSet<(i32, i64)>,
) -> Result<BooleanArray> {
    let (shards, seqs) = ids(all)?;
    let held_rows = all.num_rows() - new.num_rows();
    Ok((0..all.num_rows())
        .map(|i| {
            let before = i < held_rows && held.value(i);
            Some(before || matched.contains(&(shards.value(i), seqs.value(i))))
        })
        .collect())
}

/// `rows`' `_shard` and `_seq`.
pub(super) fn ids(rows: &RecordBatch) -> Result<(Int32Array, Int64Array)> {
    let column = |name: &str| rows.column_by_name(name);
    match (column(SHARD), column(SEQ)) {
        (Some(shards), Some(seqs)) => Ok((
            shards.as_primitive::<Int32Type>().clone(),
            seqs.as_primitive::<Int64Type>().clone(),
        )),
        _ => Err(PipelineError::Internal(
            "a join's rows lack _shard or _seq".into(),
        )),
    }
}

/// A side's rows as a struct column of the state: every field nullable (the other side's
/// rows hold none).
fn row_struct(rows: &SchemaRef) -> DataType {
    DataType::Struct(Fields::from(
        rows.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// `plan` with the leaves under its join's left input holding `sides[0]` and those under its
/// right input `sides[1]` (to be made [`fresh`] before it runs).
fn feed_sides(
    plan: &Arc<dyn ExecutionPlan>,
    sides: &[RecordBatch; 2],
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    plan.clone()
        .transform_down(|node| {
            let children = node.children();
            if children.len() == 2 && children.iter().all(|c| reads_input(c)) {
                let fed = vec![
                    fill(children[0], std::slice::from_ref(&sides[0]))?,
                    fill(children[1], std::slice::from_ref(&sides[1]))?,
                ];
                let node = replace_children_if_necessary(node.clone(), fed)?;
                return Ok(Transformed::new(node, true, TreeNodeRecursion::Jump));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
}

fn reads_input(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<InputExec>().is_some() || plan.children().into_iter().any(reads_input)
}

/// How many of the view's inputs (`InputTable` scans) `plan` reads.
fn inputs_under(plan: &LogicalPlan) -> usize {
    let mut found = 0;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && datafusion::catalog::default_table_source::source_as_provider(&scan.source)
                .is_ok_and(|p| (p.as_ref() as &dyn std::any::Any).is::<InputTable>())
        {
            found += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The join of `plan` whose inputs each read an input of the view.
pub(super) fn joining(plan: &LogicalPlan) -> Result<&JoinNode> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let JoinPlan(join) = node
            && inputs_under(&join.left) == 1
            && inputs_under(&join.right) == 1
        {
            found = Some(join);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found.ok_or_else(|| {
        PipelineError::Unsupported(
            "a view reads two streams by joining them: FROM a JOIN b ON … (with a time bound)"
                .into(),
        )
    })
}

/// `plan` with its join of the inputs replaced by `change(join)`.
pub(super) fn replace_join(
    plan: &LogicalPlan,
    change: impl Fn(&JoinNode) -> datafusion::error::Result<LogicalPlan>,
) -> Result<LogicalPlan> {
    Ok(plan
        .clone()
        .transform_up(|node| match &node {
            JoinPlan(join) if inputs_under(&join.left) == 1 && inputs_under(&join.right) == 1 => {
                Ok(Transformed::yes(change(join)?))
            }
            _ => Ok(Transformed::yes(node.recompute_schema()?)),
        })?
        .data)
}

/// The `_shard` and `_seq` of the rows of one side of the join `plan` joins (`LeftSemi`:
/// its left side's, `RightSemi`: its right side's) that match a row of the other.
fn semi_join(plan: &LogicalPlan, semi: JoinType) -> Result<LogicalPlan> {
    let j = joining(plan)?;
    let kept = match semi {
        JoinType::LeftSemi => &j.left,
        _ => &j.right,
    };
    let column = |name: &str| {
        kept.schema()
            .columns()
            .into_iter()
            .find(|c| c.name == name)
            .map(Expr::Column)
            .ok_or_else(|| {
                PipelineError::Unsupported(
                    "an outer join reads each stream as it is (FROM a LEFT JOIN b ON …), not \
                     through a subquery that leaves out its _shard and _seq"
                        .into(),
                )
            })
    };
    let (shard, seq) = (column(SHARD)?, column(SEQ)?);
    let semi = JoinNode::try_new(
        j.left.clone(),
        j.right.clone(),
        j.on.clone(),
        j.filter.clone(),
        semi,
        j.join_constraint,
        j.null_equality,
        false,
    )?;
    Ok(LogicalPlanBuilder::from(JoinPlan(semi))
        .project(vec![shard, seq])?
        .build()?)
}

/// Each side's event-time column, and the bounds `lo..=hi` of `t_right - t_left` that the
/// join's condition sets (see the module's documentation).
fn bounds(join: &JoinNode, inputs: [&InputTable; 2]) -> Result<([usize; 2], Micros, Micros)> {
    let schemas = [join.left.schema().as_ref(), join.right.schema().as_ref()];
    let mut conditions: Vec<Expr> = join
        .on
        .iter()
        .map(|(l, r)| l.clone().eq(r.clone()))
        .collect();
    if let Some(filter) = &join.filter {
        conditions.extend(split_conjunction(filter).into_iter().cloned());
    }
    let mut times: [Option<usize>; 2] = [None, None];
    let (mut lo, mut hi) = (None::<Micros>, None::<Micros>);
    let mut note = |side: usize, time: usize| -> Result<()> {
        match times[side] {
            Some(t) if t != time => Err(PipelineError::Unsupported(format!(
                "a join bounds one time column of each input: '{}' and '{}' of the same one",
                inputs[side].rows.field(t).name(),
                inputs[side].rows.field(time).name()
            ))),
            _ => {
                times[side] = Some(time);
                Ok(())
            }
        }
    };
    for condition in conditions.iter().flat_map(between) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &condition else {
            continue;
        };
        // Both in one window: within a window's size of each other.
        if *op == Operator::Eq
            && let (Some(a), Some(b)) = (window_column(left), window_column(right))
            && a.name == b.name
        {
            let (Some(sa), Some(sb)) = (side(&schemas, a), side(&schemas, b)) else {
                continue;
            };
            if sa == sb {
                continue;
            }
            let mut size = [0; 2];
            for s in 0..2 {
                let (window, time) = inputs[s].window.ok_or_else(|| {
                    PipelineError::Unsupported(
                        "a window join takes both inputs' windows: FROM TUMBLE(a, …) JOIN \
                         TUMBLE(b, …) ON a.window_start = b.window_start"
                            .into(),
                    )
                })?;
                size[s] = match window {
                    Window::Tumble { size } | Window::Hop { size, .. } => size,
                    Window::Session { .. } => unreachable!("refused before"),
                };
                note(s, time)?;
            }
            // Sharing a window's start (or end), the two times are less than the longer
            // window apart.
            let reach = size[0].max(size[1]);
            lo = Some(lo.map_or(-reach, |l| l.max(-reach)));
            hi = Some(hi.map_or(reach, |h| h.min(reach)));
            continue;
        }
        let (Some(l), Some(r)) = (linear(left), linear(right)) else {
            continue;
        };
        let difference = l.minus(r);
        let [(a, sign_a), (b, sign_b)] = difference.terms.as_slice() else {
            continue;
        };
        if sign_a + sign_b != 0 || sign_a.abs() != 1 {
            continue;
        }
        let (Some(sa), Some(sb)) = (side(&schemas, a), side(&schemas, b)) else {
            continue;
        };
        if sa == sb || !is_time(schemas[sa], a) || !is_time(schemas[sb], b) {
            continue;
        }
        let sides = [&join.left, &join.right];
        let column = |s: usize, c: &Column| {
            let computed = || {
                PipelineError::Unsupported(format!(
                    "a join bounds its inputs' own time columns: '{}' is computed",
                    c.name
                ))
            };
            if !passes_through(sides[s], &c.name) {
                return Err(computed());
            }
            inputs[s].rows.index_of(&c.name).map_err(|_| computed())
        };
        note(sa, column(sa, a)?)?;
        note(sb, column(sb, b)?)?;
        // `difference` is `±(t_right - t_left) + constant`, compared with 0.
        let right_sign = match sa {
            1 => *sign_a,
            _ => *sign_b,
        };
        let (op, k) = match right_sign {
            1 => (*op, -difference.constant),
            _ => (flipped(*op), difference.constant),
        };
        match op {
            Operator::Lt | Operator::LtEq => hi = Some(hi.map_or(k, |h| h.min(k))),
            Operator::Gt | Operator::GtEq => lo = Some(lo.map_or(k, |l| l.max(k))),
            Operator::Eq => {
                hi = Some(hi.map_or(k, |h| h.min(k)));
                lo = Some(lo.map_or(k, |l| l.max(k)));
            }
            _ => {}
        }
    }
    match (times, lo, hi) {
        ([Some(left), Some(right)], Some(lo), Some(hi)) => Ok(([left, right], lo, hi)),
        _ => Err(PipelineError::Unsupported(
            "a join of two streams bounds their event times, so that what each keeps waiting \
             for the other is bounded: ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '…' AND \
             a.ts + INTERVAL '…', or both in one window (TUMBLE / HOP … ON a.window_start = \
             b.window_start)"
                .into(),
        )),
    }
}

/// Whether column `name` of `plan` (a join's input) is its input's column of that name, as
/// read: not computed, nor renamed, on the way.
fn passes_through(plan: &LogicalPlan, name: &str) -> bool {
    match plan {
        LogicalPlan::TableScan(_) => true,
        LogicalPlan::Projection(projection) => {
            projection.expr.iter().any(|e| match e {
                Expr::Column(c) => c.name == name,
                _ => false,
            }) && plan
                .inputs()
                .first()
                .is_some_and(|input| passes_through(input, name))
        }
        LogicalPlan::SubqueryAlias(_) | LogicalPlan::Filter(_) => plan
            .inputs()
            .first()
            .is_some_and(|input| passes_through(input, name)),
        _ => false,
    }
}

/// `x BETWEEN low AND high` as its two comparisons; any other condition as it is.
fn between(condition: &Expr) -> Vec<Expr> {
    match condition {
        Expr::Between(b) if !b.negated => vec![
            b.expr.as_ref().clone().gt_eq(b.low.as_ref().clone()),
            b.expr.as_ref().clone().lt_eq(b.high.as_ref().clone()),
        ],
        other => vec![other.clone()],
    }
}

/// The comparison that holds with its sides swapped.
fn flipped(op: Operator) -> Operator {
    match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        other => other,
    }
}

/// The side (0: left, 1: right) whose columns hold `column`.
fn side(schemas: &[&DFSchema; 2], column: &Column) -> Option<usize> {
    (0..2).find(|&s| schemas[s].has_column(column))
}

fn is_time(schema: &DFSchema, column: &Column) -> bool {
    schema
        .qualified_field_from_column(column)
        .is_ok_and(|(_, f)| matches!(f.data_type(), DataType::Timestamp(_, _)))
}

/// `window_start` or `window_end`, as a column.
fn window_column(expr: &Expr) -> Option<&Column> {
    match strip(expr) {
        Expr::Column(c) if c.name == WINDOW_START || c.name == WINDOW_END => Some(c),
        _ => None,
    }
}

/// `expr` without aliases, and without casts that keep every microsecond of a time (to a
/// timestamp of µs or finer): a cast to a date or a second would make `=` mean "the same day".
fn strip(expr: &Expr) -> &Expr {
    let keeps_micros = |t: &DataType| {
        matches!(
            t,
            DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _)
        )
    };
    match expr {
        Expr::Alias(a) => strip(&a.expr),
        Expr::Cast(c) if keeps_micros(c.field.data_type()) => strip(&c.expr),
        Expr::TryCast(c) if keeps_micros(c.field.data_type()) => strip(&c.expr),
        e => e,
    }
}

/// Time arithmetic of a join's condition: `Σ sign · column + constant` (µs).
#[derive(Debug, Default)]
struct Linear {
    terms: Vec<(Column, i64)>,
    constant: Micros,
}

impl Linear {
    fn minus(mut self, other: Linear) -> Linear {
        for (column, sign) in other.terms {
            match self.terms.iter_mut().find(|(c, _)| *c == column) {
                Some((_, s)) => *s -= sign,
                None => self.terms.push((column, -sign)),
            }
        }
        self.terms.retain(|(_, s)| *s != 0);
        self.constant -= other.constant;
        self
    }

    fn plus(self, other: Linear) -> Linear {
        self.minus(Linear {
            terms: other.terms.into_iter().map(|(c, s)| (c, -s)).collect(),
            constant: -other.constant,
        })
    }
}

fn linear(expr: &Expr) -> Option<Linear> {
    match strip(expr) {
        Expr::Column(c) => Some(Linear {
            terms: vec![(c.clone(), 1)],
            constant: 0,
        }),
        Expr::Literal(value, _) => Some(Linear {
            terms: Vec::new(),
            constant: micros(value)?,
        }),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (l, r) = (linear(left)?, linear(right)?);
            match op {
                Operator::Plus => Some(l.plus(r)),
                Operator::Minus => Some(l.minus(r)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// An interval or duration in µs (none for months: they vary in length).
fn micros(value: &ScalarValue) -> Option<Micros> {
    const DAY: i64 = 86_400_000_000;
    Some(match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            v.days as i64 * DAY + v.nanoseconds / 1000
        }
        ScalarValue::IntervalDayTime(Some(v)) => v.days as i64 * DAY + v.milliseconds as i64 * 1000,
        ScalarValue::DurationSecond(Some(v)) => v * 1_000_000,
        ScalarValue::DurationMillisecond(Some(v)) => v * 1000,
        ScalarValue::DurationMicrosecond(Some(v)) => *v,
        ScalarValue::DurationNanosecond(Some(v)) => v / 1000,
        _ => return None,
    })
}
