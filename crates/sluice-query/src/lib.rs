//! Queries: SQL over the lake's tables, through DataFusion.
//!
//! ```text
//!  statement (parsed once, by sluice-sql) ──► plan (DataFusion) ──► verify: read-only ──► run
//!                                               │
//!                         schema "public" ──► every Delta table of the lake, opened at its
//!                                             latest version when a query names it; a
//!                                             stream's tables with the log's tail (fresh)
//! ```
//!
//! Fresh: a stream's tables show every acknowledged record, not only what the pipeline has
//! committed (see `sluice_pipeline::fresh`).
//!
//! Read-only but for the lake's own tables: plans that define, change or copy anything (DDL,
//! DML, `COPY TO`, `SET`) are refused before they run, but for `INSERT` into a lake table that
//! no stream writes; `CREATE TABLE … AS` and `DROP TABLE` are run by the engine itself on the
//! lake (see [`write`]). The session never reads URLs as tables, so SQL cannot reach a file
//! outside the lake.

pub use datafusion::arrow;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, GenericByteViewArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{ByteViewType, DataType};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use sluice_error::{Class, Classify, Position};
use sluice_lake::{Lake, Version};
use sluice_log::Log;
use sluice_pipeline::fresh::{Side, Tails};
use sluice_sql::{AsOf, StreamDefinition};
use sqlparser::ast::{ObjectType, Statement};

mod write;

/// Why a statement failed, and (its class) who must act.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not a statement this engine runs, or not on this table: it defines, changes or copies
    /// what SQL may not (a stream's or a view's tables are their pipelines' alone).
    #[error("{0}")]
    Refused(String),
    /// DataFusion would not plan or run the statement; the class says why (a syntax error, an
    /// unknown table or column, a value that does not convert, the lake out of reach, …).
    #[error("{message}")]
    Engine {
        /// What DataFusion's error means for whoever must act (see `sluice-error`).
        class: Class,
        /// DataFusion's message, or that of the error it carries (the lake's, say).
        message: String,
        /// Where in the statement, when DataFusion said.
        position: Option<Position>,
    },
    /// The answer grew past [`QueryEngine::with_max_result_bytes`].
    #[error("{0}")]
    ResultTooLarge(String),
    /// A lake table could not be read or written.
    #[error(transparent)]
    Lake(#[from] sluice_lake::Error),
}

impl QueryError {
    /// An error of the statement, of `class`, without a position.
    fn statement(class: Class, message: impl Into<String>) -> Self {
        QueryError::Engine {
            class,
            message: message.into(),
            position: None,
        }
    }
}

impl QueryError {
    /// DataFusion's error `e`, classified (the lake's errors it carries by the lake's classes).
    pub fn of(e: &DataFusionError) -> Self {
        let (class, position) = sluice_error::datafusion::class_of(e, &sluice_pipeline::lake_class);
        // An error DataFusion carries for the lake says what it is by itself.
        let message = match e.find_root() {
            DataFusionError::External(inner) => inner.to_string(),
            _ => e.strip_backtrace(),
        };
        QueryError::Engine {
            class,
            message,
            position,
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        QueryError::of(&e)
    }
}

impl Classify for QueryError {
    fn class(&self) -> Class {
        match self {
            QueryError::Refused(_) => Class::Refused,
            QueryError::Engine { class, .. } => *class,
            QueryError::ResultTooLarge(_) => Class::LimitExceeded,
            QueryError::Lake(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "statement_refused",
            QueryError::Engine {
                class: Class::Unavailable,
                ..
            } => "lake_unavailable",
            QueryError::Engine {
                class: Class::Internal,
                ..
            } => "internal",
            QueryError::Engine { .. } => "query_error",
            QueryError::ResultTooLarge(_) => "result_too_large",
            QueryError::Lake(e) => e.code(),
        }
    }

    fn position(&self) -> Option<Position> {
        match self {
            QueryError::Engine { position, .. } => *position,
            _ => None,
        }
    }
}

/// The engine's results: every failure is a [`QueryError`].
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// A query's result: its schema and rows.
#[derive(Debug)]
pub struct QueryOutput {
    /// The answer's columns (also when it has no row).
    pub schema: SchemaRef,
    /// The answer's rows, in order.
    pub batches: Vec<RecordBatch>,
}

/// Makes sessions over a lake.
#[derive(Clone)]
pub struct QueryEngine {
    lake: Lake,
    log: Arc<Log>,
    tails: Arc<Tails>,
    /// The largest answer [`QueryEngine::execute`] collects, in bytes of Arrow memory.
    max_result_bytes: usize,
}

impl QueryEngine {
    /// An engine over `lake`, whose streams' tables are completed from `log`.
    pub fn new(lake: Lake, log: Arc<Log>) -> Self {
        Self {
            lake,
            log,
            tails: Arc::default(),
            max_result_bytes: usize::MAX,
        }
    }

    /// Refuses answers larger than `bytes` (stopping the query as it passes them).
    pub fn with_max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// Whether the lake holds table `name`.
    pub fn has_table(&self, name: &str) -> bool {
        self.lake.table_names().iter().any(|t| t == name)
    }

    /// A session whose schema `public` is the lake.
    pub fn session(&self) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("sluice", "public");
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        sluice_pipeline::functions::register(&mut state).map_err(QueryError::from)?;
        let ctx = SessionContext::new_with_state(state);
        let catalog = ctx
            .catalog("sluice")
            .ok_or_else(|| QueryError::statement(Class::Internal, "the session has no catalog"))?;
        catalog
            .register_schema(
                "public",
                Arc::new(LakeSchema {
                    engine: self.clone(),
                }),
            )
            .map_err(QueryError::from)?;
        Ok(ctx)
    }

    /// Plans one statement in `ctx` and checks that it only reads, or only inserts into a
    /// table it may write. (`CREATE TABLE … AS` and `DROP TABLE` have no plan: see
    /// [`QueryEngine::execute`].)
    pub async fn plan(&self, ctx: &SessionContext, statement: Statement) -> Result<LogicalPlan> {
        let allowed = match &statement {
            Statement::Insert(insert) => {
                self.insert_target(&insert.table).await?;
                read_only().with_allow_dml(true)
            }
            _ => read_only(),
        };
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?;
        // INSERT appends; INSERT OVERWRITE would replace the table.
        let inserts =
            matches!(&plan, LogicalPlan::Dml(dml) if dml.op == WriteOp::Insert(InsertOp::Append));
        allowed
            .verify_plan(&plan)
            .ok()
            .filter(|()| !matches!(plan, LogicalPlan::Dml(_)) || inserts)
            .ok_or_else(|| QueryError::Refused(refusal(&plan)))?;
        Ok(plan)
    }

    /// Whether `statement` is one that [`QueryEngine::execute`] runs without a plan: `CREATE
    /// TABLE … AS`, `DROP TABLE`.
    pub fn is_lake_ddl(statement: &Statement) -> bool {
        matches!(
            statement,
            Statement::CreateTable(_)
                | Statement::Drop {
                    object_type: ObjectType::Table,
                    ..
                }
        )
    }

    /// Plans, checks and runs one statement.
    pub async fn execute(&self, statement: Statement) -> Result<QueryOutput> {
        let ctx = self.session()?;
        match &statement {
            Statement::CreateTable(create) => return self.create_table_as(&ctx, create).await,
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                if_exists,
                ..
            } => return self.drop_tables(names, *if_exists).await,
            _ => {}
        }
        let plan = self.plan(&ctx, statement).await?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await?;
        let (mut batches, mut bytes) = (Vec::new(), 0);
        while let Some(batch) = stream.next().await {
            let batch = compacted(batch?)?;
            bytes += batch.get_array_memory_size();
            if bytes > self.max_result_bytes {
                return Err(QueryError::ResultTooLarge(format!(
                    "the answer is larger than {} MiB (limits.max_result_bytes): aggregate, \
                     or add a LIMIT",
                    self.max_result_bytes >> 20
                )));
            }
            batches.push(batch);
        }
        Ok(QueryOutput { schema, batches })
    }
}

/// `batch` with its text and binary views holding only the bytes they show. A sort's or a
/// LIMIT's output points into its input's buffers, so without this every batch of an answer
/// holds, counts and writes out the whole of them: a million sorted rows of text came to more
/// than 4 GiB of Arrow IPC, and past the machine's memory.
fn compacted(batch: RecordBatch) -> Result<RecordBatch> {
    /// Whether a view array's buffers hold more than twice the bytes it shows.
    fn oversized<T: ByteViewType + ?Sized>(array: &GenericByteViewArray<T>) -> bool {
        let held: usize = array.data_buffers().iter().map(|b| b.capacity()).sum();
        held > 2 * array.total_buffer_bytes_used() + 64 * 1024
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View if oversized(column.as_string_view()) => {
                Arc::new(column.as_string_view().gc()) as ArrayRef
            }
            DataType::BinaryView if oversized(column.as_binary_view()) => {
                Arc::new(column.as_binary_view().gc())
            }
            _ => column.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns).map_err(DataFusionError::from)?)
}

impl QueryEngine {
    /// The stream whose table (rows or errors) is named `table`, if any. A change stream's
    /// mirror is not its rows: its table is what its pipeline committed, no log tail.
    fn stream_of(&self, table: &str) -> Option<(String, Side)> {
        if let Ok(stream) = self.log.stream(table) {
            let definition = StreamDefinition::from_log(&stream.meta().definition);
            return (!definition.format.is_change()).then(|| (table.to_string(), Side::Rows));
        }
        let stream = sluice_pipeline::errors_table_of(table)?;
        self.log.stream(stream).ok()?;
        Some((stream.to_string(), Side::Errors))
    }
}

fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

fn refusal(plan: &LogicalPlan) -> String {
    format!(
        "only queries, CREATE TABLE … AS, INSERT and DROP TABLE are allowed here, not {}",
        plan.display()
            .to_string()
            .split(':')
            .next()
            .unwrap_or("this statement")
    )
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("lake", &self.lake)
            .finish_non_exhaustive()
    }
}

/// The lake as a DataFusion schema: its tables, opened when a query names them.
#[derive(Debug)]
struct LakeSchema {
    engine: QueryEngine,
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.engine.lake.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        // An earlier version (time travel) is exactly what its commit left: no log tail.
        if let Some((name, as_of)) = AsOf::parse_name(name) {
            let version = match as_of {
                AsOf::Version(n) => Version::Number(n),
                AsOf::Timestamp(t) => Version::At(t),
                AsOf::SystemTime(_) => {
                    return Err(DataFusionError::Plan(format!(
                        "FOR SYSTEM_TIME AS OF joins each event of a stream with the version of \
                         '{name}' valid at its time: it is for a materialized view over the \
                         stream; to read a table as it was, TIMESTAMP AS OF '…'"
                    )));
                }
            };
            return match self.engine.lake.open_version(name, version).await {
                Ok(table) => Ok(Some(table.delta().table_provider().await?)),
                Err(sluice_lake::Error::TableNotFound(_) | sluice_lake::Error::InvalidName(_)) => {
                    Ok(None)
                }
                Err(e) => Err(DataFusionError::External(Box::new(e))),
            };
        }
        let table = match self.engine.lake.open(name).await {
            Ok(table) => table,
            Err(sluice_lake::Error::TableNotFound(_) | sluice_lake::Error::InvalidName(_)) => {
                return Ok(None);
            }
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        };
        let provider = match self.engine.stream_of(name) {
            Some((stream, side)) => {
                let engine = &self.engine;
                engine
                    .tails
                    .fresh_table(&table, &engine.log, &stream, side)
                    .await?
            }
            None => table.delta().table_provider().await?,
        };
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.engine.has_table(name)
    }
}

#[cfg(test)]
mod tests;
