//! Temporal joins: each row of a stream with the version of another stream's row, by key,
//! that was valid at the row's time — an order with the exchange rate of its currency at the
//! time of the order, a payment with its merchant's risk tier then.
//!
//! ```text
//!  FROM orders o [LEFT] JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency
//!
//!  round:  new rows of o ─► late? ─► held until rates' watermark passes their ts ─┐
//!          new rows of r ─► late? ─► versions, by key ───────────────────────────┴─► each row
//!              of o with its key's latest version at or before its ts (LEFT: or none)
//!              ─► ON ─► the query above the join ─► <view>
//!          versions no row can still need (a newer one of the key at or before o's
//!              watermark, and the oldest row of o held) ─► dropped
//! ```
//!
//! **A version is valid from its own event time** (the versioned stream's `event_time`) until
//! the key's next version, never from when Sluice received it: a stream replayed or backfilled
//! joins the versions it joined the first time. The key is the versioned stream's columns the
//! ON condition equates with the other side's (`o.currency = r.currency`); the rest of ON is
//! checked on the row and the version found, as Flink does.
//!
//! **When a row is joined.** A row at `t` is joined once the versions' watermark passes `t`:
//! every version at or before `t` has come by then, or is late (to the errors table, as a late
//! row of either side). An idle versioned stream follows the other's watermark, so a rarely
//! updated table does not hold rows back beyond the idle timeout. Ties at one instant go by the
//! log's order (a change stream's: by `_version` first). A late version goes to the errors
//! table: the rows already joined keep the version they found, and the rows to come see it.
//!
//! **State**: the rows waiting for the versions' watermark, and per key the versions that a
//! row may still need: the latest at or before the oldest time a row can still have (the other
//! side's watermark, or an older row held), and every later one. A key's latest version stays
//! for good, as a table's row does. Of each side's rows only the columns the query reads (as
//! DataFusion pushed them down to the scans) are held and paired: the others are NULL to the
//! query above the join, which reads none of them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, not, take};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Schema, SchemaRef, TimestampMicrosecondType,
};
use arrow::row::{RowConverter, SortField};
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Cast, Expr, ExprSchemable, Join as JoinNode, JoinType, LogicalPlan,
    LogicalPlanBuilder, Operator,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use sluice_sql::{AsOf, StreamDefinition};

use super::input::{InputTable, feed};
use super::join::{Join, SidesRead};
use super::state::State;
use super::watermark::Micros;
use crate::decode::{OP, SEQ, SHARD, SOURCE_TS, UNCHANGED, VERSION};
use crate::error::refused;
use crate::{PipelineError, Result};

/// The versions side of a temporal join, planned: how a row finds its version, and the query
/// the pairs go through.
pub struct Temporal {
    /// LEFT: a row without a valid version is written, padded with NULLs.
    keeps_unmatched: bool,
    /// The versions are a change stream's changes: deletes and truncates end a version.
    change: Option<Change>,
    /// Per key column of the versions, the other side's expression it is equated with, over
    /// that side's rows, in the type ON compares them in…
    probe_key: Vec<Arc<dyn PhysicalExpr>>,
    /// … and the key column, in that type, over the versions' rows.
    version_key: Vec<Arc<dyn PhysicalExpr>>,
    /// The join's whole ON condition, over a row and its version side by side.
    on: Arc<dyn PhysicalExpr>,
    /// A row and its version side by side, as the plan's leaf takes them.
    pairs: SchemaRef,
    /// The query with the join replaced by the pairs: what pairs are written as.
    plan: Arc<dyn ExecutionPlan>,
    /// Each side's time column among the columns kept.
    times: [usize; 2],
    /// The columns of each side's rows kept (see [`super::join::Side::kept`]).
    pub kept: [Vec<usize>; 2],
}

/// The stream `plan` (a join's side) reads versioned (`FOR SYSTEM_TIME AS OF`), and the other
/// side's column the versions are taken at.
pub fn versioned(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => versioned(&alias.input),
        LogicalPlan::TableScan(scan) => match AsOf::parse_name(scan.table_name.table()) {
            Some((_, AsOf::SystemTime(column))) => Some(column),
            _ => None,
        },
        _ => plan.inputs().into_iter().find_map(versioned),
    }
}

impl Temporal {
    /// Plans the temporal join of `logical` (the query as SQL gave it): `inputs` are its
    /// sides, the right one (the stream `definition` defines) read as of the left's column
    /// `as_of`; `optimized` is the join as DataFusion optimized it (which says the columns
    /// the query reads). Returns it with each side's time column.
    pub(super) async fn new(
        state: &SessionState,
        logical: &LogicalPlan,
        optimized: &JoinNode,
        inputs: [&InputTable; 2],
        as_of: &str,
        definition: &StreamDefinition,
    ) -> Result<(Self, [usize; 2])> {
        let join = super::join::joining(logical)?;
        let kind = join.join_type;
        if !matches!(kind, JoinType::Inner | JoinType::Left) {
            return Err(PipelineError::Unsupported(format!(
                "a {kind} temporal join: each row of a stream meets the version valid at its \
                 time, INNER or LEFT"
            )));
        }
        for side in [&join.left, &join.right] {
            if !as_read(side) {
                return Err(PipelineError::Unsupported(
                    "a temporal join reads each stream as it is (FROM o JOIN rates FOR \
                     SYSTEM_TIME AS OF o.ts AS r ON …), not windowed or through a subquery"
                        .into(),
                ));
            }
        }
        let [left, right] = [join.left.schema(), join.right.schema()];
        let time = Column::from_qualified_name(as_of);
        let probe_time = match left.index_of_column(&time) {
            Ok(i) if matches!(left.field(i).data_type(), DataType::Timestamp(_, _)) => i,
            Ok(_) => {
                return Err(PipelineError::Unsupported(format!(
                    "FOR SYSTEM_TIME AS OF takes a TIMESTAMP column: '{as_of}' is {}",
                    left.field(left.index_of_column(&time)?).data_type()
                )));
            }
            Err(_) => {
                return Err(PipelineError::Unsupported(format!(
                    "FOR SYSTEM_TIME AS OF names a time column of the stream joined with the \
                     versions (the join's left side): '{as_of}' is not one"
                )));
            }
        };
        let versions = inputs[1].source.name();
        let changes = definition.format.is_change();
        // A change's time is its event time if declared, else when the source made it.
        let time_column = match (&definition.event_time, changes) {
            (Some(column), _) => Some(column.as_str()),
            (None, true) => Some(SOURCE_TS),
            (None, false) => None,
        };
        let version_time = time_column
            .and_then(|name| inputs[1].rows.index_of(name).ok())
            .ok_or_else(|| {
                PipelineError::Unsupported(format!(
                    "stream '{versions}' has no event_time: each of its rows is a version valid \
                     from its event time"
                ))
            })?;
        // The whole ON condition (USING's columns, then ON's).
        let mut conditions: Vec<Expr> = (join.on.iter())
            .map(|(l, r)| l.clone().eq(r.clone()))
            .collect();
        if let Some(filter) = &join.filter {
            conditions.extend(split_conjunction(filter).into_iter().cloned());
        }
        // Each column of the versions that ON equates with the other side's.
        let mut equated = Vec::new();
        for condition in &conditions {
            let Expr::BinaryExpr(BinaryExpr {
                left: a,
                op: Operator::Eq,
                right: b,
            }) = condition
            else {
                continue;
            };
            for (probe, version) in [(a, b), (b, a)] {
                let Expr::Column(column) = version.as_ref().clone().unalias_nested().data else {
                    continue;
                };
                let Ok(index) = right.index_of_column(&column) else {
                    continue;
                };
                let refs = probe.column_refs();
                if !refs.is_empty() && refs.iter().all(|c| left.has_column(c)) {
                    equated.push((index, probe.as_ref().clone()));
                    break;
                }
            }
        }
        // A change stream's versions are its rows' (its primary key's); any other stream's, of
        // the columns ON equates.
        let key: Vec<(usize, Expr)> = match changes {
            true => (definition.primary_key.iter())
                .map(|column| {
                    let index = inputs[1].rows.index_of(column).ok();
                    (equated.iter())
                        .find(|(i, _)| Some(*i) == index)
                        .cloned()
                        .ok_or_else(|| {
                            PipelineError::Unsupported(format!(
                                "a temporal join finds a row's version by the primary key of \
                                 change stream '{versions}': ON equates each of its columns \
                                 ({}) with the other side's",
                                definition.primary_key.join(", ")
                            ))
                        })
                })
                .collect::<Result<_>>()?,
            false => equated,
        };
        if key.is_empty() {
            return Err(PipelineError::Unsupported(format!(
                "a temporal join finds a row's version by key: ON equates columns of \
                 '{versions}' with the other side's (ON o.currency = r.currency)"
            )));
        }
        // The columns held and paired: those the query reads (as DataFusion pushed them down
        // to the scans), ON's, the times, and what orders and tells the versions.
        let on = conditions
            .into_iter()
            .reduce(Expr::and)
            .expect("a key equality at least");
        let mut kept = [
            read_columns(&optimized.left),
            read_columns(&optimized.right),
        ];
        for column in on.column_refs() {
            for (side, schema) in [left, right].into_iter().enumerate() {
                if let Ok(i) = schema.index_of_column(column) {
                    kept[side].push(i);
                }
            }
        }
        let mut named = [vec![SHARD, SEQ], vec![SHARD, SEQ]];
        if changes {
            named[1].extend([OP, VERSION, UNCHANGED]);
        }
        for (side, time) in [(0, probe_time), (1, version_time)] {
            kept[side].push(time);
            for name in &named[side] {
                kept[side].push(inputs[side].rows.index_of(name)?);
            }
            kept[side].sort_unstable();
            kept[side].dedup();
        }
        let kept_schema = |side: usize, schema: &DFSchema| {
            let fields = (kept[side].iter())
                .map(|&i| {
                    let (qualifier, field) = schema.qualified_field(i);
                    (qualifier.cloned(), field.clone())
                })
                .collect();
            DFSchema::new_with_metadata(fields, Default::default())
        };
        let [left, right] = [kept_schema(0, left)?, kept_schema(1, right)?];
        let position = |side: usize, i: usize| kept[side].iter().position(|&k| k == i);
        // Both sides of each equality as ON compares them: in the type it coerces both to.
        let mut probe_key = Vec::with_capacity(key.len());
        let mut version_key = Vec::with_capacity(key.len());
        for (index, probe) in &key {
            let field = inputs[1].rows.field(*index);
            let column = Expr::Column(Column::from(
                right.qualified_field(position(1, *index).expect("ON's columns are kept")),
            ));
            let (a, b) = (probe.get_type(&left)?, field.data_type());
            let common = comparison_coercion(&a, b).ok_or_else(|| {
                PipelineError::Unsupported(format!(
                    "a temporal join's key compares {a} with {b}, which do not compare"
                ))
            })?;
            let cast = |e: Expr| Expr::Cast(Cast::new(Box::new(e), common.clone()));
            probe_key.push(create(state, cast(probe.clone()), &left)?);
            version_key.push(create(state, cast(column), &right)?);
        }
        let change = match changes {
            true => Some(Change::new(right.as_arrow())?),
            false => None,
        };
        let both = left.join(&right).map_err(refused)?;
        let on = create(state, on, &both)?;
        // The pairs' columns are those kept of the join's, renamed apart (both sides may have
        // a `ts`), then named as the join names them for the query above; the others are NULL.
        let width = inputs[0].rows.fields().len();
        let out = |side: usize, i: usize| join.schema.field(side * width + i);
        let pairs = Arc::new(Schema::new(
            (0..2)
                .flat_map(|side| kept[side].iter().map(move |&i| (side, i)))
                .zip(both.iter())
                .map(|((side, i), (qualifier, field))| {
                    let name = match qualifier {
                        Some(q) => format!("{q}.{}", field.name()),
                        None => field.name().clone(),
                    };
                    Field::new(name, field.data_type().clone(), out(side, i).is_nullable())
                })
                .collect::<Vec<_>>(),
        ));
        let mut paired = Vec::with_capacity(join.schema.fields().len());
        for (p, (qualifier, field)) in join.schema.iter().enumerate() {
            let (side, i) = if p < width { (0, p) } else { (1, p - width) };
            let value = match position(side, i) {
                Some(k) => {
                    let k = if side == 0 { k } else { kept[0].len() + k };
                    Expr::Column(Column::new_unqualified(pairs.field(k).name()))
                }
                None => Expr::Literal(ScalarValue::try_from(field.data_type())?, None),
            };
            paired.push(value.alias_qualified(qualifier.cloned(), field.name()));
        }
        let leaf = InputTable {
            source: inputs[0].source.clone(),
            schema: pairs.clone(),
            rows: pairs.clone(),
            window: None,
        };
        let scan =
            LogicalPlanBuilder::scan("temporal_join", provider_as_source(Arc::new(leaf)), None)?
                .project(paired)?
                .build()?;
        let query = super::join::replace_join(logical, |_| Ok(scan.clone()))?;
        let plan = state.create_physical_plan(&query).await.map_err(refused)?;
        let times = [
            position(0, probe_time).expect("the time is kept"),
            position(1, version_time).expect("the time is kept"),
        ];
        Ok((
            Temporal {
                keeps_unmatched: kind == JoinType::Left,
                change,
                probe_key,
                version_key,
                on,
                pairs,
                plan,
                times,
                kept,
            },
            [probe_time, version_time],
        ))
    }

    /// The plan a round runs.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// `versions` (in the versions' rows) by key, and in order.
    fn index(&self, versions: &RecordBatch, time: usize) -> Result<Index> {
        let n = versions.num_rows();
        let columns: Vec<ArrayRef> = (self.version_key.iter())
            .map(|e| e.evaluate(versions).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?;
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let keys = converter.convert_columns(&columns)?;
        let times = versions
            .column(time)
            .as_primitive::<TimestampMicrosecondType>();
        let (shards, seqs) = super::join::ids(versions)?;
        // A change's `_version` orders the changes of one instant.
        let change_versions = (self.change.as_ref())
            .and_then(|_| versions.column_by_name(VERSION))
            .map(|v| v.as_primitive::<Decimal128Type>().clone());
        let mut index = Index {
            converter,
            keys: HashMap::new(),
            truncates: Vec::new(),
            order: Vec::with_capacity(versions.num_rows()),
            ended: vec![false; versions.num_rows()],
        };
        for row in 0..versions.num_rows() {
            let version = change_versions.as_ref().map_or(0, |v| v.value(row));
            let op = self.change.as_ref().map(|c| c.op(versions, row));
            index.order.push((
                times.value(row),
                version,
                shards.value(row),
                seqs.value(row),
            ));
            // Late rows (and those without a time) went to the errors table: none is here.
            if times.is_null(row) {
                continue;
            }
            match op {
                Some(Op::Truncate) => index.truncates.push(row),
                op => {
                    index.ended[row] = op == Some(Op::Delete);
                    index
                        .keys
                        .entry(keys.row(row).as_ref().to_vec())
                        .or_default()
                        .push(row)
                }
            }
        }
        let order = &index.order;
        for rows in index.keys.values_mut() {
            rows.sort_by_key(|&r| order[r]);
        }
        index.truncates.sort_by_key(|&r| order[r]);
        Ok(index)
    }
}

/// A round's versions by key, and in order.
struct Index {
    converter: RowConverter,
    /// Per key (its row's bytes), the rows of its versions, in order.
    keys: HashMap<Vec<u8>, Vec<usize>>,
    /// A change stream's truncates (every key's row ends), in order.
    truncates: Vec<usize>,
    /// Per row, where it stands: its time, then (a change) its `_version`, then the log's order.
    order: Vec<(Micros, i128, i32, i64)>,
    /// Per row, whether it ends its key's row (a change stream's delete).
    ended: Vec<bool>,
}

impl Index {
    /// The version valid at `t` of the key whose versions are `rows`: the latest at or before
    /// it, unless it ended (deleted, or truncated since).
    fn valid(&self, rows: &[usize], t: Micros) -> Option<usize> {
        let latest = rows[..rows.partition_point(|&r| self.order[r].0 <= t)].last()?;
        let truncated = (self.truncates.iter())
            .take_while(|&&r| self.order[r].0 <= t)
            .any(|&r| self.order[r] > self.order[*latest]);
        (!self.ended[*latest] && !truncated).then_some(*latest)
    }

    /// Which rows a round keeps: those a row at `oldest` or later may still need, no version
    /// older than `settled` (the versions' watermark) coming but late.
    fn needed(&self, rows: usize, oldest: Option<Micros>, settled: Option<Micros>) -> BooleanArray {
        let mut keep = vec![false; rows];
        let from = |rows: &[usize]| {
            oldest.map_or(0, |t| {
                rows.iter()
                    .rposition(|&r| self.order[r].0 <= t)
                    .unwrap_or(0)
            })
        };
        for rows in self.keys.values() {
            let mut from = from(rows);
            // A delete that no row can see past, and that no change before it can still come
            // to: as if the key had no version.
            let past = |t: Micros| oldest.is_some_and(|o| t <= o) && settled.is_some_and(|s| t < s);
            if from < rows.len() && self.ended[rows[from]] && past(self.order[rows[from]].0) {
                from += 1;
            }
            rows[from..].iter().for_each(|&r| keep[r] = true);
        }
        let from = from(&self.truncates);
        self.truncates[from..].iter().for_each(|&r| keep[r] = true);
        BooleanArray::from(keep)
    }
}

/// A change stream's columns that say what a change does.
struct Change {
    /// `_op`.
    op: usize,
    /// `_unchanged`: the columns a change did not send.
    unchanged: usize,
}

/// What a change does to the version of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Makes a new version (an insert, an update, a snapshot's read).
    Version,
    /// Ends the key's row.
    Delete,
    /// Ends every key's row.
    Truncate,
}

impl Change {
    fn new(rows: &Schema) -> Result<Self> {
        Ok(Change {
            op: rows.index_of(OP)?,
            unchanged: rows.index_of(UNCHANGED)?,
        })
    }

    fn op(&self, rows: &RecordBatch, row: usize) -> Op {
        match rows.column(self.op).as_string::<i32>().value(row) {
            "d" => Op::Delete,
            "t" => Op::Truncate,
            _ => Op::Version,
        }
    }

    /// `versions` with the values each change did not send taken from its key's previous
    /// version (as the mirror keeps its own).
    fn filled(&self, versions: &RecordBatch, index: &Index) -> Result<RecordBatch> {
        let unchanged = versions.column(self.unchanged).as_string::<i32>();
        if unchanged.null_count() == unchanged.len() {
            return Ok(versions.clone());
        }
        // Per column filled, where each row takes its value from.
        let mut from: HashMap<usize, Vec<u32>> = HashMap::new();
        for rows in index.keys.values() {
            for (previous, &row) in rows.iter().zip(&rows[1..]) {
                // (A change after a delete is an insert: it sends every value.)
                if unchanged.is_null(row) || index.ended[*previous] {
                    continue;
                }
                let names: Vec<String> =
                    serde_json::from_str(unchanged.value(row)).unwrap_or_default();
                for column in names
                    .iter()
                    .filter_map(|n| versions.schema().index_of(n).ok())
                {
                    let sources = from
                        .entry(column)
                        .or_insert_with(|| (0..versions.num_rows() as u32).collect());
                    sources[row] = sources[*previous];
                }
            }
        }
        let mut columns = versions.columns().to_vec();
        for (column, sources) in from {
            columns[column] = take(&columns[column], &UInt32Array::from(sources), None)?;
        }
        Ok(RecordBatch::try_new(versions.schema(), columns)?)
    }
}

impl Temporal {
    /// A round's pairs written, and the rows each side holds after it (as rows of the state).
    pub(super) async fn round(
        &self,
        join: &Join,
        state: &State,
        read: &SidesRead,
        task: &Arc<TaskContext>,
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let [probe_time, version_time] = self.times;
        let (held, _) = join.held(&state.groups, 0)?;
        let new = read.new[0].project(&self.kept[0])?;
        let probes = concat_batches(&held.schema(), [&held, &new])?;
        // A late version is in the errors table, and no row already joined sees it; a row to
        // come does.
        let (held, _) = join.held(&state.groups, 1)?;
        let new = read.all[1].project(&self.kept[1])?;
        let versions = concat_batches(&held.schema(), [&held, &new])?;
        let index = self.index(&versions, version_time)?;
        let versions = match &self.change {
            Some(change) => change.filled(&versions, &index)?,
            None => versions,
        };

        // Rows the versions' watermark has passed are joined now; the others wait.
        let times = probes
            .column(probe_time)
            .as_primitive::<TimestampMicrosecondType>();
        let passed = read.marks[1].current();
        let ready: BooleanArray = times
            .iter()
            .map(|t| Some(passed.is_some_and(|w| t.is_some_and(|t| t < w))))
            .collect();
        let joined = filter_record_batch(&probes, &ready)?;
        let waiting = filter_record_batch(&probes, &not(&ready)?)?;
        let mut rows = Vec::new();
        if joined.num_rows() > 0 {
            let pairs = self.pair(&joined, probe_time, &versions, &index)?;
            if pairs.num_rows() > 0 {
                rows = collect(feed(&self.plan, &[pairs])?, task.clone()).await?;
            }
        }

        // A version stays while a row may need it: a row can still be as old as the other
        // side's watermark (before it has one: of any time), or as an older row waiting.
        let oldest =
            (read.marks[0].current()).map(|w| oldest(&waiting, probe_time).map_or(w, |t| w.min(t)));
        let needed = index.needed(versions.num_rows(), oldest, read.marks[1].current());
        let kept = filter_record_batch(&versions, &needed)?;
        let unmatched = |rows: &RecordBatch| BooleanArray::from(vec![false; rows.num_rows()]);
        let groups = vec![
            join.holding(0, &waiting, unmatched(&waiting))?,
            join.holding(1, &kept, unmatched(&kept))?,
        ];
        Ok((rows, groups))
    }

    /// Each of `rows` (their time column `time`) beside its key's version valid at its time,
    /// when ON holds of the two; beside NULLs when not (LEFT), or left out (INNER). In the
    /// pairs' schema.
    fn pair(
        &self,
        rows: &RecordBatch,
        time: usize,
        versions: &RecordBatch,
        index: &Index,
    ) -> Result<RecordBatch> {
        let n = rows.num_rows();
        let keys: Vec<ArrayRef> = (self.probe_key.iter())
            .map(|e| e.evaluate(rows).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?;
        let no_key = |i: usize| keys.iter().any(|k| k.is_null(i));
        let converted = index.converter.convert_columns(&keys)?;
        let times = rows.column(time).as_primitive::<TimestampMicrosecondType>();
        let found: UInt32Array = (0..n)
            .map(|i| {
                let versions = index
                    .keys
                    .get(converted.row(i).as_ref())
                    .filter(|_| !no_key(i))?;
                index.valid(versions, times.value(i)).map(|v| v as u32)
            })
            .collect();
        let side_by_side = |rows: &RecordBatch, found: &UInt32Array| -> Result<Vec<ArrayRef>> {
            let mut columns = rows.columns().to_vec();
            for column in versions.columns() {
                columns.push(take(column, found, None)?);
            }
            Ok(columns)
        };
        let both = Arc::new(Schema::new(
            (rows.schema().fields().iter())
                .chain(versions.schema().fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let candidate = RecordBatch::try_new(both, side_by_side(rows, &found)?)?;
        let holds = self.on.evaluate(&candidate).and_then(|v| v.into_array(n))?;
        let holds = holds.as_boolean();
        let matched: UInt32Array = (0..n)
            .map(|i| {
                let holds = holds.is_valid(i) && holds.value(i);
                found.is_valid(i).then(|| found.value(i)).filter(|_| holds)
            })
            .collect();
        // The versions are taken again only for rows whose version fails ON (LEFT: NULLs).
        let pairs = match matched.null_count() == found.null_count() {
            true => candidate,
            false => RecordBatch::try_new(candidate.schema(), side_by_side(rows, &matched)?)?,
        };
        let pairs = match self.keeps_unmatched {
            true => pairs,
            false => filter_record_batch(&pairs, &arrow::compute::is_not_null(&matched)?)?,
        };
        Ok(RecordBatch::try_new(
            self.pairs.clone(),
            pairs.columns().to_vec(),
        )?)
    }
}

/// The oldest event time among `rows`.
fn oldest(rows: &RecordBatch, time: usize) -> Option<Micros> {
    arrow::compute::min(rows.column(time).as_primitive::<TimestampMicrosecondType>())
}

/// The columns of its input `plan` (a join's side, optimized) reads: all, unless a projection
/// was pushed into its scan.
fn read_columns(plan: &LogicalPlan) -> Vec<usize> {
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .projection
            .clone()
            .unwrap_or_else(|| (0..scan.source.schema().fields().len()).collect()),
        _ => plan
            .inputs()
            .first()
            .map_or_else(Vec::new, |p| read_columns(p)),
    }
}

/// `expr` over `schema`, as it runs.
fn create(state: &SessionState, expr: Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    state.create_physical_expr(expr, schema).map_err(refused)
}

/// Whether `plan` (a join's side) reads its input as it is: no window, subquery or filter.
fn as_read(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => as_read(&alias.input),
        LogicalPlan::TableScan(scan) => {
            scan.filters.is_empty()
                && datafusion::catalog::default_table_source::source_as_provider(&scan.source)
                    .ok()
                    .and_then(|p| {
                        (p.as_ref() as &dyn std::any::Any)
                            .downcast_ref::<InputTable>()
                            .map(|t| t.window.is_none())
                    })
                    .unwrap_or(false)
        }
        _ => false,
    }
}
