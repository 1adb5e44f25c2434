//! A view's input as DataFusion sees it: the names a view's query may read, and the leaf that
//! the pipeline fills with each round's rows.
//!
//! When a view is planned, its input's name (`FROM ticks`) and a window function over it
//! (`FROM TUMBLE(ticks, ts, INTERVAL '1 minute')`) stand for an [`InputTable`]: the input's
//! columns and `_shard`, `_seq`, `_ingested_at` (and, windowed, `window_start`, `window_end`).
//! The input is a stream (its decoded columns), or — for a query that names no stream — the
//! one view it names, whose appended rows it takes as they are committed. Its scan is an
//! [`InputExec`], a leaf with no rows of its own: every round, [`feed`] puts that round's rows
//! into the plan's leaves and runs it. Any other name is a lake table, read as it is when the
//! view is planned (enrichment: a stream joined with a table).

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use sluice_lake::Lake;
use sluice_log::Log;
use sluice_sql::StreamDefinition;

use super::window::{Window, windowed_schema};
use crate::decode::Decoder;

type DfResult<T> = datafusion::error::Result<T>;

/// Where a view's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A stream's records, decoded.
    Stream(String),
    /// The rows another view appends to its table (a stateless or windowed view).
    View(String),
}

impl Input {
    /// The stream's or view's name.
    pub fn name(&self) -> &str {
        match self {
            Input::Stream(name) | Input::View(name) => name,
        }
    }
}

/// The view a query reads when it names no stream: its name, and its rows' columns (the view
/// table's, then `_shard`, `_seq`, `_ingested_at`).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The upstream view's name.
    pub name: String,
    /// The upstream view's rows' columns.
    pub schema: SchemaRef,
}

/// What a view reads from its input, as its query names it.
#[derive(Debug, Clone)]
pub struct InputTable {
    /// The stream or view read.
    pub source: Input,
    /// The input's columns (a stream's decoded columns, as its raw table has them), and the
    /// window's if windowed.
    pub schema: SchemaRef,
    /// The columns of the rows read from the input (without the window's).
    pub rows: SchemaRef,
    /// The window and the index of its time column in the stream's columns.
    pub window: Option<(Window, usize)>,
}

#[async_trait]
impl TableProvider for InputTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(InputExec::new(
            self.schema.clone(),
            projection.cloned(),
        )))
    }
}

/// The leaf of a view's plan that the pipeline fills with a round's rows (see [`feed`]).
#[derive(Debug, Clone)]
pub struct InputExec {
    /// The columns of the rows it holds that it gives (all of them if `None`).
    projection: Option<Vec<usize>>,
    batches: Vec<RecordBatch>,
    properties: Arc<PlanProperties>,
}

impl InputExec {
    /// A leaf of rows of `schema`, giving the columns of `projection` (all of them if `None`);
    /// empty until [`feed`] fills it.
    pub fn new(schema: SchemaRef, projection: Option<Vec<usize>>) -> Self {
        let projected = match &projection {
            Some(p) => Arc::new(
                schema
                    .project(p)
                    .expect("a projection of the input's columns"),
            ),
            None => schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            projection,
            batches: Vec::new(),
            properties: Arc::new(properties),
        }
    }

    /// The same leaf holding `batches` (of the unprojected schema).
    fn with_batches(&self, batches: &[RecordBatch]) -> Self {
        Self {
            batches: batches.to_vec(),
            ..self.clone()
        }
    }

    /// A leaf of `schema` holding `batches`, as the input of a plan made by the pipeline.
    pub fn holding(schema: SchemaRef, batches: Vec<RecordBatch>) -> Arc<dyn ExecutionPlan> {
        Arc::new(Self {
            batches,
            ..Self::new(schema, None)
        })
    }
}

impl DisplayAs for InputExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "InputExec: {} batches", self.batches.len())
    }
}

impl ExecutionPlan for InputExec {
    fn name(&self) -> &str {
        "InputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        // The stream says the columns it gives: the projected ones (a hash join's build side
        // takes its batches by them).
        Ok(Box::pin(MemoryStream::try_new(
            self.batches.clone(),
            ExecutionPlan::schema(self),
            self.projection.clone(),
        )?))
    }
}

/// `plan` with every [`InputExec`] leaf holding `batches`, ready to run afresh.
pub fn feed(
    plan: &Arc<dyn ExecutionPlan>,
    batches: &[RecordBatch],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    fresh(fill(plan, batches)?)
}

/// `plan` with every [`InputExec`] leaf holding `batches` (what its nodes kept of an earlier
/// run kept too: see [`fresh`]).
pub fn fill(
    plan: &Arc<dyn ExecutionPlan>,
    batches: &[RecordBatch],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.clone()
        .transform_up(|node| match node.downcast_ref::<InputExec>() {
            Some(input) => Ok(Transformed::yes(
                Arc::new(input.with_batches(batches)) as Arc<dyn ExecutionPlan>
            )),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
}

/// `plan` without what its nodes kept of an earlier run: a hash join given new inputs keeps the
/// build side it collected first (so one partition's rows would be joined as another's).
pub fn fresh(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    datafusion::physical_plan::execution_plan::reset_plan_states(plan)
}

/// The columns a stream's rows are decoded into.
fn columns(definition: &StreamDefinition) -> DfResult<SchemaRef> {
    let decoder = Decoder::new(definition).map_err(|e| DataFusionError::Plan(e.to_string()))?;
    Ok(decoder.schema().clone())
}

/// The input `name` stands for — a stream, or the upstream view — and its columns.
fn input(
    log: &Log,
    upstream: Option<&Upstream>,
    name: &str,
) -> DfResult<Option<(Input, SchemaRef)>> {
    if let Ok(stream) = log.stream(name) {
        let definition = StreamDefinition::from_log(&stream.meta().definition);
        if definition.format.is_change() {
            return Err(DataFusionError::Plan(format!(
                "stream '{name}' is a change stream (format '{}'): a view reads it only as the \
                 versions of a temporal join (JOIN {name} FOR SYSTEM_TIME AS OF o.ts AS t ON …); \
                 query its mirror ({name}) or its history ({}) directly",
                definition.format,
                crate::changes_table(name)
            )));
        }
        return Ok(Some((
            Input::Stream(name.to_string()),
            columns(&definition)?,
        )));
    }
    Ok(upstream
        .filter(|u| u.name == name)
        .map(|u| (Input::View(u.name.clone()), u.schema.clone())))
}

/// The names a view's query may read: streams and the upstream view (its input), and the
/// lake's tables.
pub struct ViewSchema {
    /// The log, whose streams the query may read.
    pub log: Arc<Log>,
    /// The lake, whose tables the query may join.
    pub lake: Lake,
    /// The view the query may read instead of a stream, if any.
    pub upstream: Option<Upstream>,
}

impl fmt::Debug for ViewSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewSchema")
            .field("lake", &self.lake)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SchemaProvider for ViewSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.lake.table_names();
        names.extend(self.log.streams().iter().map(|s| s.name().to_string()));
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        // A stream read FOR SYSTEM_TIME AS OF (a temporal join): its rows are versions, a
        // change stream's changes too.
        if let Some((name, sluice_sql::AsOf::SystemTime(_))) = sluice_sql::AsOf::parse_name(name)
            && let Ok(stream) = self.log.stream(name)
        {
            let schema = columns(&StreamDefinition::from_log(&stream.meta().definition))?;
            return Ok(Some(Arc::new(InputTable {
                source: Input::Stream(name.to_string()),
                rows: schema.clone(),
                schema,
                window: None,
            })));
        }
        if let Some((source, schema)) = input(&self.log, self.upstream.as_ref(), name)? {
            return Ok(Some(Arc::new(InputTable {
                source,
                rows: schema.clone(),
                schema,
                window: None,
            })));
        }
        match self.lake.open(name).await {
            Ok(table) => Ok(Some(table.delta().table_provider().await?)),
            Err(sluice_lake::Error::TableNotFound(_) | sluice_lake::Error::InvalidName(_)) => {
                Ok(None)
            }
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.log.stream(name).is_ok() || self.lake.table_names().iter().any(|t| t == name)
    }
}

/// `TUMBLE`, `HOP` or `SESSION` in `FROM`: an input's rows with their windows.
pub struct WindowFunction {
    /// `tumble`, `hop` or `session`.
    pub name: &'static str,
    /// The log, whose streams a window may be taken over.
    pub log: Arc<Log>,
    /// The view a window may be taken over instead of a stream, if any.
    pub upstream: Option<Upstream>,
}

impl fmt::Debug for WindowFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call(&self, args: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        let upper = self.name.to_uppercase();
        let (Some(Expr::Column(stream)), Some(Expr::Column(time))) = (args.first(), args.get(1))
        else {
            return plan_err!(
                "{upper}'s first two arguments are a stream and its time column, e.g. \
                 {upper}(ticks, ts, …)"
            );
        };
        let Some((source, schema)) = input(&self.log, self.upstream.as_ref(), &stream.name)? else {
            return plan_err!(
                "{upper} reads a stream or a view: '{}' is neither (or the query reads a stream too)",
                stream.name
            );
        };
        let Ok(index) = schema.index_of(&time.name) else {
            return plan_err!("'{}' has no column '{}'", stream.name, time.name);
        };
        if !super::window::is_time_type(schema.field(index).data_type()) {
            return plan_err!(
                "{upper}'s time column must be a TIMESTAMP or TIMESTAMPTZ: '{}' is {}",
                time.name,
                schema.field(index).data_type()
            );
        }
        let window = Window::from_call(self.name, &args[2..])
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(InputTable {
            source,
            schema: windowed_schema(&schema, index),
            rows: schema,
            window: Some((window, index)),
        }))
    }
}
