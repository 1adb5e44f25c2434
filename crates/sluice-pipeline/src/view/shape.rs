//! What a view's query may be, and the table it gives.
//!
//! A stream is unbounded and arrives in rounds: shapes whose answer depends on seeing it whole,
//! or on the order rounds fall in, cannot be kept correctly and are refused when the view is
//! created, with the reason — ORDER BY, LIMIT, window functions (`OVER`) but those ranking a
//! windowed aggregate's groups per window (Top-N per window), set operations, more than one
//! aggregation, more than two inputs (two are joined within a time bound:
//! `super::join`), an updating view that does not select its group's columns (the upsert could
//! not find its rows). The view's table holds the query's columns in the types Delta keeps.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::input::InputTable;
use crate::{PipelineError, Result};

/// What the optimized plan reads, once it is known to be a shape a view can keep.
pub(super) struct Inspected {
    /// The inputs it reads: one, or the two sides of a join.
    pub inputs: Vec<InputTable>,
    pub reads_tables: bool,
    /// How many aggregations it has (at most one).
    pub aggregates: usize,
    /// Whether window functions rank its aggregate's groups per window (Top-N per window):
    /// only a windowed view may, whose windows' groups are all written in one round.
    pub ranked: bool,
}

pub(super) fn inspect(plan: &LogicalPlan) -> Result<Inspected> {
    let mut inputs = Vec::new();
    let mut reads_tables = false;
    let mut aggregates = 0;
    let mut ranked = false;
    let mut refusal = None;
    plan.apply_with_subqueries(|node| {
        let refuse = match node {
            LogicalPlan::TableScan(scan) => {
                let provider: Arc<dyn TableProvider> = source_as_provider(&scan.source)?;
                match (provider.as_ref() as &dyn Any).downcast_ref::<InputTable>() {
                    Some(input) => inputs.push(input.clone()),
                    None => reads_tables = true,
                }
                None
            }
            LogicalPlan::Aggregate(_) => {
                aggregates += 1;
                None
            }
            LogicalPlan::Sort(_) => {
                Some("ORDER BY: a view's rows have no order; order them when you query it")
            }
            LogicalPlan::Limit(_) => Some("LIMIT: a view keeps every row its query gives"),
            LogicalPlan::Window(window) if per_window(window) => {
                ranked = true;
                None
            }
            LogicalPlan::Window(_) => Some(
                "window functions (OVER …) but over a windowed aggregate's groups, partitioned \
                 by its window (RANK() OVER (PARTITION BY window_start ORDER BY count(*) DESC)); \
                 for windows of events use TUMBLE, HOP or SESSION in FROM",
            ),
            LogicalPlan::Union(_) => Some("UNION: create a view for each part"),
            LogicalPlan::RecursiveQuery(_) => Some("recursive queries"),
            LogicalPlan::Distinct(_) => Some("DISTINCT ON"),
            LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Extension(_) => Some("statements other than SELECT"),
            _ => None,
        };
        if let Some(what) = refuse {
            refusal = Some(what);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(what) = refusal {
        return Err(PipelineError::Unsupported(format!(
            "a materialized view cannot hold {what}"
        )));
    }
    if aggregates > 1 {
        return Err(PipelineError::Unsupported(
            "a materialized view aggregates once: make a view of the first aggregation and \
             query it"
                .into(),
        ));
    }
    match inputs.len() {
        1 | 2 => Ok(Inspected {
            inputs,
            reads_tables,
            aggregates,
            ranked,
        }),
        0 => Err(PipelineError::Unsupported(
            "a materialized view reads a stream or a view: FROM stream, or TUMBLE / HOP / \
             SESSION(stream, …)"
                .into(),
        )),
        _ => Err(PipelineError::Unsupported(
            "a materialized view reads one stream or view, or joins two streams".into(),
        )),
    }
}

/// Whether every function of `window` is over an aggregate's groups and partitioned by their
/// window (`window_start` or `window_end`): all of a window's groups close in one round, so a
/// round's groups hold each window they rank whole.
fn per_window(window: &datafusion::logical_expr::Window) -> bool {
    let over_groups = window
        .input
        .exists(|n| Ok(matches!(n, LogicalPlan::Aggregate(_))))
        .unwrap_or(false);
    over_groups
        && window
            .window_expr
            .iter()
            .all(|e| match e.clone().unalias_nested().data {
                Expr::WindowFunction(f) => f.params.partition_by.iter().any(|p| {
                    matches!(p, Expr::Column(c) if c.name == super::window::WINDOW_START
                    || c.name == super::window::WINDOW_END)
                }),
                _ => false,
            })
}

/// An updating view's output columns that hold its group's values, in the group's order.
pub(super) fn updating_keys(plan: &LogicalPlan) -> Result<Vec<String>> {
    let missing = || {
        PipelineError::Unsupported(
            "an updating view (GROUP BY without a window) selects each of its GROUP BY columns \
             as it is, so that each key's row can be updated in place"
                .into(),
        )
    };
    let keys = key_columns(plan).ok_or_else(missing)?;
    let schema: &DFSchemaRef = plan.schema();
    keys.iter()
        .map(|c| {
            schema
                .index_of_column(c)
                .map(|i| schema.field(i).name().clone())
                .map_err(|_| missing())
        })
        .collect()
}

/// The columns of `plan`'s output that are its aggregate's group values, if all are.
fn key_columns(plan: &LogicalPlan) -> Option<Vec<Column>> {
    match plan {
        LogicalPlan::Aggregate(aggregate) => Some(
            (0..aggregate.group_expr.len())
                .map(|i| {
                    let (qualifier, field) = aggregate.schema.qualified_field(i);
                    Column::new(qualifier.cloned(), field.name())
                })
                .collect(),
        ),
        LogicalPlan::Filter(filter) => key_columns(&filter.input),
        LogicalPlan::SubqueryAlias(alias) => Some(
            key_columns(&alias.input)?
                .into_iter()
                .map(|c| Column::new(Some(alias.alias.clone()), c.name))
                .collect(),
        ),
        LogicalPlan::Projection(projection) => key_columns(&projection.input)?
            .into_iter()
            .map(|key| {
                let at = projection
                    .expr
                    .iter()
                    .position(|e| matches!(strip_alias(e), Expr::Column(c) if *c == key))?;
                let (qualifier, field) = projection.schema.qualified_field(at);
                Some(Column::new(qualifier.cloned(), field.name()))
            })
            .collect(),
        _ => None,
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(alias) => strip_alias(&alias.expr),
        e => e,
    }
}

/// The view table's schema: the query's columns in types Delta holds (no string views, no
/// unsigned integers, timestamps in microseconds), every column nullable (as a table created by
/// a query has them).
pub(super) fn lake_schema(output: &SchemaRef) -> Result<SchemaRef> {
    let fields = output
        .fields()
        .iter()
        .map(|f| {
            let data_type = lake_type(f.data_type()).ok_or_else(|| {
                PipelineError::Unsupported(format!(
                    "column '{}' is {}, which a lake table cannot hold: cast it",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(Field::new(f.name(), data_type, true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

pub(crate) fn lake_type(t: &DataType) -> Option<DataType> {
    Some(match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Timestamp(_, zone) => {
            DataType::Timestamp(TimeUnit::Microsecond, zone.as_ref().map(|_| "UTC".into()))
        }
        DataType::Dictionary(_, value) => lake_type(value)?,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => DataType::List(Arc::new(Field::new(
            f.name(),
            lake_type(f.data_type())?,
            true,
        ))),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Some(Field::new(f.name(), lake_type(f.data_type())?, true)))
                .collect::<Option<Vec<_>>>()?
                .into(),
        ),
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Date32
        | DataType::Decimal128(_, _) => t.clone(),
        DataType::Date64 => DataType::Date32,
        _ => return None,
    })
}
