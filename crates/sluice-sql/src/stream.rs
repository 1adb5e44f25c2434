//! `CREATE STREAM`: its parse, its validation, and the definition a stream keeps.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    self, ColumnOption, DataType, ExactNumberInfo, Expr, SqlOption, TimezoneInfo, Value,
};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use crate::connector::{self, Connector, ConnectorOptions};
use crate::{Result, SqlError};

/// How a stream's records are decoded (by the pipelines; the log keeps them as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per record, typed by the columns; with no columns, one `data` column.
    #[default]
    Json,
    /// One CSV row per record, in column order.
    Csv,
    /// The record as one `data` text column.
    Text,
    /// A change of a DynamoDB item: a DynamoDB Streams record (as EventBridge Pipes or Lambda
    /// deliver it) or a Kinesis Data Streams for DynamoDB record, told apart per record. The
    /// stream's table mirrors the DynamoDB table (see [`StreamDefinition::primary_key`]).
    #[serde(rename = "dynamodb")]
    DynamoDb,
    /// A change of a database row in Debezium's JSON envelope (with or without its schema
    /// wrapper). The stream's table mirrors the database table.
    Debezium,
}

impl Format {
    /// Whether records are changes of a table elsewhere: the stream's table mirrors it, and
    /// `<stream>_changes` keeps every change.
    pub fn is_change(self) -> bool {
        matches!(self, Format::DynamoDb | Format::Debezium)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Text => "text",
            Format::DynamoDb => "dynamodb",
            Format::Debezium => "debezium",
        })
    }
}

/// The column types a stream may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `TEXT` (also `VARCHAR`, `STRING`, `CHAR`).
    Text,
    /// `BOOLEAN`.
    Boolean,
    /// `SMALLINT`: 16 bits (also `INT2`). Streams created before Sluice had it kept a
    /// `SMALLINT` as an `INT`, and still do.
    SmallInt,
    /// `INT`: 32 bits (also `INTEGER`, `INT4`).
    Int,
    /// `BIGINT`: 64 bits.
    BigInt,
    /// 32-bit float: `REAL`, `FLOAT4` (a bare `FLOAT` is a `DOUBLE`).
    Float,
    /// 64-bit float: `DOUBLE`, `DOUBLE PRECISION`, `FLOAT`, `FLOAT8`.
    Double,
    /// `TIMESTAMP` (`TIMESTAMP WITHOUT TIME ZONE`): a time of day on a date, without a zone, in
    /// microseconds. Input with an offset (`…+02:00`) is converted to UTC first; input without
    /// one is taken as it is. Stored as Delta's `timestamp_ntz`.
    #[serde(rename = "timestamp_ntz")]
    Timestamp,
    /// `TIMESTAMPTZ` (`TIMESTAMP WITH TIME ZONE`): an instant, in microseconds since the epoch,
    /// UTC. Stored as Delta's `timestamp`. Streams created before Sluice had both kept every
    /// `TIMESTAMP` column this way, as instants, and are read back with `TIMESTAMPTZ` columns
    /// (their definitions say `timestamp`), so that their tables and the views over them stay
    /// as they were.
    #[serde(rename = "timestamptz", alias = "timestamp")]
    TimestampTz,
    /// `DATE`.
    Date,
    /// `JSON` (also `JSONB`): any JSON value (object, array, string, number, boolean), kept as
    /// the text it was sent as. The JSON functions read it; PostgreSQL clients receive `json`.
    /// Only in a stream of `format = 'json'`.
    Json,
    /// `DECIMAL(p, s)` (also `NUMERIC`).
    Decimal {
        /// Most digits in all.
        precision: u8,
        /// Digits after the decimal point.
        scale: i8,
    },
}

impl ColumnType {
    /// Whether the type is `TIMESTAMP` or `TIMESTAMPTZ`: what an event time may be.
    pub fn is_timestamp(self) -> bool {
        matches!(self, ColumnType::Timestamp | ColumnType::TimestampTz)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Text => f.write_str("TEXT"),
            ColumnType::Boolean => f.write_str("BOOLEAN"),
            ColumnType::SmallInt => f.write_str("SMALLINT"),
            ColumnType::Int => f.write_str("INT"),
            ColumnType::BigInt => f.write_str("BIGINT"),
            ColumnType::Float => f.write_str("FLOAT"),
            ColumnType::Double => f.write_str("DOUBLE"),
            ColumnType::Timestamp => f.write_str("TIMESTAMP"),
            ColumnType::TimestampTz => f.write_str("TIMESTAMPTZ"),
            ColumnType::Date => f.write_str("DATE"),
            ColumnType::Json => f.write_str("JSON"),
            ColumnType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
        }
    }
}

/// One level of a raw table's Hive-style partitioning (`name=value` folders): a declared column,
/// or a value derived from one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The table's partition column: the declared column itself, or a derived column added to
    /// the table.
    pub name: String,
    /// The declared column it is taken from.
    pub source: String,
    /// How the value is taken from the source column.
    pub transform: Transform,
}

/// How a partition value is taken from its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// The column's own value.
    Identity,
    /// `date(ts)`: the UTC date of a timestamp, a `DATE` column named `<ts>_date`.
    Date,
    /// `hour(ts)`: the UTC hour of a timestamp (0–23), an `INT` column named `<ts>_hour`.
    Hour,
}

impl Transform {
    /// The column type a derived partition column has.
    pub fn column_type(self, source: ColumnType) -> ColumnType {
        match self {
            Transform::Identity => source,
            Transform::Date => ColumnType::Date,
            Transform::Hour => ColumnType::Int,
        }
    }
}

/// A declared column of a stream: what the pipelines decode each record into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name, as SQL and the records' JSON fields name it.
    pub name: String,
    /// The column's type; a record whose value does not convert becomes an error row.
    pub data_type: ColumnType,
    /// Whether a record may leave it out or null (`NOT NULL` makes it required).
    pub nullable: bool,
}

/// What the SQL layer knows of a stream beyond its shards and retention (which the log keeps):
/// persisted as the log's opaque stream definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StreamDefinition {
    /// The declared columns, in order; none for schemaless JSON (one `data` column).
    #[serde(default)]
    pub columns: Vec<Column>,
    /// How records are decoded.
    #[serde(default)]
    pub format: Format,
    /// The `TIMESTAMP` or `TIMESTAMPTZ` column that says when each event happened: what the
    /// watermark follows.
    #[serde(default)]
    pub event_time: Option<String>,
    /// How far event time may lag behind the latest seen before events count as late.
    #[serde(default)]
    pub watermark_ms: Option<u64>,
    /// How the raw table is partitioned, outermost level first.
    #[serde(default)]
    pub partition_by: Vec<Partition>,
    /// Where its records come from when not from Sluice's own doors (a Kafka topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<Connector>,
    /// A change stream's key (`primary_key`): the declared columns that name a row of the
    /// table it mirrors. Empty for any other stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// A DynamoDB change stream's `version_attribute`: the declared column whose value orders
    /// the changes of an item (newest wins), where the change time is too coarse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_attribute: Option<String>,
}

impl StreamDefinition {
    /// Reads a definition back from the log. A stream created without SQL (e.g. through the
    /// Kinesis API) has none: it is schemaless JSON.
    pub fn from_log(value: &serde_json::Value) -> StreamDefinition {
        if value.is_null() {
            return StreamDefinition::default();
        }
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// Whether the definition the log keeps as `kept` is this one, as a config file declaring
    /// this one at every start asks: a definition kept before `TIMESTAMPTZ` existed says
    /// `timestamp` where this one says `TIMESTAMP` (what it keeps are instants, and it reads
    /// back as `TIMESTAMPTZ`, but it is the stream the file declares).
    pub fn is_kept_as(&self, kept: &serde_json::Value) -> bool {
        let mut kept = kept.clone();
        if let Some(columns) = kept.get_mut("columns").and_then(|c| c.as_array_mut()) {
            for column in columns {
                if column["data_type"] == "timestamp" {
                    column["data_type"] = "timestamp_ntz".into();
                }
            }
        }
        let mut kept = StreamDefinition::from_log(&kept);
        // Where a connector starts was fixed when the stream was created.
        kept.connector = kept.connector.as_ref().and_then(Connector::as_declared);
        let connector = self.connector.as_ref().and_then(Connector::as_declared);
        kept == StreamDefinition {
            connector,
            ..self.clone()
        }
    }

    /// The definition as the log keeps it (see [`StreamDefinition::from_log`]).
    pub fn to_log(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a definition serializes")
    }
}

/// `CREATE STREAM`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStream {
    /// The stream's name.
    pub name: String,
    /// `IF NOT EXISTS`: an existing stream of the name is no error.
    pub if_not_exists: bool,
    /// `shards`: how many shards the stream has (default 4).
    pub shards: u32,
    /// `None` keeps records forever (`retention = 'forever'`); default 24 hours.
    pub retention_ms: Option<u64>,
    /// `retention_bytes`: most bytes a shard keeps before deleting its oldest records; `None`
    /// for no limit.
    pub retention_bytes_per_shard: Option<u64>,
    /// Everything the SQL layer keeps of the stream (columns, format, event time, …).
    pub definition: StreamDefinition,
}

pub const DEFAULT_SHARDS: u32 = 4;
pub const DEFAULT_RETENTION_MS: u64 = 24 * 3600 * 1000;
const OPTIONS: &str = "shards, format, event_time, watermark, partition_by, retention, \
                       retention_bytes, primary_key, version_attribute";

pub(crate) fn parse_stream_name(parser: &mut Parser) -> Result<String> {
    let at = parser.peek_token().span.start;
    let name = parser.parse_object_name(false)?;
    match name.0.as_slice() {
        [part] => Ok(part
            .as_ident()
            .map(|i| i.value.clone())
            .ok_or_else(|| SqlError::at("expected a stream name", at))?),
        _ => Err(SqlError::at(
            format!("stream names have one part, found '{name}'"),
            at,
        )),
    }
}

pub(crate) fn parse_create_stream(parser: &mut Parser) -> Result<CreateStream> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name_at = parser.peek_token().span.start;
    let name = parse_stream_name(parser)?;
    let mut columns = Vec::new();
    if parser.peek_token().token == Token::LParen {
        let at = parser.peek_token().span.start;
        let (defs, constraints) = parser.parse_columns()?;
        if !constraints.is_empty() {
            return Err(SqlError::at("streams take no table constraints", at));
        }
        for def in defs {
            columns.push(column(def)?);
        }
    }
    let mut create = CreateStream {
        name,
        if_not_exists,
        shards: DEFAULT_SHARDS,
        retention_ms: Some(DEFAULT_RETENTION_MS),
        retention_bytes_per_shard: None,
        definition: StreamDefinition {
            columns,
            ..StreamDefinition::default()
        },
    };
    let with_at = parser.peek_token().span.start;
    let mut connector_options = ConnectorOptions::default();
    // Options a stream elsewhere takes from there instead.
    let mut log_options = Vec::new();
    if parser.peek_keyword(Keyword::WITH) {
        for option in parser.parse_options(Keyword::WITH)? {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(SqlError::at(
                    format!(
                        "expected option = value; options are {OPTIONS}, {}",
                        connector::OPTIONS
                    ),
                    with_at,
                ));
            };
            let name = key.value.to_ascii_lowercase();
            if ConnectorOptions::takes(&name) {
                let text = string(&value, &name, key.span.start)?;
                connector_options.add(name, text, key.span.start);
                continue;
            }
            if ["shards", "retention", "retention_bytes"].contains(&name.as_str()) {
                log_options.push((name.clone(), key.span.start));
            }
            apply_option(&mut create, &key, &value)?;
        }
    }
    create.definition.connector = connector_options.connector(&create.name, name_at)?;
    if let (Some(c), Some((option, at))) = (&create.definition.connector, log_options.first()) {
        return Err(SqlError::at(
            format!(
                "a {} stream takes no {option}: its shards are {}, and its retention theirs",
                c.kind(),
                c.shards_are()
            ),
            *at,
        ));
    }
    create.definition.partition_by = (create.definition.partition_by.iter())
        .map(|p| named(p, &create.definition.columns))
        .collect();
    // Key and version columns as they were declared.
    let declared = |name: &String| {
        (create.definition.columns.iter())
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map_or_else(|| name.clone(), |c| c.name.clone())
    };
    create.definition.primary_key = create.definition.primary_key.iter().map(declared).collect();
    create.definition.version_attribute =
        create.definition.version_attribute.as_ref().map(declared);
    validate(&create, name_at)?;
    Ok(create)
}

fn column(def: ast::ColumnDef) -> Result<Column> {
    let at = def.name.span.start;
    let data_type = column_type(&def.data_type).ok_or_else(|| {
        SqlError::at(
            format!(
                "unsupported type {} for column '{}': use TEXT, BOOLEAN, INT, BIGINT, FLOAT, DOUBLE, TIMESTAMP, DATE or DECIMAL(p, s)",
                def.data_type, def.name.value
            ),
            at,
        )
    })?;
    let mut nullable = true;
    for option in def.options {
        match option.option {
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Null => nullable = true,
            other => {
                return Err(SqlError::at(
                    format!(
                        "unsupported column option '{other}' on '{}': streams take only NULL / NOT NULL",
                        def.name.value
                    ),
                    at,
                ));
            }
        }
    }
    Ok(Column {
        name: def.name.value,
        data_type,
        nullable,
    })
}

fn column_type(t: &DataType) -> Option<ColumnType> {
    Some(match t {
        DataType::Text | DataType::Varchar(_) | DataType::String(_) | DataType::Char(_) => {
            ColumnType::Text
        }
        DataType::Boolean | DataType::Bool => ColumnType::Boolean,
        DataType::SmallInt(_) | DataType::Int2(_) | DataType::Int16 => ColumnType::SmallInt,
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) | DataType::Int32 => {
            ColumnType::Int
        }
        DataType::BigInt(_) | DataType::Int8(_) | DataType::Int64 => ColumnType::BigInt,
        DataType::Float4 | DataType::Real => ColumnType::Float,
        DataType::Float(ExactNumberInfo::None)
        | DataType::Double(_)
        | DataType::DoublePrecision => ColumnType::Double,
        DataType::Float(_) => ColumnType::Double,
        DataType::Float8 | DataType::Float64 => ColumnType::Double,
        DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            ColumnType::TimestampTz
        }
        DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone)
        | DataType::TimestampNtz(_) => ColumnType::Timestamp,
        DataType::Date => ColumnType::Date,
        DataType::JSON | DataType::JSONB => ColumnType::Json,
        DataType::Decimal(info) | DataType::Numeric(info) => {
            let (precision, scale) = match info {
                ExactNumberInfo::None => (38, 10),
                ExactNumberInfo::Precision(p) => (*p, 0),
                ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            if !(1..=38).contains(&precision) || scale < 0 || scale as u64 > precision {
                return None;
            }
            ColumnType::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
        _ => return None,
    })
}

fn apply_option(create: &mut CreateStream, key: &ast::Ident, value: &Expr) -> Result<()> {
    let at = key.span.start;
    let name = key.value.to_ascii_lowercase();
    match name.as_str() {
        "shards" => {
            let n = integer(value, &name, at)?;
            create.shards = u32::try_from(n)
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    SqlError::at(format!("shards must be between 1 and 256, found {n}"), at)
                })?;
        }
        "format" => {
            create.definition.format = match string(value, &name, at)?.to_ascii_lowercase().as_str()
            {
                "json" => Format::Json,
                "csv" => Format::Csv,
                "text" => Format::Text,
                "dynamodb" => Format::DynamoDb,
                "debezium" => Format::Debezium,
                other => {
                    return Err(SqlError::at(
                        format!(
                            "unknown format '{other}': use 'json', 'csv', 'text', 'dynamodb' or \
                             'debezium'"
                        ),
                        at,
                    ));
                }
            };
        }
        "event_time" => create.definition.event_time = Some(string(value, &name, at)?),
        "primary_key" => {
            create.definition.primary_key = string(value, &name, at)?
                .split(',')
                .map(|c| c.trim().to_string())
                .collect()
        }
        "version_attribute" => {
            create.definition.version_attribute = Some(string(value, &name, at)?.trim().to_string())
        }
        "partition_by" => {
            create.definition.partition_by = partitions(&string(value, &name, at)?, at)?
        }
        "watermark" => {
            create.definition.watermark_ms =
                Some(duration_ms(&string(value, &name, at)?, &name, at)?)
        }
        "retention" => {
            let text = string(value, &name, at)?;
            create.retention_ms = match text.to_ascii_lowercase().as_str() {
                "forever" | "infinite" | "none" => None,
                _ => Some(duration_ms(&text, &name, at)?),
            };
        }
        "retention_bytes" => {
            let n = integer(value, &name, at)?;
            create.retention_bytes_per_shard =
                Some(u64::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                    SqlError::at(
                        format!("retention_bytes must be a positive number of bytes, found {n}"),
                        at,
                    )
                })?);
        }
        other => {
            return Err(SqlError::at(
                format!(
                    "unknown stream option '{other}': options are {OPTIONS}, {}",
                    connector::OPTIONS
                ),
                at,
            ));
        }
    }
    Ok(())
}

/// Checks the statement as a whole; errors point at the stream's name.
fn validate(create: &CreateStream, at: Location) -> Result<()> {
    let def = &create.definition;
    let mut seen = std::collections::HashSet::new();
    for c in &def.columns {
        if !seen.insert(c.name.to_ascii_lowercase()) {
            return Err(SqlError::at(
                format!("column '{}' is declared twice", c.name),
                at,
            ));
        }
    }
    if def.format == Format::Csv && def.columns.is_empty() {
        return Err(SqlError::at("format 'csv' needs a column list", at));
    }
    if let Some(c) = def.columns.iter().find(|c| c.data_type == ColumnType::Json)
        && def.format != Format::Json
        && !def.format.is_change()
    {
        return Err(SqlError::at(
            format!(
                "column '{}' is JSON, which only streams of format 'json', 'dynamodb' and \
                 'debezium' have",
                c.name
            ),
            at,
        ));
    }
    if def.format == Format::Text && !def.columns.is_empty() {
        return Err(SqlError::at(
            "format 'text' has one column, data: declare no columns",
            at,
        ));
    }
    if let Some(event_time) = &def.event_time {
        match def
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(event_time))
        {
            Some(c) if c.data_type.is_timestamp() => {}
            Some(c) => {
                return Err(SqlError::at(
                    format!(
                        "event_time column '{}' is {}, it must be TIMESTAMP or TIMESTAMPTZ",
                        c.name, c.data_type
                    ),
                    at,
                ));
            }
            None => {
                return Err(SqlError::at(
                    format!("event_time names no column: '{event_time}'"),
                    at,
                ));
            }
        }
    }
    if def.watermark_ms.is_some() && def.event_time.is_none() {
        return Err(SqlError::at("a watermark needs an event_time column", at));
    }
    validate_partitions(&create.definition, at)?;
    validate_change(&create.definition, at)
}

/// Checks a change stream's options (and that no other stream has them); names its key
/// columns as they were declared.
fn validate_change(def: &StreamDefinition, at: Location) -> Result<()> {
    let format = def.format;
    if !format.is_change() {
        return match (def.primary_key.is_empty(), &def.version_attribute) {
            (true, None) => Ok(()),
            (false, _) => Err(SqlError::at(
                format!(
                    "primary_key is for change streams (format 'dynamodb' or 'debezium'), not \
                     format '{format}'"
                ),
                at,
            )),
            (true, Some(_)) => Err(SqlError::at(
                "version_attribute is for streams of format 'dynamodb'",
                at,
            )),
        };
    }
    if def.columns.is_empty() {
        return Err(SqlError::at(
            format!("format '{format}' needs a column list: the columns of the table it mirrors"),
            at,
        ));
    }
    if def.primary_key.is_empty() {
        return Err(SqlError::at(
            format!(
                "format '{format}' needs primary_key = 'column[, column…]': the key of the table \
                 it mirrors"
            ),
            at,
        ));
    }
    // The columns a change stream's tables add (and the mirror's upsert flag).
    const OWN: [&str; 15] = [
        "_op",
        "_version",
        "_source_pos",
        "_source_ts",
        "_event_id",
        "_before",
        "_unchanged",
        "_delete",
        "_shard",
        "_seq",
        "_ingested_at",
        "_key",
        "_kafka_ts",
        "_kinesis_seq",
        "_kinesis_ts",
    ];
    let own = |c: &&Column| OWN.iter().any(|o| c.name.eq_ignore_ascii_case(o));
    if let Some(c) = def.columns.iter().find(own) {
        return Err(SqlError::at(
            format!(
                "column '{}' is one a change stream's tables add: name it otherwise",
                c.name
            ),
            at,
        ));
    }
    let declared = |name: &str| {
        def.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    };
    for key in &def.primary_key {
        match declared(key) {
            None => {
                return Err(SqlError::at(
                    format!("primary_key names no declared column: '{key}'"),
                    at,
                ));
            }
            Some(c) if c.data_type == ColumnType::Json => {
                return Err(SqlError::at(
                    format!(
                        "primary_key column '{}' is JSON, which cannot be a key",
                        c.name
                    ),
                    at,
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(p) = def.partition_by.iter().find(|p| {
        !def.primary_key
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&p.source))
    }) {
        return Err(SqlError::at(
            format!(
                "a change stream is partitioned by its key columns only (a row never moves \
                 between partitions), and '{}' is not one",
                p.source
            ),
            at,
        ));
    }
    match (&def.version_attribute, format) {
        (None, _) => Ok(()),
        (Some(_), Format::Debezium) => Err(SqlError::at(
            "version_attribute is for streams of format 'dynamodb' (Debezium's changes are \
             ordered by their source positions)",
            at,
        )),
        (Some(v), _) => match declared(v) {
            Some(c)
                if matches!(
                    c.data_type,
                    ColumnType::SmallInt
                        | ColumnType::Int
                        | ColumnType::BigInt
                        | ColumnType::Decimal { scale: 0, .. }
                ) =>
            {
                Ok(())
            }
            Some(c) => Err(SqlError::at(
                format!(
                    "version_attribute column '{}' is {}: it must be a whole number (INT, BIGINT \
                     or DECIMAL(p, 0))",
                    c.name, c.data_type
                ),
                at,
            )),
            None => Err(SqlError::at(
                format!("version_attribute names no declared column: '{v}'"),
                at,
            )),
        },
    }
}

/// Parses `partition_by`: a comma-separated list of declared columns and `date(col)` /
/// `hour(col)` of timestamp columns, each derived one optionally renamed with `AS name`.
fn partitions(text: &str, at: Location) -> Result<Vec<Partition>> {
    let invalid = |detail: String| {
        SqlError::at(
            format!(
                "partition_by '{text}': {detail}; expected columns and date(col) or hour(col), \
                 separated by commas"
            ),
            at,
        )
    };
    let mut parser = Parser::new(&sqlparser::dialect::GenericDialect {})
        .try_with_sql(text)
        .map_err(|e| invalid(e.to_string()))?;
    let items = parser
        .parse_comma_separated(Parser::parse_select_item)
        .map_err(|e| invalid(e.to_string()))?;
    if parser.peek_token().token != Token::EOF {
        return Err(invalid(format!("unexpected {}", parser.peek_token().token)));
    }
    items
        .into_iter()
        .map(|item| {
            let (expr, alias) = match item {
                ast::SelectItem::UnnamedExpr(expr) => (expr, None),
                ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value)),
                other => return Err(invalid(format!("'{other}' is not a partition"))),
            };
            let (source, transform) = match &expr {
                Expr::Identifier(column) if alias.is_none() => {
                    (column.value.clone(), Transform::Identity)
                }
                Expr::Identifier(column) => {
                    return Err(invalid(format!(
                        "column '{column}' partitions under its own name, without AS"
                    )));
                }
                Expr::Function(f) => {
                    let transform = match f.name.to_string().to_ascii_lowercase().as_str() {
                        "date" => Transform::Date,
                        "hour" => Transform::Hour,
                        other => return Err(invalid(format!("unknown function {other}"))),
                    };
                    let ast::FunctionArguments::List(list) = &f.args else {
                        return Err(invalid(format!("{expr} takes one column")));
                    };
                    match list.args.as_slice() {
                        [
                            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                                Expr::Identifier(column),
                            )),
                        ] => (column.value.clone(), transform),
                        _ => return Err(invalid(format!("{expr} takes one column"))),
                    }
                }
                other => return Err(invalid(format!("'{other}' is not a partition"))),
            };
            // Named after the declared column once it is known (see `validate_partitions`).
            let name = alias.unwrap_or_default();
            Ok(Partition {
                name,
                source,
                transform,
            })
        })
        .collect()
}

/// `p` with the declared column's own spelling, and a derived column's default name.
fn named(p: &Partition, columns: &[Column]) -> Partition {
    let source = columns
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(&p.source))
        .map_or(p.source.clone(), |c| c.name.clone());
    let name = match (p.transform, p.name.is_empty()) {
        (Transform::Identity, _) => source.clone(),
        (_, false) => p.name.clone(),
        (Transform::Date, true) => format!("{source}_date"),
        (Transform::Hour, true) => format!("{source}_hour"),
    };
    Partition {
        name,
        source,
        transform: p.transform,
    }
}

/// Partitions name declared columns of fitting types, and derived ones add new names.
fn validate_partitions(def: &StreamDefinition, at: Location) -> Result<()> {
    if !def.partition_by.is_empty() && def.columns.is_empty() {
        return Err(SqlError::at(
            "partition_by needs declared columns to partition by",
            at,
        ));
    }
    let mut names: std::collections::HashSet<String> = def
        .columns
        .iter()
        .map(|c| c.name.to_ascii_lowercase())
        .collect();
    let mut partitioned = std::collections::HashSet::new();
    for p in &def.partition_by {
        let column = def
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&p.source))
            .ok_or_else(|| {
                SqlError::at(format!("partition_by names no column: '{}'", p.source), at)
            })?;
        let fits = match p.transform {
            Transform::Identity => matches!(
                column.data_type,
                ColumnType::Text
                    | ColumnType::Boolean
                    | ColumnType::SmallInt
                    | ColumnType::Int
                    | ColumnType::BigInt
                    | ColumnType::Date
            ),
            Transform::Date | Transform::Hour => column.data_type.is_timestamp(),
        };
        if !fits {
            let hint = if column.data_type.is_timestamp() {
                ": partition a timestamp by date(col) and hour(col)"
            } else {
                ""
            };
            return Err(SqlError::at(
                format!(
                    "cannot partition by {} of column '{}' ({}){hint}",
                    match p.transform {
                        Transform::Identity => "the value",
                        Transform::Date => "the date",
                        Transform::Hour => "the hour",
                    },
                    column.name,
                    column.data_type
                ),
                at,
            ));
        }
        let name = p.name.to_ascii_lowercase();
        let fresh = match p.transform {
            Transform::Identity => names.contains(&name),
            Transform::Date | Transform::Hour => {
                !name.starts_with('_') && names.insert(name.clone())
            }
        };
        if !fresh || !partitioned.insert(name) {
            return Err(SqlError::at(
                format!(
                    "partition column '{}' is named twice or clashes with a column",
                    p.name
                ),
                at,
            ));
        }
    }
    Ok(())
}

fn value(expr: &Expr) -> Option<&Value> {
    match expr {
        Expr::Value(v) => Some(&v.value),
        _ => None,
    }
}

fn string(expr: &Expr, option: &str, at: Location) -> Result<String> {
    match value(expr) {
        Some(Value::SingleQuotedString(s) | Value::DoubleQuotedString(s)) => Ok(s.clone()),
        _ => match expr {
            Expr::Identifier(ident) => Ok(ident.value.clone()),
            _ => Err(SqlError::at(
                format!("{option} takes a quoted string, found {expr}"),
                at,
            )),
        },
    }
}

fn integer(expr: &Expr, option: &str, at: Location) -> Result<i64> {
    match value(expr) {
        Some(Value::Number(n, _)) => n
            .parse()
            .map_err(|_| SqlError::at(format!("{option} takes a whole number, found {n}"), at)),
        _ => Err(SqlError::at(
            format!("{option} takes a number, found {expr}"),
            at,
        )),
    }
}

fn duration_ms(text: &str, option: &str, at: Location) -> Result<u64> {
    humantime::parse_duration(text.trim())
        .map(|d: Duration| d.as_millis() as u64)
        .map_err(|e| {
            SqlError::at(
                format!("{option} '{text}' is not a duration like '5 seconds' or '24 hours': {e}"),
                at,
            )
        })
}
