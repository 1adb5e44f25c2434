//! Runs a statement for both SQL doors: stream statements against the log, view statements by
//! the pipelines, queries in the query engine (`sluice-query`); and the config file's
//! statements (streams and views only).
//!
//! Results of the dialect's statements are small tables (columns and JSON rows) that become
//! Arrow like any query's, so that every SQL surface answers alike.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_log::{Log, Retention, Stream, StreamOptions};
use sluice_pipeline::PipelineError;
use sluice_pipeline::view::StoredView;
use sluice_query::QueryEngine;
use sluice_query::arrow::array::RecordBatch;
use sluice_query::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sluice_sql::{CreateStream, CreateView, Statement, StreamDefinition};

use crate::auth::Caller;
use crate::policy::{self, Access};
use crate::{AppState, ServerError};

/// A result: typed columns and rows of JSON values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// The columns' names and types, in order.
    pub columns: Vec<(&'static str, DataType)>,
    /// The rows, each a value per column.
    pub rows: Vec<Vec<Value>>,
}

impl QueryResult {
    /// The result as Arrow, decoded from its rows by arrow-json.
    pub fn to_arrow(&self) -> Result<(SchemaRef, Vec<RecordBatch>), ServerError> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let mut lines = Vec::new();
        for row in &self.rows {
            let object: serde_json::Map<String, Value> = self
                .columns
                .iter()
                .map(|(name, _)| name.to_string())
                .zip(row.iter().cloned())
                .collect();
            serde_json::to_writer(&mut lines, &object)
                .map_err(|e| ServerError::Internal(e.to_string()))?;
            lines.push(b'\n');
        }
        let internal =
            |e: sluice_query::arrow::error::ArrowError| ServerError::Internal(e.to_string());
        let mut decoder = sluice_query::arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(self.rows.len().max(1))
            .build_decoder()
            .map_err(internal)?;
        decoder.decode(&lines).map_err(internal)?;
        let batches = decoder.flush().map_err(internal)?.into_iter().collect();
        Ok((schema, batches))
    }
}

/// How `CREATE STREAM` treats a stream that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// As typed by a user: an error unless `IF NOT EXISTS`.
    Refuse,
    /// As applied from the config file at start-up: fine when the definition is the same, an
    /// error when it differs (the file and the data disagree; an operator must decide).
    SameDefinition,
}

/// What a statement answered: a schema and its rows.
pub type Answer = (SchemaRef, Vec<RecordBatch>);

/// Runs a statement typed by a user, for every SQL door, once the statement policy allows it
/// ([`policy`]): stream statements on the log (off the async threads: creating and dropping
/// streams fsyncs; their pipelines and tables follow before it returns), view statements by the
/// pipelines, everything else — `DESCRIBE` of a table that is not a stream's included — in the
/// query engine.
pub async fn answer(
    state: &AppState,
    caller: &Caller,
    statement: Statement,
) -> Result<Answer, ServerError> {
    if policy::check(caller, &statement)? == Access::Session {
        return Err(ServerError::Unsupported(
            "session statements (SET, BEGIN, COMMIT, …) have a meaning in a PostgreSQL \
             session; each HTTP request is its own"
                .into(),
        ));
    }
    let (log, query) = (&state.log, &state.query);
    let statement = match statement {
        Statement::CreateView(create) => {
            create_view(state, create, Existing::Refuse).await?;
            return QueryResult::default().to_arrow();
        }
        Statement::DropView { name, if_exists } => {
            state.pipelines.drop_view(&name, if_exists).await?;
            return QueryResult::default().to_arrow();
        }
        Statement::ShowViews => return show_views(&state.pipelines).to_arrow(),
        statement @ (Statement::CreateSource(_)
        | Statement::DropSource { .. }
        | Statement::ShowSources) => {
            return crate::sources::answer(state, statement).await?.to_arrow();
        }
        Statement::Sql(statement) => {
            let timeout = state.limits.query_timeout;
            return tokio::time::timeout(timeout, run_query(query, *statement))
                .await
                .map_err(|_| ServerError::Timeout(timeout))?;
        }
        Statement::Optimize { table } => {
            let output = query.optimize(&table).await?;
            return Ok((output.schema, output.batches));
        }
        Statement::Vacuum {
            table,
            retain_hours,
            dry_run,
        } => {
            let output = query.vacuum(&table, retain_hours, dry_run).await?;
            return Ok((output.schema, output.batches));
        }
        Statement::Describe { name } if log.stream(&name).is_err() => {
            let describe = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::GenericDialect {},
                &format!("DESCRIBE \"{}\"", name.replace('"', "\"\"")),
            )
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .remove(0);
            return run_query(query, describe).await;
        }
        statement => statement,
    };
    // A new stream's tables must be its pipeline's alone.
    if let Statement::CreateStream(create) = &statement
        && log.stream(&create.name).is_err()
        && let Some(table) = [
            create.name.clone(),
            sluice_pipeline::errors_table(&create.name),
        ]
        .into_iter()
        .find(|t| query.has_table(t))
    {
        return Err(ServerError::TableExists(table));
    }
    let changes_streams = matches!(
        statement,
        Statement::CreateStream(_) | Statement::DropStream { .. }
    );
    let log = log.clone();
    let result = tokio::task::spawn_blocking(move || execute(&log, statement, Existing::Refuse))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
    if changes_streams {
        // A created stream's tables exist, and a dropped one's are gone, when the statement
        // returns (not at the next upkeep tick).
        state.pipelines.reconcile().await;
    }
    result.to_arrow()
}

/// `CREATE MATERIALIZED VIEW`, typed by a user or applied from the config file (`existing`
/// says what a view of that name already there means).
pub async fn create_view(
    state: &AppState,
    create: CreateView,
    existing: Existing,
) -> Result<(), ServerError> {
    let name = &create.definition.name;
    if let Some(stored) = state.pipelines.view(name) {
        return exists(&stored, &create, existing);
    }
    match state.pipelines.create_view(create.definition.clone()).await {
        Err(PipelineError::ViewExists(_)) if create.if_not_exists => Ok(()),
        // Another worker of the cluster created it a moment ago (from the same config file,
        // started at the same time): as if it had been there.
        Err(PipelineError::ViewExists(_)) if state.cluster.is_some() => {
            state.pipelines.follow_views().await?;
            match state.pipelines.view(name) {
                Some(stored) => exists(&stored, &create, existing),
                None => Err(PipelineError::ViewExists(name.clone()).into()),
            }
        }
        result => Ok(result?),
    }
}

/// What `CREATE MATERIALIZED VIEW` `create` answers when view `stored` has its name.
fn exists(stored: &StoredView, create: &CreateView, existing: Existing) -> Result<(), ServerError> {
    let name = &create.definition.name;
    match existing {
        Existing::Refuse if create.if_not_exists => Ok(()),
        Existing::Refuse => Err(PipelineError::ViewExists(name.clone()).into()),
        Existing::SameDefinition if stored.definition == create.definition => Ok(()),
        Existing::SameDefinition => Err(ServerError::Config(format!(
            "materialized view '{name}' exists with a different definition than the config \
             file gives; drop it or change the file"
        ))),
    }
}

/// `SHOW MATERIALIZED VIEWS`.
fn show_views(pipelines: &sluice_pipeline::Pipelines) -> QueryResult {
    let statuses: std::collections::HashMap<String, sluice_pipeline::PipelineStatus> = pipelines
        .view_statuses()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let rows = pipelines
        .views()
        .into_iter()
        .map(|view| {
            let status = statuses.get(&view.definition.name);
            vec![
                json!(view.definition.name),
                json!(view.reads()),
                json!(status.and_then(|s| s.kind).map(|k| k.as_str())),
                json!(status.and_then(|s| s.watermark.clone())),
                json!(status.map_or(0, |s| s.input_lag)),
                json!(status.and_then(|s| s.last_error.clone())),
                json!(view.definition.to_sql()),
            ]
        })
        .collect();
    QueryResult {
        columns: Vec::from([
            ("name", DataType::Utf8),
            ("input", DataType::Utf8),
            ("kind", DataType::Utf8),
            ("watermark", DataType::Utf8),
            ("input_lag", DataType::Int64),
            ("last_error", DataType::Utf8),
            ("definition", DataType::Utf8),
        ]),
        rows,
    }
}

async fn run_query(
    query: &QueryEngine,
    statement: datafusion::sql::sqlparser::ast::Statement,
) -> Result<Answer, ServerError> {
    let output = query.execute(statement).await?;
    Ok((output.schema, output.batches))
}

/// Runs one statement. Blocking: stream creation and deletion fsync.
pub fn execute(
    log: &Log,
    statement: Statement,
    existing: Existing,
) -> Result<QueryResult, ServerError> {
    match statement {
        Statement::CreateStream(create) => create_stream(log, create, existing),
        Statement::DropStream { name, if_exists } => drop_stream(log, &name, if_exists),
        Statement::ShowStreams => Ok(show_streams(&log.streams())),
        Statement::Describe { name } => Ok(describe(&*log.stream(&name)?)),
        statement @ (Statement::Sql(_)
        | Statement::Optimize { .. }
        | Statement::Vacuum { .. }
        | Statement::CreateView(_)
        | Statement::DropView { .. }
        | Statement::ShowViews
        | Statement::CreateSource(_)
        | Statement::DropSource { .. }
        | Statement::ShowSources) => {
            let what = match &statement {
                Statement::Sql(sql) => policy::kind(sql),
                other => other.tag().to_string(),
            };
            Err(ServerError::Unsupported(format!(
                "{what} cannot be applied here: only CREATE STREAM, DROP STREAM, SHOW STREAMS, \
                 DESCRIBE and CREATE MATERIALIZED VIEW can"
            )))
        }
    }
}

fn options(create: &CreateStream, elsewhere: Option<String>) -> StreamOptions {
    StreamOptions {
        shards: create.shards,
        retention: Retention {
            max_age_ms: create.retention_ms,
            max_bytes_per_shard: create.retention_bytes_per_shard,
        },
        definition: create.definition.to_log(),
        elsewhere,
    }
}

fn create_stream(
    log: &Log,
    mut create: CreateStream,
    existing: Existing,
) -> Result<QueryResult, ServerError> {
    // A stream that exists is compared as declared; a new one's connector is checked (the
    // brokers asked) and where it starts fixed. (In a cluster, one without a connector gets its
    // topic from the catalog as the log creates it.)
    let elsewhere = match log.stream(&create.name) {
        Ok(_) => create.definition.connector.as_ref().map(|c| c.produce_to()),
        Err(_) => sluice_pipeline::source::prepare_stream(&mut create)?,
    };
    let wanted = options(&create, elsewhere);
    let created = log.create_stream(&create.name, wanted.clone());
    match created {
        Ok(_) => Ok(QueryResult::default()),
        Err(sluice_log::Error::StreamExists(name)) => {
            // Another worker of the cluster may have created it a moment ago: this log learns
            // it from the catalog.
            let stream = match log.stream(&name) {
                Ok(stream) => stream,
                Err(_) => {
                    log.follow()?;
                    log.stream(&name)
                        .map_err(|_| sluice_log::Error::StreamExists(name.clone()))?
                }
            };
            let meta = stream.meta();
            let same = meta.shards == wanted.shards
                && meta.retention == wanted.retention
                && create.definition.is_kept_as(&meta.definition);
            match existing {
                Existing::Refuse if create.if_not_exists => Ok(QueryResult::default()),
                Existing::Refuse => Err(sluice_log::Error::StreamExists(name).into()),
                Existing::SameDefinition if same => Ok(QueryResult::default()),
                Existing::SameDefinition => Err(ServerError::Config(format!(
                    "stream '{name}' exists with a different definition than the config file gives; \
                     drop it or change the file"
                ))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Drops stream `name` (in a cluster, the catalog then deletes the topic Sluice created for it:
/// its records go with it, as a log's own stream's do).
fn drop_stream(log: &Log, name: &str, if_exists: bool) -> Result<QueryResult, ServerError> {
    match log.drop_stream(name) {
        Err(sluice_log::Error::StreamNotFound(_)) if if_exists => Ok(QueryResult::default()),
        result => Ok(result.map(|_| QueryResult::default())?),
    }
}

fn duration(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        json!(humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
    })
}

/// Records retained and bytes held, over every shard.
pub fn stream_size(stream: &Stream) -> (u64, u64) {
    stream
        .shards()
        .iter()
        .fold((0, 0), |(records, bytes), shard| {
            let (start, end) = shard.bounds();
            (records + (end - start), bytes + shard.size().0)
        })
}

fn show_streams(streams: &[Arc<Stream>]) -> QueryResult {
    let rows = streams
        .iter()
        .map(|s| {
            let meta = s.meta();
            let def = StreamDefinition::from_log(&meta.definition);
            let (records, bytes) = stream_size(s);
            vec![
                json!(meta.name),
                json!(meta.shards),
                json!(def.format.to_string()),
                json!(def.event_time),
                duration(def.watermark_ms),
                duration(meta.retention.max_age_ms),
                json!(records),
                json!(bytes),
            ]
        })
        .collect();
    QueryResult {
        columns: Vec::from([
            ("name", DataType::Utf8),
            ("shards", DataType::Int64),
            ("format", DataType::Utf8),
            ("event_time", DataType::Utf8),
            ("watermark", DataType::Utf8),
            ("retention", DataType::Utf8),
            ("records", DataType::Int64),
            ("bytes", DataType::Int64),
        ]),
        rows,
    }
}

fn describe(stream: &Stream) -> QueryResult {
    let def = StreamDefinition::from_log(&stream.meta().definition);
    let rows = if def.columns.is_empty() {
        // A stream without columns is one text column of the raw record.
        vec![vec![json!("data"), json!("TEXT"), json!("YES")]]
    } else {
        def.columns
            .iter()
            .map(|c| {
                vec![
                    json!(c.name),
                    json!(c.data_type.to_string()),
                    json!(if c.nullable { "YES" } else { "NO" }),
                ]
            })
            .collect()
    };
    QueryResult {
        columns: Vec::from([
            ("column_name", DataType::Utf8),
            ("data_type", DataType::Utf8),
            ("is_nullable", DataType::Utf8),
        ]),
        rows,
    }
}

/// Applies a config file's stream statements at start-up, idempotently. Returns its
/// `CREATE MATERIALIZED VIEW` statements, which the views apply once the lake is open.
pub fn apply_config(log: &Log, sql: &str) -> Result<Vec<sluice_sql::CreateView>, ServerError> {
    let statements = sluice_sql::parse(sql)
        .map_err(|e| ServerError::Config(format!("in the config file: {e}")))?;
    let mut views = Vec::new();
    for statement in statements {
        match statement {
            Statement::CreateView(create) => views.push(create),
            statement => {
                execute(log, statement, Existing::SameDefinition)?;
            }
        }
    }
    Ok(views)
}
