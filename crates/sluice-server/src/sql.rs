//! Runs the dialect's stream statements against the log, for `POST /v1/sql` and the config file.
//!
//! Results have the shape of a query result (columns and rows) so that every SQL surface answers
//! alike. Statements other than the stream statements belong to the query engine, which this
//! server does not have yet: they are refused with a clear error rather than answered wrongly.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use sluice_log::{Log, Retention, Stream, StreamOptions};
use sluice_sql::{CreateStream, Statement, StreamDefinition};

use crate::ServerError;

/// A result: typed columns and rows of JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct QueryResult {
    pub columns: Vec<ColumnInfo>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The Arrow type name, as DataFusion reports it.
    #[serde(rename = "type")]
    pub data_type: &'static str,
}

fn columns(spec: &[(&str, &'static str)]) -> Vec<ColumnInfo> {
    spec.iter()
        .map(|&(name, data_type)| ColumnInfo {
            name: name.to_string(),
            data_type,
        })
        .collect()
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

/// Runs one statement. Blocking: stream creation and deletion fsync.
pub fn execute(
    log: &Log,
    statement: Statement,
    existing: Existing,
) -> Result<QueryResult, ServerError> {
    match statement {
        Statement::CreateStream(create) => create_stream(log, create, existing),
        Statement::DropStream { name, if_exists } => match log.drop_stream(&name) {
            Err(sluice_log::Error::StreamNotFound(_)) if if_exists => Ok(QueryResult::default()),
            result => result.map(|()| QueryResult::default()).map_err(Into::into),
        },
        Statement::ShowStreams => Ok(show_streams(&log.streams())),
        Statement::Describe { name } => Ok(describe(&*log.stream(&name)?)),
        Statement::Sql(statement) => Err(ServerError::Unsupported(format!(
            "{} is not available yet: this server runs CREATE STREAM, DROP STREAM, SHOW STREAMS and DESCRIBE",
            first_words(&statement.to_string())
        ))),
    }
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn options(create: &CreateStream) -> StreamOptions {
    StreamOptions {
        shards: create.shards,
        retention: Retention {
            max_age_ms: create.retention_ms,
            max_bytes_per_shard: create.retention_bytes_per_shard,
        },
        definition: create.definition.to_log(),
    }
}

fn create_stream(
    log: &Log,
    create: CreateStream,
    existing: Existing,
) -> Result<QueryResult, ServerError> {
    let wanted = options(&create);
    match log.create_stream(&create.name, wanted.clone()) {
        Ok(_) => Ok(QueryResult::default()),
        Err(sluice_log::Error::StreamExists(name)) => {
            let stream = log.stream(&name)?;
            let meta = stream.meta();
            let same = meta.shards == wanted.shards
                && meta.retention == wanted.retention
                && StreamDefinition::from_log(&meta.definition) == create.definition;
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
        columns: columns(&[
            ("name", "Utf8"),
            ("shards", "Int64"),
            ("format", "Utf8"),
            ("event_time", "Utf8"),
            ("watermark", "Utf8"),
            ("retention", "Utf8"),
            ("records", "Int64"),
            ("bytes", "Int64"),
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
        columns: columns(&[
            ("column_name", "Utf8"),
            ("data_type", "Utf8"),
            ("is_nullable", "Utf8"),
        ]),
        rows,
    }
}

/// Applies a config file's statements at start-up, idempotently.
pub fn apply_config(log: &Log, sql: &str) -> Result<usize, ServerError> {
    let statements = sluice_sql::parse(sql)
        .map_err(|e| ServerError::Config(format!("in the config file: {e}")))?;
    let n = statements.len();
    for statement in statements {
        execute(log, statement, Existing::SameDefinition)?;
    }
    Ok(n)
}
