//! Decoding a stream's records into the rows of its raw table, and the rest into error rows.
//!
//! | format | raw table columns |
//! | --- | --- |
//! | `json` with columns | the declared columns (unknown fields ignored), typed in one serde pass (`json`) |
//! | `csv` (columns required) | the declared columns, one CSV row a record (no header), typed by arrow-csv |
//! | `json` without columns | `data`: the record's JSON text (it must be JSON) |
//! | `text` | `data`: the record as text (it must be UTF-8) |
//! | `dynamodb`, `debezium` | the declared columns of the row changed, then [`change_fields`]: `_op`, `_version`, `_source_pos`, `_source_ts`, `_event_id`, `_before`, `_unchanged` (see [`change`]) |
//!
//! Every raw table also has `_shard`, `_seq` and `_ingested_at` (when the log made the record
//! durable, or Sluice read it from Kafka or Kinesis); a Kafka stream's also `_key` and
//! `_kafka_ts` (the record's key, as text, and its timestamp), a Kinesis stream's `_key`,
//! `_kinesis_seq` and `_kinesis_ts` (its partition key, its sequence number as Kinesis gave it
//! — up to 56 digits, hence text: `_seq` is Sluice's ordinal of the record in its shard — and
//! its approximate arrival time); then the partition columns derived from declared ones (`date(ts)`, `hour(ts)`). Every error row has the raw payload (as text, invalid UTF-8 replaced), the reason
//! and the same three columns, so that `good rows + error rows = records` can be checked and any
//! error traced to its record in the log.

pub mod change;
mod json;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::kernels::temporal::{DatePart, date_part};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use sluice_log::MAX_RECORD_BYTES;
use sluice_sql::{ColumnType, Connector, Format, StreamDefinition, Transform};

use crate::functions::json_field_metadata;
use crate::{PipelineError, Result};

/// The column of every raw table and errors table holding the record's shard.
pub const SHARD: &str = "_shard";
/// The column holding the record's sequence number in its shard: with `_shard`, where in
/// the log a row came from.
pub const SEQ: &str = "_seq";
/// The column holding the record's append time: when the log made it durable.
pub const INGESTED_AT: &str = "_ingested_at";
/// A Kafka or Kinesis stream's column holding the record's key (as text, invalid UTF-8
/// replaced), or partition key.
pub const KEY: &str = "_key";
/// A Kafka stream's column holding the record's timestamp (its producer's, or the broker's).
pub const KAFKA_TS: &str = "_kafka_ts";
/// A Kinesis stream's column holding the record's sequence number, as Kinesis gave it.
pub const KINESIS_SEQ: &str = "_kinesis_seq";
/// A Kinesis stream's column holding the record's approximate arrival time.
pub const KINESIS_TS: &str = "_kinesis_ts";
/// The one column of a stream without declared columns.
pub const DATA: &str = "data";
/// A change's operation: `c`, `u`, `d`, `r` or `t` (see [`change::Op`]).
pub const OP: &str = "_op";
/// What orders the changes of one key: the newest wins.
pub const VERSION: &str = "_version";
/// When the source made a change.
pub const SOURCE_TS: &str = "_source_ts";
/// The columns a change did not send (a JSON array of names), left as the mirror has them.
pub const UNCHANGED: &str = "_unchanged";
/// What identifies a repeat of a change.
pub const EVENT_ID: &str = "_event_id";

/// The type of `_version`: 38 digits hold a DynamoDB sequence number and any LSN.
pub fn version_type() -> DataType {
    DataType::Decimal128(38, 0)
}

/// The columns a change stream's rows have after the declared ones.
pub fn change_fields() -> [Field; 7] {
    [
        Field::new(OP, DataType::Utf8, false),
        Field::new(VERSION, version_type(), false),
        Field::new("_source_pos", DataType::Utf8, true),
        Field::new(SOURCE_TS, instant(), true),
        Field::new(EVENT_ID, DataType::Utf8, true),
        column_field("_before", ColumnType::Json, true),
        column_field(UNCHANGED, ColumnType::Json, true),
    ]
}

/// The Arrow type a declared column is stored as.
pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Text | ColumnType::Json => DataType::Utf8,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::SmallInt => DataType::Int16,
        ColumnType::Int => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::TimestampTz => instant(),
        ColumnType::Date => DataType::Date32,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
    }
}

/// The field of a column of type `t`: its [`arrow_type`], and for JSON the marker of a field
/// holding JSON ([`json_field_metadata`]).
pub fn column_field(name: &str, t: ColumnType, nullable: bool) -> Field {
    let field = Field::new(name, arrow_type(t), nullable);
    match t {
        ColumnType::Json => field.with_metadata(json_field_metadata()),
        _ => field,
    }
}

/// Instants (`TIMESTAMPTZ`, `_ingested_at`) are microseconds in UTC: what Delta's `timestamp`
/// type holds. (`TIMESTAMP`s have no zone: Delta's `timestamp_ntz`.)
fn instant() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `_shard`, `_seq` and `_ingested_at`: where each row of a pipeline's input came from.
pub fn meta_fields() -> [Field; 3] {
    [
        Field::new(SHARD, DataType::Int32, false),
        Field::new(SEQ, DataType::Int64, false),
        Field::new(INGESTED_AT, instant(), false),
    ]
}

/// The schema of `<stream>_errors`.
pub fn error_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("raw", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ];
    fields.extend(meta_fields());
    Arc::new(Schema::new(fields))
}

/// Rows of an errors table for decoded `rows` that a later stage refused (a view's late
/// events), with `reasons`: the raw payload is the row's columns as JSON.
pub fn error_rows(rows: &RecordBatch, reasons: StringArray) -> Result<RecordBatch> {
    let schema = rows.schema();
    let meta = [SHARD, SEQ, INGESTED_AT];
    let column = |name: &str| {
        rows.column_by_name(name)
            .cloned()
            .ok_or_else(|| PipelineError::Internal(format!("decoded rows lack {name}")))
    };
    let data: Vec<usize> = (0..rows.num_columns())
        .filter(|&i| !meta.contains(&schema.field(i).name().as_str()))
        .collect();
    let mut json = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut json);
    writer.write(&rows.project(&data)?)?;
    writer.finish()?;
    let json = String::from_utf8(json).map_err(|e| PipelineError::Internal(e.to_string()))?;
    let raw: StringArray = json.lines().map(Some).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(raw),
        Arc::new(reasons),
        column(SHARD)?,
        column(SEQ)?,
        column(INGESTED_AT)?,
    ];
    Ok(RecordBatch::try_new(error_schema(), columns)?)
}

/// One record of the log, as the decoder takes it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The shard the record was read from.
    pub shard: u32,
    /// The record's sequence number in its shard.
    pub seq: u64,
    /// When the log made the record durable (ms since the Unix epoch).
    pub append_ms: i64,
    /// The record as the producer sent it.
    pub data: &'a [u8],
    /// What the record carries from where it was read.
    pub origin: Origin<'a>,
}

/// What a record carries from where it was read, beside its data.
#[derive(Debug, Clone, Copy, Default)]
pub enum Origin<'a> {
    /// Sluice's own log: nothing more.
    #[default]
    Log,
    /// A Kafka record.
    Kafka {
        /// Its key, if it has one.
        key: Option<&'a [u8]>,
        /// Its timestamp (ms since the Unix epoch), if it has one.
        timestamp_ms: Option<i64>,
    },
    /// A Kinesis record.
    Kinesis {
        /// Its partition key.
        key: &'a str,
        /// Its sequence number, as Kinesis gave it.
        sequence: &'a str,
        /// Its approximate arrival time (ms since the Unix epoch).
        arrival_ms: Option<i64>,
    },
}

/// The decoded records: rows of the raw table, and rows of the errors table.
#[derive(Debug)]
pub struct Decoded {
    /// The records that decoded, in the raw table's schema.
    pub rows: RecordBatch,
    /// The records that did not, with the reason, in the errors table's schema.
    pub errors: RecordBatch,
}

/// The fewest records a thread decodes: below it, a thread costs more than it saves.
pub const MIN_PIECE: usize = 10_000;

/// Decodes a stream's records by its definition.
pub struct Decoder {
    format: Format,
    /// The declared columns and how records are typed into them.
    columns: Option<(SchemaRef, Typed)>,
    /// The derived partition columns: which declared column each is taken from, and how.
    derived: Vec<(usize, Transform)>,
    /// The columns rows have for where their records were read (a Kafka or Kinesis
    /// stream's).
    origin: Option<OriginColumns>,
    schema: SchemaRef,
}

/// How records are typed into declared columns.
enum Typed {
    /// JSON objects, checked and decoded in one pass (see [`json`]).
    Json(json::JsonColumns),
    /// One CSV row a record, decoded by arrow-csv (its message is the reason).
    Csv,
    /// Changes of rows, read into images typed as JSON records are.
    Change(change::ChangeReader, json::JsonColumns),
}

impl Decoder {
    /// The decoder of a stream of this definition; fails on one the dialect refuses too
    /// (CSV without columns, text with them).
    pub fn new(definition: &StreamDefinition) -> Result<Self> {
        let typed = !definition.columns.is_empty();
        // What a change must have (its key; all NOT NULL columns but for a delete; nothing for a
        // truncate) is `change`'s to check: any column may be absent.
        let declared: Vec<sluice_sql::Column> = match definition.format.is_change() {
            true => (definition.columns.iter())
                .map(|c| sluice_sql::Column {
                    nullable: true,
                    ..c.clone()
                })
                .collect(),
            false => definition.columns.clone(),
        };
        let data_fields: Vec<Field> = match (definition.format, typed) {
            (Format::Json | Format::Csv | Format::DynamoDb | Format::Debezium, true) => declared
                .iter()
                .map(|c| column_field(&c.name, c.data_type, c.nullable))
                .collect(),
            (Format::Json, false) => vec![column_field(DATA, ColumnType::Json, false)],
            (Format::Text, false) => vec![column_field(DATA, ColumnType::Text, false)],
            // The SQL dialect refuses both at CREATE STREAM.
            (Format::Csv | Format::DynamoDb | Format::Debezium, false) | (Format::Text, true) => {
                return Err(PipelineError::Unsupported(format!(
                    "format '{}' {} columns",
                    definition.format,
                    if typed { "takes no" } else { "needs" }
                )));
            }
        };
        let columns = typed.then(|| {
            let schema = Arc::new(Schema::new(data_fields.clone()));
            let typed = match definition.format {
                Format::Csv => Typed::Csv,
                Format::DynamoDb | Format::Debezium => Typed::Change(
                    change::ChangeReader::new(definition),
                    json::JsonColumns::new(&declared),
                ),
                _ => Typed::Json(json::JsonColumns::new(&definition.columns)),
            };
            (schema, typed)
        });
        let mut fields = data_fields;
        if definition.format.is_change() {
            fields.extend(change_fields());
        }
        fields.extend(meta_fields());
        let origin = definition.connector.as_ref().map(|c| match c {
            Connector::Kafka(_) => OriginColumns::Kafka,
            Connector::Kinesis(_) => OriginColumns::Kinesis,
        });
        fields.extend(origin.iter().flat_map(|o| o.fields()));
        let mut derived = Vec::new();
        for p in &definition.partition_by {
            let source = definition
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(&p.source))
                .ok_or_else(|| {
                    PipelineError::Unsupported(format!("partition by missing column {}", p.source))
                })?;
            if p.transform != Transform::Identity {
                let column = &definition.columns[source];
                let data_type = p.transform.column_type(column.data_type);
                fields.push(column_field(&p.name, data_type, column.nullable));
                derived.push((source, p.transform));
            }
        }
        Ok(Self {
            format: definition.format,
            columns,
            derived,
            origin,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The raw table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes each partition's `records` apart, on every core: each partition cut into
    /// contiguous pieces of at least [`MIN_PIECE`] records, the pieces shared by as many threads
    /// as there are cores and joined back in order. The same answer, partition by partition, as
    /// [`Decoder::decode`] of each.
    pub fn decode_parts(&self, parts: &[Vec<RawRecord<'_>>]) -> Result<Vec<Decoded>> {
        let total: usize = parts.iter().map(Vec::len).sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let piece = total.div_ceil(cores).max(MIN_PIECE);
        let pieces: Vec<(usize, &[RawRecord<'_>])> = parts
            .iter()
            .enumerate()
            .flat_map(|(part, records)| records.chunks(piece.max(1)).map(move |c| (part, c)))
            .collect();
        let decoded: Vec<Decoded> = match pieces.len() {
            0 | 1 => pieces
                .iter()
                .map(|(_, records)| self.decode(records))
                .collect::<Result<_>>()?,
            n => {
                let next = std::sync::atomic::AtomicUsize::new(0);
                let mut done: Vec<(usize, Result<Decoded>)> = std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..cores.min(n))
                        .map(|_| {
                            scope.spawn(|| {
                                let mut done = Vec::new();
                                loop {
                                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    let Some((_, records)) = pieces.get(i) else {
                                        return done;
                                    };
                                    done.push((i, self.decode(records)));
                                }
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .flat_map(|w| {
                            w.join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                        })
                        .collect()
                });
                done.sort_by_key(|(i, _)| *i);
                done.into_iter().map(|(_, d)| d).collect::<Result<_>>()?
            }
        };
        let mut decoded = decoded.into_iter();
        parts
            .iter()
            .enumerate()
            .map(|(part, records)| {
                let count = pieces.iter().filter(|(p, _)| *p == part).count();
                let pieces: Vec<Decoded> = decoded.by_ref().take(count).collect();
                match (records.is_empty(), pieces.len()) {
                    (true, _) => self.decode(&[]),
                    (false, 1) => Ok(pieces.into_iter().next().expect("one piece")),
                    _ => Ok(Decoded {
                        rows: concat_batches(&self.schema, pieces.iter().map(|d| &d.rows))?,
                        errors: concat_batches(&error_schema(), pieces.iter().map(|d| &d.errors))?,
                    }),
                }
            })
            .collect()
    }

    /// Decodes `records` on the calling thread.
    pub fn decode(&self, records: &[RawRecord<'_>]) -> Result<Decoded> {
        let mut good = Vec::with_capacity(records.len());
        let mut errors: Vec<(usize, String)> = Vec::new();
        // A record over the log's limit is an error row whatever its format (only another
        // source's can be: the log refuses them).
        let over: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].data.len() > MAX_RECORD_BYTES)
            .collect();
        for &i in &over {
            let bytes = records[i].data.len();
            let reason =
                format!("record of {bytes} bytes is over the limit of {MAX_RECORD_BYTES} bytes");
            errors.push((i, reason));
        }
        let fits = |i: &usize| over.binary_search(i).is_err();
        let data: Vec<ArrayRef> = match &self.columns {
            Some((_, Typed::Json(columns))) if over.is_empty() => columns.decode(
                records.iter().map(|r| r.data).enumerate(),
                &mut good,
                &mut errors,
            ),
            Some((_, Typed::Json(columns))) => {
                let fitting: Vec<(usize, &[u8])> = (records.iter().map(|r| r.data).enumerate())
                    .filter(|(i, _)| fits(i))
                    .collect();
                columns.decode(fitting.into_iter(), &mut good, &mut errors)
            }
            Some((_, Typed::Change(reader, columns))) => {
                let mut changes = Vec::with_capacity(records.len());
                for (i, r) in records.iter().enumerate().filter(|(i, _)| fits(i)) {
                    match reader.read(r.data) {
                        Ok(Some(change)) => changes.push((i, change)),
                        Ok(None) => {}
                        Err(reason) => errors.push((i, reason)),
                    }
                }
                let images = changes.iter().map(|(i, c)| (*i, c.image.as_slice()));
                let mut data = columns.decode(images, &mut good, &mut errors);
                data.extend(change_columns(&changes, &good)?);
                data
            }
            Some((schema, Typed::Csv)) => {
                good.extend((0..records.len()).filter(fits));
                decode_csv(schema, records, &mut good, &mut errors)?
                    .columns()
                    .to_vec()
            }
            None => {
                let mut texts = Vec::with_capacity(records.len());
                for (i, r) in records.iter().enumerate().filter(|(i, _)| fits(i)) {
                    match self.text(r.data) {
                        Ok(text) => {
                            good.push(i);
                            texts.push(text);
                        }
                        Err(reason) => errors.push((i, reason)),
                    }
                }
                vec![Arc::new(StringArray::from(texts))]
            }
        };
        let derived = self
            .derived
            .iter()
            .map(|&(source, transform)| derive(&data[source], transform))
            .collect::<Result<Vec<_>, _>>()?;
        let mut columns = data;
        columns.extend(meta_columns(records, &good));
        if let Some(origin) = self.origin {
            columns.extend(origin.columns(records, &good));
        }
        columns.extend(derived);
        let rows = RecordBatch::try_new(self.schema.clone(), columns)?;

        errors.sort_by_key(|(i, _)| *i);
        let raw: StringArray = errors
            .iter()
            .map(|(i, _)| Some(raw_text(records[*i].data)))
            .collect();
        let reasons: StringArray = errors
            .iter()
            .map(|(_, reason)| Some(reason.as_str()))
            .collect();
        let failed: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(raw), Arc::new(reasons)];
        columns.extend(meta_columns(records, &failed));
        let errors = RecordBatch::try_new(error_schema(), columns)?;
        Ok(Decoded { rows, errors })
    }

    /// The `data` text of a record of a stream without columns.
    fn text<'a>(&self, data: &'a [u8]) -> Result<&'a str, String> {
        let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8 text: {e}"))?;
        if self.format == Format::Json {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| format!("invalid JSON: {e}"))?;
        }
        Ok(text)
    }
}

/// The [`change_fields`] of the changes whose records are at `good` (a subsequence of
/// `changes`' records, in order).
fn change_columns(
    changes: &[(usize, change::Change)],
    good: &[usize],
) -> Result<Vec<ArrayRef>, ArrowError> {
    let mut at = changes.iter().peekable();
    let kept: Vec<&change::Change> = good
        .iter()
        .filter_map(|&i| {
            while at.next_if(|(j, _)| *j < i).is_some() {}
            at.next_if(|(j, _)| *j == i).map(|(_, c)| c)
        })
        .collect();
    let unchanged = |c: &change::Change| {
        (!c.unchanged.is_empty()).then(|| serde_json::Value::from(c.unchanged.clone()).to_string())
    };
    let versions = arrow::array::Decimal128Array::from_iter_values(kept.iter().map(|c| c.version))
        .with_precision_and_scale(38, 0)?;
    Ok(vec![
        Arc::new(StringArray::from_iter_values(
            kept.iter().map(|c| c.op.code()),
        )),
        Arc::new(versions),
        Arc::new(StringArray::from_iter(
            kept.iter().map(|c| c.source_pos.as_deref()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(kept.iter().map(|c| c.source_ts))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter(
            kept.iter().map(|c| c.event_id.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            kept.iter().map(|c| c.before.as_deref()),
        )),
        Arc::new(StringArray::from_iter(kept.iter().map(|c| unchanged(c)))),
    ])
}

/// Decodes the CSV records at `good` in one pass. Should that fail, decodes them one by one
/// and moves the ones refused to `errors` with arrow-csv's message, so that a bad record never
/// costs its batch.
fn decode_csv(
    schema: &SchemaRef,
    records: &[RawRecord<'_>],
    good: &mut Vec<usize>,
    errors: &mut Vec<(usize, String)>,
) -> Result<RecordBatch> {
    if good.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let lines = |at: &[usize]| {
        let mut buf = Vec::with_capacity(at.iter().map(|&i| records[i].data.len() + 1).sum());
        for &i in at {
            buf.extend_from_slice(records[i].data);
            buf.push(b'\n');
        }
        buf
    };
    if let Ok(batch) = decode_csv_rows(schema, &lines(good), good.len()) {
        return Ok(batch);
    }
    let mut batches = Vec::with_capacity(good.len());
    good.retain(|&i| match decode_csv_rows(schema, &lines(&[i]), 1) {
        Ok(batch) => {
            batches.push(batch);
            true
        }
        Err(e) => {
            errors.push((i, e.to_string()));
            false
        }
    });
    Ok(concat_batches(schema, &batches)?)
}

/// A record as an error row's `raw`: its text (invalid UTF-8 replaced); of a record over the
/// limit, its first KiB and an ellipsis.
fn raw_text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    const KEPT: usize = 1024;
    match data.len() > MAX_RECORD_BYTES {
        false => String::from_utf8_lossy(data),
        true => format!("{}…", String::from_utf8_lossy(&data[..KEPT])).into(),
    }
}

/// Checks that arrow-csv took all of `buf` as exactly `rows` rows.
fn exactly(
    batch: Option<RecordBatch>,
    schema: &SchemaRef,
    rows: usize,
    consumed: usize,
    buf: &[u8],
) -> Result<RecordBatch, ArrowError> {
    let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    if consumed != buf.len() || batch.num_rows() != rows {
        return Err(ArrowError::ParseError(format!(
            "expected {rows} records, decoded {} from {consumed} of {} bytes",
            batch.num_rows(),
            buf.len()
        )));
    }
    Ok(batch)
}

fn decode_csv_rows(schema: &SchemaRef, buf: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
    let mut decoder = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_batch_size(rows.max(1))
        .build_decoder();
    let mut consumed = decoder.decode(buf)?;
    // The end of input: a last row without its newline is complete now.
    consumed += decoder.decode(&[])?;
    exactly(decoder.flush()?, schema, rows, consumed, buf)
}

/// A derived partition column: the UTC date or hour of a timestamp column.
fn derive(column: &ArrayRef, transform: Transform) -> Result<ArrayRef, ArrowError> {
    match transform {
        Transform::Identity => Ok(column.clone()),
        Transform::Date => cast(column, &DataType::Date32),
        Transform::Hour => date_part(column, DatePart::Hour),
    }
}

/// `_shard`, `_seq` and `_ingested_at` of the records at `at`.
fn meta_columns(records: &[RawRecord<'_>], at: &[usize]) -> [ArrayRef; 3] {
    let shard: Int32Array = at.iter().map(|&i| Some(records[i].shard as i32)).collect();
    let seq: Int64Array = at.iter().map(|&i| Some(records[i].seq as i64)).collect();
    let ingested: TimestampMicrosecondArray = at
        .iter()
        .map(|&i| Some(records[i].append_ms.saturating_mul(1000)))
        .collect();
    [
        Arc::new(shard),
        Arc::new(seq),
        Arc::new(ingested.with_timezone("UTC")),
    ]
}

/// The columns of where a stream's records were read.
#[derive(Debug, Clone, Copy)]
enum OriginColumns {
    /// `_key`, `_kafka_ts`.
    Kafka,
    /// `_key`, `_kinesis_seq`, `_kinesis_ts`.
    Kinesis,
}

impl OriginColumns {
    fn fields(self) -> Vec<Field> {
        match self {
            OriginColumns::Kafka => vec![
                Field::new(KEY, DataType::Utf8, true),
                Field::new(KAFKA_TS, instant(), true),
            ],
            OriginColumns::Kinesis => vec![
                Field::new(KEY, DataType::Utf8, true),
                Field::new(KINESIS_SEQ, DataType::Utf8, true),
                Field::new(KINESIS_TS, instant(), true),
            ],
        }
    }

    /// The columns of the records at `at`.
    fn columns(self, records: &[RawRecord<'_>], at: &[usize]) -> Vec<ArrayRef> {
        let origins = at.iter().map(|&i| records[i].origin);
        let micros = |ms: Option<i64>| ms.map(|ms| ms.saturating_mul(1000));
        let instants = |ms: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(ms).with_timezone("UTC"))
        };
        match self {
            OriginColumns::Kafka => {
                let (keys, times): (Vec<_>, Vec<_>) = origins
                    .map(|o| match o {
                        Origin::Kafka { key, timestamp_ms } => {
                            (key.map(String::from_utf8_lossy), micros(timestamp_ms))
                        }
                        _ => (None, None),
                    })
                    .unzip();
                vec![Arc::new(StringArray::from_iter(keys)), instants(times)]
            }
            OriginColumns::Kinesis => {
                let mut keys = Vec::with_capacity(at.len());
                let mut sequences = Vec::with_capacity(at.len());
                let mut times = Vec::with_capacity(at.len());
                for origin in origins {
                    let (key, sequence, time) = match origin {
                        Origin::Kinesis {
                            key,
                            sequence,
                            arrival_ms,
                        } => (Some(key), Some(sequence), micros(arrival_ms)),
                        _ => (None, None, None),
                    };
                    keys.push(key);
                    sequences.push(sequence);
                    times.push(time);
                }
                vec![
                    Arc::new(StringArray::from(keys)),
                    Arc::new(StringArray::from(sequences)),
                    instants(times),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests;
