//! Planning a view: its query, through DataFusion, cut into the parts a round runs.
//!
//! ```text
//!  SELECT … FROM TUMBLE(ticks, ts, …) [JOIN table] WHERE … GROUP BY …, window_start, window_end HAVING …
//!  └── post: above the aggregate ──┘  └──────── pre: below the aggregate, fed each round's rows ────────┘
//!
//!  round:  rows ─► pre ─► Partial aggregate ─► partial states ─┐
//!          state (partial states of open groups) ──────────────┴─► PartialReduce ─► state
//!          groups done (windows the watermark passed; an updating view's changed keys)
//!                ─► Final aggregate ─► post ─► the view's table
//! ```
//!
//! DataFusion plans the whole query once; the pipeline takes its aggregate apart into
//! DataFusion's own modes — `Partial` (rows to states), `PartialReduce` (states to states) and
//! `Final` (states to values) — so every aggregate DataFusion has is incremental through its
//! accumulators' `state` / `merge_batch` / `evaluate`, and the view's state is Arrow (the
//! partial states), which a snapshot writes as it is. A view without an aggregate is `pre`
//! alone: each round's rows in, the view's rows out.
//!
//! A view joining two inputs (`FROM a JOIN b ON … within a time bound`, or `FROM a JOIN b FOR
//! SYSTEM_TIME AS OF a.ts ON …`) is a join ([`super::join`], [`super::temporal`]): its state is
//! the rows each side keeps waiting for the other.
//!
//! Shapes that a stream cannot answer correctly are refused here, when the view is created
//! (see [`super::shape`]), and so is a window that is not grouped by.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::optimizer::Optimizer;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use sluice_lake::Lake;
use sluice_log::Log;
use sluice_sql::ViewDefinition;

use super::input::{Input, InputExec, InputTable, Upstream, ViewSchema, WindowFunction, feed};
use super::join::Join;
use super::shape::{inspect, lake_schema, updating_keys};
use super::window::{WINDOW_END, WINDOW_START, Window};
use crate::error::refused;
use crate::runtime::Kind;
use crate::{PipelineError, Result};

/// A view's query, planned and cut into what a round runs.
pub struct ViewPlan {
    /// What the view reads (a stream or a view), and its window if it has one; a join's
    /// first input.
    pub input: InputTable,
    /// What the view keeps between rounds, and the plans that run each round.
    pub shape: Shape,
    /// The view table's columns.
    pub schema: SchemaRef,
    /// The query reads lake tables too: it is planned again for each round, so that a round
    /// sees their latest versions.
    pub reads_tables: bool,
    pub(super) task: Arc<TaskContext>,
}

/// What a view keeps between rounds, by its query's shape.
pub enum Shape {
    /// No aggregate: each round's rows in, the view's rows out (appended).
    Stateless(Arc<dyn ExecutionPlan>),
    /// Aggregates over event-time windows: a window's row is appended once, when the watermark
    /// passes its end.
    Windowed(Aggregation),
    /// Aggregates by key without a window: one row per key, updated in place as it changes.
    /// `keys` are the output columns holding the group's values.
    Updating {
        /// The aggregate, taken apart.
        aggregation: Aggregation,
        /// The output columns that name a row: the group's values.
        keys: Vec<String>,
    },
    /// Two inputs joined within a time bound: the rows each side holds for the other, matches
    /// appended as they are found (and, outer, rows that never matched once the watermark
    /// says none can).
    Join(Box<Join>),
}

/// An aggregate taken apart into DataFusion's aggregation modes (see the module's diagram).
pub struct Aggregation {
    /// `Partial` over the plan below the aggregate: a round's rows to partial states.
    partial: Arc<dyn ExecutionPlan>,
    /// The group by the state's columns (for `PartialReduce` and `Final`).
    group_by: Arc<PhysicalGroupBy>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// The aggregate's input columns (what its expressions were planned against).
    input_schema: SchemaRef,
    /// Partial states: the group's columns, then each aggregate's state columns.
    pub state_schema: SchemaRef,
    /// The plan above the aggregate, over the `Final` aggregate's values.
    post: Arc<dyn ExecutionPlan>,
    /// `window_start` and `window_end` among the state's group columns, if windowed.
    pub window: Option<(usize, usize)>,
    /// The group columns of the state that name a group: all of them, but for sessions the
    /// window's (a session's bounds move as it grows).
    pub keys: Vec<usize>,
    /// Session windows: a round's windows merge with a key's open ones that they overlap.
    pub session: bool,
}

impl ViewPlan {
    /// Plans `definition` over the log's streams and the lake's tables.
    pub async fn new(definition: &ViewDefinition, log: &Arc<Log>, lake: &Lake) -> Result<Self> {
        let mut query = definition.parse_query()?;
        // DataFusion looks table functions up by their exact name: TUMBLE is tumble.
        let _ = sqlparser::ast::visit_relations_mut(&mut *query, |name| {
            if let [sqlparser::ast::ObjectNamePart::Identifier(ident)] = name.0.as_mut_slice()
                && ident.quote_style.is_none()
            {
                ident.value = ident.value.to_ascii_lowercase();
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        let ctx = session(log, lake, upstream(&query, log, lake).await?)?;
        let state = ctx.state();
        let statement = sqlparser::ast::Statement::Query(query);
        let logical = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(refused)?;
        let optimized = state.optimize(&logical).map_err(refused)?;
        let inspected = inspect(&optimized)?;
        let physical = state
            .create_physical_plan(&logical)
            .await
            .map_err(refused)?;
        let task = ctx.task_ctx();
        let mut inputs = inspected.inputs;
        let input = inputs[0].clone();
        if inputs.len() == 1 && super::temporal::versioned(&logical).is_some() {
            return Err(PipelineError::Unsupported(
                "FOR SYSTEM_TIME AS OF reads a stream's versions in a temporal join: FROM o \
                 JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON …"
                    .into(),
            ));
        }
        let shape = match find_aggregate(&physical) {
            _ if inputs.len() == 2 => {
                if inspected.aggregates > 0 {
                    return Err(PipelineError::Unsupported(
                        "a view that joins two streams does not aggregate the join yet: make a \
                         view of the join, and aggregate that view"
                            .into(),
                    ));
                }
                let right = inputs.pop().expect("two inputs");
                let streams = [stream(log, &input)?, stream(log, &right)?];
                let sides = [input.clone(), right];
                let streams = [&streams[0], &streams[1]];
                Shape::Join(Box::new(
                    Join::new(&state, &logical, &optimized, sides, streams).await?,
                ))
            }
            None if input.window.is_some() => {
                return Err(PipelineError::Unsupported(
                    "a windowed view aggregates over its windows: add GROUP BY …, window_start, \
                     window_end"
                        .into(),
                ));
            }
            None => Shape::Stateless(physical),
            Some(top) => {
                let aggregation = Aggregation::new(&physical, &top, input.window.map(|w| w.0))?;
                if inspected.ranked && (input.window.is_none() || aggregation.window.is_none()) {
                    return Err(PipelineError::Unsupported(
                        "window functions (OVER …) rank the groups of a windowed view, \
                         partitioned by its window: an updating view's groups change row by row"
                            .into(),
                    ));
                }
                match (input.window, aggregation.window) {
                    (Some(_), Some(_)) => Shape::Windowed(aggregation),
                    (Some(_), None) => {
                        return Err(PipelineError::Unsupported(
                            "a windowed view groups by its window: GROUP BY …, window_start, \
                             window_end"
                                .into(),
                        ));
                    }
                    (None, _) => Shape::Updating {
                        keys: updating_keys(&optimized)?,
                        aggregation,
                    },
                }
            }
        };
        let output = match &shape {
            Shape::Stateless(plan) => plan.schema(),
            Shape::Join(join) => join.plans()[0].schema(),
            Shape::Windowed(a) | Shape::Updating { aggregation: a, .. } => a.post.schema(),
        };
        let schema = lake_schema(&output)?;
        for column in &definition.partition_by {
            if schema.field_with_name(column).is_err() {
                return Err(PipelineError::Unsupported(format!(
                    "PARTITIONED BY names no column of the view: '{column}'"
                )));
            }
        }
        Ok(ViewPlan {
            input,
            shape,
            schema,
            reads_tables: inspected.reads_tables,
            task,
        })
    }

    /// The plans a round runs, as text: what the view computes (two plans of one view are the
    /// same query when their texts are).
    pub fn explain(&self) -> String {
        let text = |plan: &Arc<dyn ExecutionPlan>| {
            datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string()
        };
        match &self.shape {
            Shape::Stateless(plan) => text(plan),
            Shape::Join(join) => join
                .plans()
                .into_iter()
                .map(text)
                .collect::<Vec<_>>()
                .join("\n"),
            Shape::Windowed(a) | Shape::Updating { aggregation: a, .. } => {
                format!("{}\n{}", text(&a.partial), text(&a.post))
            }
        }
    }

    /// The kind of view the query makes.
    pub fn kind(&self) -> Kind {
        match self.shape {
            Shape::Stateless(_) => Kind::Stateless,
            Shape::Windowed(_) => Kind::Windowed,
            Shape::Updating { .. } => Kind::Updating,
            Shape::Join(_) => Kind::Join,
        }
    }

    /// The aggregate, taken apart, of a view that aggregates.
    pub fn aggregation(&self) -> Option<&Aggregation> {
        match &self.shape {
            Shape::Stateless(_) | Shape::Join(_) => None,
            Shape::Windowed(a) | Shape::Updating { aggregation: a, .. } => Some(a),
        }
    }

    fn aggregating(&self) -> Result<&Aggregation> {
        self.aggregation()
            .ok_or_else(|| PipelineError::Internal("the view does not aggregate".into()))
    }

    /// The rows of `input` (the input's columns) through a stateless view.
    pub async fn run_stateless(&self, input: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let Shape::Stateless(plan) = &self.shape else {
            return Err(PipelineError::Internal("the view aggregates".into()));
        };
        self.to_lake(run(&feed(plan, input)?, &self.task).await?)
    }

    /// Partial states of `input`'s groups.
    pub async fn partial(&self, input: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        run(&feed(&self.aggregating()?.partial, input)?, &self.task).await
    }

    /// `states` merged: one row per group.
    pub async fn reduce(&self, states: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let plan = self
            .aggregating()?
            .over_states(AggregateMode::PartialReduce, states)?;
        run(&plan, &self.task).await
    }

    /// The view's rows of the groups in `states`: their aggregates' values, through the plan
    /// above the aggregate.
    pub async fn finish(&self, states: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        if states.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        let aggregation = self.aggregating()?;
        let values = run(
            &aggregation.over_states(AggregateMode::Final, states)?,
            &self.task,
        )
        .await?;
        self.to_lake(run(&feed(&aggregation.post, &values)?, &self.task).await?)
    }

    /// The inputs it reads: a join's two, or its one.
    pub fn inputs(&self) -> Vec<&Input> {
        match &self.shape {
            Shape::Join(join) => join.sides.iter().map(|s| &s.input.source).collect(),
            _ => vec![&self.input.source],
        }
    }

    /// Batches in the view table's schema (the lake's types; see [`super::shape`]).
    pub(super) fn to_lake(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let columns = b
                    .columns()
                    .iter()
                    .zip(self.schema.fields())
                    .map(|(c, f)| match c.data_type() == f.data_type() {
                        true => Ok(c.clone()),
                        false => arrow::compute::cast(c, f.data_type()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            })
            .collect()
    }
}

impl Aggregation {
    /// Takes apart the aggregate `top` of `physical` (the topmost; below it, a `Partial` one
    /// when DataFusion planned two phases).
    fn new(
        physical: &Arc<dyn ExecutionPlan>,
        top: &Arc<dyn ExecutionPlan>,
        window: Option<Window>,
    ) -> Result<Self> {
        let low = lowest_aggregate(top)?;
        let low = low
            .downcast_ref::<AggregateExec>()
            .ok_or_else(|| PipelineError::Internal("the aggregate is not one".into()))?;
        let group_by = low.group_expr().clone();
        if group_by.has_grouping_set() {
            return Err(PipelineError::Unsupported(
                "GROUPING SETS, ROLLUP and CUBE are not supported in views".into(),
            ));
        }
        let aggregates = low.aggr_expr().to_vec();
        let pre = low.input().clone();
        let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            group_by.clone(),
            aggregates.clone(),
            low.filter_expr().to_vec(),
            pre.clone(),
            pre.schema(),
        )?);
        let state_schema = partial.schema();
        let named = |name: &str| {
            group_by.expr().iter().position(|(e, _)| {
                e.downcast_ref::<PhysicalColumn>()
                    .is_some_and(|c| c.name() == name)
            })
        };
        let window_columns = window.and(named(WINDOW_START).zip(named(WINDOW_END)));
        let keys = (0..group_by.expr().len())
            .filter(|&i| match (window, window_columns) {
                (Some(w), Some((start, end))) if w.is_session() => i != start && i != end,
                _ => true,
            })
            .collect();
        let post = physical
            .clone()
            .transform_down(|node| {
                if std::ptr::addr_eq(Arc::as_ptr(&node), Arc::as_ptr(top)) {
                    let leaf: Arc<dyn ExecutionPlan> = Arc::new(InputExec::new(top.schema(), None));
                    return Ok(Transformed::new(leaf, true, TreeNodeRecursion::Jump));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        Ok(Self {
            partial,
            group_by: Arc::new(group_by.as_final()),
            aggregates,
            input_schema: pre.schema(),
            state_schema,
            post,
            window: window_columns,
            keys,
            session: window.is_some_and(Window::is_session),
        })
    }

    /// `PartialReduce` or `Final` over `states`.
    fn over_states(
        &self,
        mode: AggregateMode,
        states: Vec<RecordBatch>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(AggregateExec::try_new(
            mode,
            self.group_by.clone(),
            self.aggregates.clone(),
            vec![None; self.aggregates.len()],
            InputExec::holding(self.state_schema.clone(), states),
            self.input_schema.clone(),
        )?))
    }
}

async fn run(plan: &Arc<dyn ExecutionPlan>, task: &Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
    Ok(collect(plan.clone(), task.clone()).await?)
}

/// The view a query takes its rows from when it names no stream: the one view it names, which
/// must only append (stateless or windowed): rows an updating view changes in place are not
/// events.
async fn upstream(
    query: &sqlparser::ast::Query,
    log: &Log,
    lake: &Lake,
) -> Result<Option<Upstream>> {
    use sqlparser::ast::{
        Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Visit, Visitor,
    };
    /// The names a query reads: its relations, and the first argument of its table functions.
    #[derive(Default)]
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> std::ops::ControlFlow<()> {
            if let TableFactor::Table { name, args, .. } = factor {
                match args.as_ref().and_then(|a| a.args.first()) {
                    Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Identifier(i)))) => {
                        self.0.push(i.value.clone())
                    }
                    Some(_) => {}
                    None => self.0.push(name.to_string()),
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut names = Names::default();
    let _ = query.visit(&mut names);
    if names.0.iter().any(|n| log.stream(n).is_ok()) {
        return Ok(None);
    }
    let mut views = Vec::new();
    for name in names.0 {
        // A view's table (not its errors table) carries its kind.
        if let Ok(table) = lake.open(&name).await
            && table.property(super::KIND).is_some()
            && !views.iter().any(|(n, _): &(String, _)| *n == name)
        {
            views.push((name, table));
        }
    }
    let Some((name, table)) = views.pop() else {
        return Ok(None);
    };
    if !views.is_empty() {
        return Err(PipelineError::Unsupported(
            "a materialized view reads one stream or one view (joins are with lake tables)".into(),
        ));
    }
    if table.property(super::KIND).as_deref() == Some("updating") {
        return Err(PipelineError::Unsupported(format!(
            "view '{name}' is updated in place: a view reads a stream, or a view that only \
             appends (stateless or windowed)"
        )));
    }
    Ok(Some(Upstream {
        name,
        schema: crate::source::rows_schema(&table.arrow_schema()?),
    }))
}

/// The session a view is planned in: the log's streams, the upstream view and the lake's tables
/// by name, and the window functions. One partition (each source partition's rows run apart,
/// in an order that must not vary), and no rewrite of `count(DISTINCT …)` into two
/// aggregations: the view needs one.
fn session(log: &Arc<Log>, lake: &Lake, upstream: Option<Upstream>) -> Result<SessionContext> {
    // A join's inputs stay where the query puts them: its left input is the join's first.
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_default_catalog_and_schema("sluice", "public");
    config.options_mut().optimizer.join_reordering = false;
    let rules = Optimizer::new()
        .rules
        .into_iter()
        .filter(|rule| rule.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .build();
    crate::functions::register(&mut state)?;
    let ctx = SessionContext::new_with_state(state);
    let catalog = ctx
        .catalog("sluice")
        .ok_or_else(|| PipelineError::Internal("the session has no catalog".into()))?;
    catalog.register_schema(
        "public",
        Arc::new(ViewSchema {
            log: log.clone(),
            lake: lake.clone(),
            upstream: upstream.clone(),
        }),
    )?;
    for name in ["tumble", "hop", "session"] {
        ctx.register_udtf(
            name,
            Arc::new(WindowFunction {
                name,
                log: log.clone(),
                upstream: upstream.clone(),
            }),
        );
    }
    Ok(ctx)
}

/// The definition of the stream a join's `input` is. A join's inputs are streams.
fn stream(log: &Log, input: &InputTable) -> Result<sluice_sql::StreamDefinition> {
    match &input.source {
        Input::Stream(name) => Ok(log.stream(name).map_or_else(
            |_| sluice_sql::StreamDefinition::default(),
            |s| sluice_sql::StreamDefinition::from_log(&s.meta().definition),
        )),
        Input::View(view) => Err(PipelineError::Unsupported(format!(
            "'{view}' is a materialized view: a view joins two streams (a view is joined as a \
             lake table, with a stream)"
        ))),
    }
}

/// The topmost aggregate of a physical plan.
fn find_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if plan.downcast_ref::<AggregateExec>().is_some() {
        return Some(plan.clone());
    }
    plan.children().into_iter().find_map(find_aggregate)
}

/// The first phase of the aggregation that `top` ends: `top` itself when planned in one.
fn lowest_aggregate(top: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let aggregate = top.downcast_ref::<AggregateExec>().expect("an aggregate");
    match aggregate.mode() {
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned => {
            return Ok(top.clone());
        }
        AggregateMode::Final | AggregateMode::FinalPartitioned | AggregateMode::PartialReduce => {}
    }
    let mut node = aggregate.input().clone();
    loop {
        if node.downcast_ref::<AggregateExec>().is_some() {
            return Ok(node);
        }
        let next = match node.children().as_slice() {
            [only] => (*only).clone(),
            _ => return Err(PipelineError::Internal("no first aggregation phase".into())),
        };
        node = next;
    }
}
