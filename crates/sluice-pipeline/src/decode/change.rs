//! Change records — DynamoDB's and Debezium's — read as changes of a row: the operation, the
//! row's image as a plain JSON object of the declared columns (typed afterwards by [`super::json`],
//! as any JSON record is), and where the change stands in its source's order.
//!
//! | | DynamoDB Streams record (Pipes, Lambda) | Kinesis Data Streams for DynamoDB | Debezium envelope |
//! | --- | --- | --- | --- |
//! | told by | `dynamodb.SequenceNumber` | no `SequenceNumber` | `op` (in `payload` with the schema wrapper) |
//! | operation | `eventName` INSERT / MODIFY / REMOVE | the same | `op` c / u / d / r / t |
//! | image | `NewImage`; `OldImage` (or `Keys`) of a REMOVE | the same | `after`; `before` of a `d` |
//! | `_version` | `SequenceNumber` | `ApproximateCreationDateTime` in µs | `source.lsn`; MySQL's binlog file, position and row; else `source.ts_ms` in µs |
//! | `_event_id` | `eventID` | `eventID` | the source position and the op (not of snapshot reads) |
//!
//! A `version_attribute` replaces DynamoDB's version. Versions order the changes of one key
//! (newest wins) and must fit 38 digits. A Debezium tombstone (a null record) is no change: it
//! is skipped, neither a row nor an error. Anything else that is not a change of a row is an
//! error row, with the reason.
//!
//! DynamoDB's typed values become JSON: `S` and `B` strings, `N` numbers as written, `BOOL`,
//! `NULL`, `M` objects, `L` and sets arrays (as JSON text in a `TEXT` column). Debezium's values
//! are taken as written, except what its converters encode: numbers of timestamp and date
//! columns (by the schema's logical type when the wrapper has one; without, days, and
//! milliseconds, microseconds or nanoseconds told by size), `Decimal` bytes, JSON held in a string, and `__debezium_unavailable_value` (a
//! value the source did not send: listed in `_unchanged`, so that the mirror keeps its own).

use std::collections::HashMap;

use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_sql::{Column, ColumnType, Format, StreamDefinition};

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Inserted (`c`).
    Insert,
    /// Updated (`u`).
    Update,
    /// Deleted (`d`).
    Delete,
    /// Read by a snapshot of the table (`r`).
    Read,
    /// Every row of the table deleted (`t`): a change of no key.
    Truncate,
}

impl Op {
    /// The operation as `_op` holds it: Debezium's letter.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// One change of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What it does.
    pub op: Op,
    /// The row after the change (before it, for a delete) as a JSON object of the declared
    /// columns it has.
    pub image: Vec<u8>,
    /// The row before the change, as plain JSON, when the source sent it.
    pub before: Option<String>,
    /// Orders the changes of one key: the newest wins.
    pub version: i128,
    /// Where the source has the change, as it writes it.
    pub source_pos: Option<String>,
    /// When the source made the change (µs since the epoch).
    pub source_ts: Option<i64>,
    /// What identifies a repeat of the change.
    pub event_id: Option<String>,
    /// Declared columns whose values the source did not send (left as the mirror has them).
    pub unchanged: Vec<String>,
}

/// Reads a change stream's records.
pub struct ChangeReader {
    format: Format,
    columns: Vec<Column>,
    keys: Vec<usize>,
    version: Option<usize>,
}

/// A record's reading: a change, or nothing (a tombstone).
pub type Read = Result<Option<Change>, String>;

/// Debezium's placeholder of a value it did not read (unchanged TOAST), as text and as the
/// base64 of a binary column.
const UNAVAILABLE: [&str; 2] = [
    "\"__debezium_unavailable_value\"",
    "\"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==\"",
];

impl ChangeReader {
    /// The reader of a change stream of this definition (its key and version columns are
    /// declared ones: the dialect checked).
    pub fn new(definition: &StreamDefinition) -> Self {
        let position = |name: &str| {
            (definition.columns.iter()).position(|c| c.name.eq_ignore_ascii_case(name))
        };
        Self {
            format: definition.format,
            columns: definition.columns.clone(),
            keys: definition
                .primary_key
                .iter()
                .filter_map(|k| position(k))
                .collect(),
            version: definition.version_attribute.as_deref().and_then(position),
        }
    }

    /// Reads one record.
    pub fn read(&self, data: &[u8]) -> Read {
        match self.format {
            Format::DynamoDb => self.dynamodb(data).map(Some),
            _ => self.debezium(data),
        }
    }

    /// Checks the image's key (present, not null) and, but for a delete, its NOT NULL columns.
    fn check(&self, op: Op, image: &[Option<String>], unchanged: &[String]) -> Result<(), String> {
        if op == Op::Truncate {
            return Ok(());
        }
        for &k in &self.keys {
            if image[k].as_deref().is_none_or(|v| v == "null") {
                return Err(format!(
                    "key column '{}' is missing or null",
                    self.columns[k].name
                ));
            }
        }
        if op == Op::Delete {
            return Ok(());
        }
        for (column, value) in self.columns.iter().zip(image) {
            if !column.nullable
                && value.as_deref().is_none_or(|v| v == "null")
                && !unchanged.contains(&column.name)
            {
                return Err(format!(
                    "field '{}' is missing or null, and it is NOT NULL",
                    column.name
                ));
            }
        }
        Ok(())
    }

    /// The key's values, as JSON, comma-separated.
    fn key_text(&self, image: &[Option<String>]) -> String {
        (self.keys.iter())
            .map(|&k| image[k].as_deref().unwrap_or("null"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The JSON object of the values found.
    fn object(&self, image: &[Option<String>]) -> Vec<u8> {
        let mut out = String::from("{");
        for (column, value) in self.columns.iter().zip(image) {
            if let Some(value) = value {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(&Value::String(column.name.clone()).to_string());
                out.push(':');
                out.push_str(value);
            }
        }
        out.push('}');
        out.into_bytes()
    }

    fn dynamodb(&self, data: &[u8]) -> Result<Change, String> {
        let record: Value =
            serde_json::from_slice(data).map_err(|e| format!("invalid JSON: {e}"))?;
        let record = record.as_object().ok_or("not a JSON object")?;
        let op = match record.get("eventName").and_then(Value::as_str) {
            Some("INSERT") => Op::Insert,
            Some("MODIFY") => Op::Update,
            Some("REMOVE") => Op::Delete,
            Some(other) => {
                return Err(format!(
                    "eventName '{other}': expected INSERT, MODIFY or REMOVE"
                ));
            }
            None => return Err("no eventName: not a DynamoDB change record".into()),
        };
        let change = (record.get("dynamodb").and_then(Value::as_object))
            .ok_or("no 'dynamodb' object: not a DynamoDB change record")?;
        let map = |name: &str| change.get(name).and_then(Value::as_object);
        let keys = map("Keys").ok_or("no dynamodb.Keys")?;
        let (new, old) = (map("NewImage"), map("OldImage"));
        let item = match op {
            Op::Delete => old.unwrap_or(keys),
            _ => new.ok_or(
                "no dynamodb.NewImage: the table's stream must carry new images \
                 (StreamViewType NEW_IMAGE or NEW_AND_OLD_IMAGES)",
            )?,
        };
        let attribute = |name: &str| {
            (item.get(name).or_else(|| keys.get(name))).or_else(|| {
                let (_, v) = item.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
                Some(v)
            })
        };
        let mut image = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            image.push(match attribute(&column.name) {
                Some(value) => Some(
                    attribute_json(value, column.data_type)
                        .map_err(|e| format!("attribute '{}': {e}", column.name))?,
                ),
                None => None,
            });
        }
        self.check(op, &image, &[])?;
        let created = change.get("ApproximateCreationDateTime").and_then(micros);
        let sequence = change.get("SequenceNumber").and_then(Value::as_str);
        let version = match (self.version, sequence) {
            (Some(v), _) => {
                let name = &self.columns[v].name;
                image[v]
                    .as_deref()
                    .filter(|v| *v != "null")
                    .ok_or_else(|| match op {
                        // A REMOVE has it only in its old image.
                        Op::Delete => format!(
                            "version attribute '{name}' is missing from the removed item: the \
                             table's stream must carry old images (NEW_AND_OLD_IMAGES)"
                        ),
                        _ => format!("version attribute '{name}' is missing from the item"),
                    })
                    .and_then(|v| {
                        v.parse::<i128>().map_err(|_| {
                            format!("version attribute '{name}': {v} is not a whole number")
                        })
                    })?
            }
            (None, Some(sequence)) => sequence_number(sequence)?,
            (None, None) => created.map(i128::from).ok_or(
                "no dynamodb.SequenceNumber nor ApproximateCreationDateTime: nothing orders \
                 the change",
            )?,
        };
        Ok(Change {
            op,
            image: self.object(&image),
            before: old.map(plain_map).transpose()?,
            version,
            source_pos: sequence.map(String::from),
            source_ts: created,
            event_id: record
                .get("eventID")
                .and_then(Value::as_str)
                .map(String::from),
            unchanged: Vec::new(),
        })
    }

    fn debezium(&self, data: &[u8]) -> Read {
        let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8 text: {e}"))?;
        if matches!(text.trim(), "" | "null") {
            return Ok(None);
        }
        let envelope: Envelope<'_> =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        // With the schema wrapper, the envelope is its payload, and the schema says how
        // values were encoded.
        let (envelope, types) = match (envelope.payload, envelope.schema) {
            (Some(payload), Some(schema)) => {
                if payload.get() == "null" {
                    return Ok(None);
                }
                let envelope: Envelope<'_> =
                    serde_json::from_str(payload.get()).map_err(|e| format!("payload: {e}"))?;
                (envelope, field_types(schema.get()))
            }
            // The wrapper of a tombstone: a null payload.
            (None, Some(_)) if envelope.op.is_none() => return Ok(None),
            _ => (envelope, HashMap::new()),
        };
        let op = match envelope.op.as_deref() {
            Some("c") => Op::Insert,
            Some("u") => Op::Update,
            Some("d") => Op::Delete,
            Some("r") => Op::Read,
            Some("t") => Op::Truncate,
            Some("m") => {
                return Err("a logical decoding message ('m'), not a change of a row".into());
            }
            Some(other) => return Err(format!("op '{other}': expected c, u, d or r")),
            None => return Err("no op: not a Debezium change event".into()),
        };
        let none = HashMap::new();
        let row = match op {
            Op::Delete => envelope.before.as_ref(),
            Op::Truncate => Some(&none),
            _ => envelope.after.as_ref(),
        };
        let row = row.ok_or_else(|| {
            format!(
                "op '{}' without its {} row",
                op.code(),
                if op == Op::Delete { "before" } else { "after" }
            )
        })?;
        let mut image = Vec::with_capacity(self.columns.len());
        let mut unchanged = Vec::new();
        for column in &self.columns {
            let value = row.get(&column.name).or_else(|| {
                let (_, v) = row
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&column.name))?;
                Some(v)
            });
            image.push(match value.map(|v| v.get()) {
                Some(raw) if UNAVAILABLE.contains(&raw) => {
                    unchanged.push(column.name.clone());
                    None
                }
                Some(raw) => Some(
                    debezium_value(raw, column.data_type, types.get(&column.name))
                        .map_err(|e| format!("field '{}': {e}", column.name))?,
                ),
                None => None,
            });
        }
        self.check(op, &image, &unchanged)?;
        let source = envelope.source.unwrap_or_default();
        let source_ts = source
            .ts_us
            .or(source.ts_ms.map(|ms| ms.saturating_mul(1000)))
            .or(envelope.ts_us)
            .or(envelope.ts_ms.map(|ms| ms.saturating_mul(1000)));
        let (version, source_pos) = match (&source.lsn, &source.file, source.pos) {
            (Some(lsn), _, _) => (i128::from(*lsn), Some(lsn.to_string())),
            (None, Some(file), Some(pos)) => {
                // A binlog file's number, then the position in it, then the row of the event.
                let number: i128 = (file.rsplit('.').next())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("source.file '{file}' has no binlog number"))?;
                let row = i128::from(source.row.unwrap_or(0));
                (
                    number * 100_000_000_000_000 + i128::from(pos) * 10_000 + row,
                    Some(format!("{file}:{pos}:{row}")),
                )
            }
            _ => (
                i128::from(
                    source_ts
                        .ok_or("no source position and no ts_ms: nothing orders the change")?,
                ),
                None,
            ),
        };
        Ok(Some(Change {
            op,
            image: self.object(&image),
            before: envelope.before.as_ref().map(plain_row),
            version,
            // Changes share a position (a key's change: a delete and an insert; the rows of a
            // multi-row insert): told apart by the op and the key.
            event_id: (source_pos.as_ref())
                .filter(|_| op != Op::Read)
                .map(|pos| format!("{pos}/{}/{}", op.code(), self.key_text(&image))),
            source_pos,
            source_ts,
            unchanged,
        }))
    }
}

/// A Debezium event (or its schema wrapper: `schema` and `payload`).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    op: Option<String>,
    #[serde(borrow, default)]
    before: Option<HashMap<String, &'a RawValue>>,
    #[serde(borrow, default)]
    after: Option<HashMap<String, &'a RawValue>>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    ts_us: Option<i64>,
}

/// Where Debezium read a change.
#[derive(Deserialize, Default)]
struct Source {
    #[serde(default)]
    lsn: Option<u64>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    pos: Option<u64>,
    #[serde(default)]
    row: Option<u32>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    ts_us: Option<i64>,
}

/// How the schema wrapper says a field was encoded: its logical type's name, and a decimal's
/// scale.
#[derive(Debug, Clone, Default)]
struct FieldType {
    name: String,
    scale: Option<i32>,
}

/// The encodings of the row's fields, from the `after` (or `before`) struct of the schema.
fn field_types(schema: &str) -> HashMap<String, FieldType> {
    let Ok(schema) = serde_json::from_str::<Value>(schema) else {
        return HashMap::new();
    };
    let rows = (schema
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten())
    .filter(|f| {
        matches!(
            f.get("field").and_then(Value::as_str),
            Some("after" | "before")
        )
    });
    let mut types = HashMap::new();
    for row in rows {
        for field in row
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(logical)) = (
                field.get("field").and_then(Value::as_str),
                field.get("name").and_then(Value::as_str),
            ) else {
                continue;
            };
            let scale = (field.get("parameters").and_then(|p| p.get("scale"))).and_then(|s| {
                s.as_str()
                    .and_then(|s| s.parse().ok())
                    .or(s.as_i64().map(|s| s as i32))
            });
            types.entry(name.to_string()).or_insert(FieldType {
                name: logical.to_string(),
                scale,
            });
        }
    }
    types
}

/// A Debezium value for a column of type `t`, as JSON the typed decoder reads.
fn debezium_value(raw: &str, t: ColumnType, encoded: Option<&FieldType>) -> Result<String, String> {
    let logical = encoded.map_or("", |e| e.name.as_str());
    let number = raw
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'-');
    let quoted = raw.starts_with('"');
    match t {
        ColumnType::Timestamp | ColumnType::TimestampTz if number => {
            let n: i64 = raw
                .parse()
                .map_err(|_| format!("{raw} is not a whole number of time units"))?;
            // Without the schema, told by size: Debezium's default precision mode writes
            // milliseconds for up to 3 fractional digits (MySQL DATETIME, PostgreSQL
            // timestamp(3)), microseconds beyond. Microseconds before 1973 read as milliseconds.
            let micros = match logical {
                "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                    n.saturating_mul(1000)
                }
                "io.debezium.time.MicroTimestamp" => n,
                "io.debezium.time.NanoTimestamp" => n / 1000,
                _ if n.unsigned_abs() < 100_000_000_000_000 => n.saturating_mul(1000),
                _ if n.unsigned_abs() >= 100_000_000_000_000_000 => n / 1000,
                _ => n,
            };
            let time = DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| format!("{raw} is out of range for a timestamp"))?;
            Ok(format!(
                "\"{}\"",
                time.to_rfc3339_opts(SecondsFormat::Micros, true)
            ))
        }
        ColumnType::Date if number => {
            let days: i64 = raw
                .parse()
                .map_err(|_| format!("{raw} is not a whole number of days"))?;
            let date = DateTime::from_timestamp(days.saturating_mul(86_400), 0)
                .ok_or_else(|| format!("{raw} is out of range for a date"))?;
            Ok(format!("\"{}\"", date.date_naive()))
        }
        ColumnType::Decimal { .. }
            if quoted && logical == "org.apache.kafka.connect.data.Decimal" =>
        {
            let scale = encoded.and_then(|e| e.scale).unwrap_or(0);
            connect_decimal(&unquote(raw)?, scale)
        }
        ColumnType::SmallInt
        | ColumnType::Int
        | ColumnType::BigInt
        | ColumnType::Float
        | ColumnType::Double
        | ColumnType::Decimal { .. }
            if quoted =>
        {
            // decimal.handling.mode = string.
            let text = unquote(raw)?;
            serde_json::from_str::<serde_json::Number>(&text)
                .map(|_| text.clone())
                .map_err(|_| format!("{raw} is not a number"))
        }
        ColumnType::Json if quoted => {
            // io.debezium.data.Json: the JSON as a string.
            let text = unquote(raw)?;
            Ok(match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                Ok(_) => text,
                Err(_) => raw.to_string(),
            })
        }
        _ => Ok(raw.to_string()),
    }
}

fn unquote(raw: &str) -> Result<String, String> {
    serde_json::from_str::<String>(raw).map_err(|e| format!("invalid JSON string: {e}"))
}

/// Kafka Connect's `Decimal`: the unscaled value's two's-complement bytes, big-endian, in base64.
fn connect_decimal(base64: &str, scale: i32) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| format!("'{base64}' is not a base64 Decimal: {e}"))?;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!("a Decimal of {} bytes", bytes.len()));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(full);
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale.max(0) as usize;
    Ok(match scale {
        0 => format!("{sign}{digits}"),
        _ => {
            let digits = format!("{digits:0>width$}", width = scale + 1);
            let (whole, fraction) = digits.split_at(digits.len() - scale);
            format!("{sign}{whole}.{fraction}")
        }
    })
}

/// A DynamoDB attribute value as JSON for a column of type `t`: its plain JSON, or for a
/// `TEXT` column a map, list or set as the text of its JSON.
fn attribute_json(value: &Value, t: ColumnType) -> Result<String, String> {
    let json = plain(value)?;
    let nested = matches!(json.as_bytes().first(), Some(b'{' | b'['));
    Ok(match (t, nested) {
        (ColumnType::Text, true) => Value::String(json).to_string(),
        _ => json,
    })
}

/// A DynamoDB attribute value (`{"S": "…"}`, `{"N": "…"}`, …) as plain JSON text.
fn plain(value: &Value) -> Result<String, String> {
    let (kind, inner) = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("{value} is not a DynamoDB attribute value"))?;
    let list = |items: &Value, each: &dyn Fn(&Value) -> Result<String, String>| {
        let items = items
            .as_array()
            .ok_or_else(|| format!("{kind} is not a list"))?;
        let items: Vec<String> = items.iter().map(each).collect::<Result<_, _>>()?;
        Ok::<_, String>(format!("[{}]", items.join(",")))
    };
    let string = |v: &Value| {
        v.as_str()
            .map(|s| Value::String(s.to_string()).to_string())
            .ok_or_else(|| format!("{kind} holds {v}, not a string"))
    };
    match kind.as_str() {
        "S" | "B" => string(inner),
        "N" => number(inner),
        "BOOL" => inner
            .as_bool()
            .map(|b| b.to_string())
            .ok_or_else(|| format!("BOOL holds {inner}")),
        "NULL" => Ok("null".into()),
        "M" => plain_map(
            inner
                .as_object()
                .ok_or_else(|| format!("M holds {inner}, not a map"))?,
        ),
        "L" => list(inner, &plain),
        "SS" | "BS" => list(inner, &string),
        "NS" => list(inner, &number),
        other => Err(format!("unknown attribute type '{other}'")),
    }
}

/// A DynamoDB map (`M`, or an image) as a plain JSON object.
fn plain_map(map: &serde_json::Map<String, Value>) -> Result<String, String> {
    let fields: Vec<String> = map
        .iter()
        .map(|(k, v)| Ok(format!("{}:{}", Value::String(k.clone()), plain(v)?)))
        .collect::<Result<_, String>>()?;
    Ok(format!("{{{}}}", fields.join(",")))
}

/// A Debezium row as plain JSON.
fn plain_row(row: &HashMap<String, &RawValue>) -> String {
    let mut fields: Vec<(&String, &&RawValue)> = row.iter().collect();
    fields.sort_by_key(|(k, _)| *k);
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v.get()))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A DynamoDB `N` (a number as a string) as a JSON number.
fn number(value: &Value) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("N holds {value}, not a string"))?;
    let valid = text
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
        && serde_json::from_str::<serde_json::Number>(text).is_ok();
    match valid {
        true => Ok(text.to_string()),
        false => Err(format!("N '{text}' is not a number")),
    }
}

/// A DynamoDB Streams sequence number (21 to 40 digits) as a version: those past 38 digits
/// do not fit a `_version`.
fn sequence_number(text: &str) -> Result<i128, String> {
    if text.is_empty() || text.len() > 38 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "SequenceNumber '{text}' is not a number of at most 38 digits"
        ));
    }
    text.parse()
        .map_err(|e| format!("SequenceNumber '{text}': {e}"))
}

/// `ApproximateCreationDateTime` in µs: DynamoDB Streams give seconds, Kinesis Data Streams
/// for DynamoDB milliseconds or microseconds; told apart by size.
fn micros(value: &Value) -> Option<i64> {
    let n = value.as_f64()?;
    let micros = match n.abs() {
        a if a < 1e11 => n * 1e6,
        a if a < 1e14 => n * 1e3,
        _ => n,
    };
    Some(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_decimal_is_its_unscaled_bytes() {
        // 12345 = 0x3039; -1 = 0xff.
        assert_eq!(connect_decimal("MDk=", 2).unwrap(), "123.45");
        assert_eq!(connect_decimal("/w==", 0).unwrap(), "-1");
        assert_eq!(connect_decimal("/w==", 3).unwrap(), "-0.001");
    }

    #[test]
    fn creation_times_of_each_precision_are_microseconds() {
        let at = |v: Value| micros(&v).unwrap();
        assert_eq!(at(serde_json::json!(1693997155.0)), 1_693_997_155_000_000);
        assert_eq!(
            at(serde_json::json!(1720740233012_i64)),
            1_720_740_233_012_000
        );
        assert_eq!(
            at(serde_json::json!(1720740233012345_i64)),
            1_720_740_233_012_345
        );
    }
}
