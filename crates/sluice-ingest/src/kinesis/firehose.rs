//! The Firehose API (`Firehose_20150804.*`, Amazon Data Firehose — once Kinesis Data Firehose),
//! beside Kinesis' on the same route and with the same JSON 1.1 shapes, so that producers
//! written for Firehose work against Sluice by setting `endpoint_url`.
//!
//! A delivery stream is a Sluice stream: created by CreateDeliveryStream (with the streams'
//! default shards; a destination configuration is accepted and its destination is the lake:
//! the stream's raw table), listed, described and deleted as one. PutRecord and PutRecordBatch
//! append to the log and answer once the records are durable. A batch's records are spread over
//! the stream's shards (Firehose promises no order), each shard's append succeeding or failing
//! apart: a batch whose appends partly fail answers 200 with each record's outcome
//! (`FailedPutCount`, `RequestResponses`), and a producer retries what failed, as Firehose's
//! producers do. Limits are Firehose's: 500 records and 4 MiB a batch, 1,000 KiB a record.

use std::sync::atomic::Ordering;

use axum::Json;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_log::{Retention, StreamOptions};

use super::ops::{Output, limit, seconds};
use super::{ACCOUNT, Context, KinesisError};

/// What every Firehose operation's `X-Amz-Target` header starts with.
pub const TARGET_PREFIX: &str = "Firehose_20150804.";
/// The operations a read-only user may not call.
pub(super) const WRITES: [&str; 4] = [
    "CreateDeliveryStream",
    "DeleteDeliveryStream",
    "PutRecord",
    "PutRecordBatch",
];
/// Shards of a stream created as a delivery stream (a Kinesis stream's default).
const SHARDS: u32 = 4;
const MAX_BATCH_RECORDS: usize = 500;
const MAX_BATCH_BYTES: usize = 4 << 20;
const MAX_RECORD_BYTES: usize = 1_000 * 1024;
const MAX_NAME_CHARS: usize = 64;

pub(super) async fn dispatch(
    context: &Context,
    operation: &str,
    body: &[u8],
) -> Result<Json<Value>, KinesisError> {
    use super::input;
    match operation {
        "CreateDeliveryStream" => create(context, input(body)?).await,
        "DeleteDeliveryStream" => delete(context, input(body)?).await,
        "DescribeDeliveryStream" => describe(context, input(body)?),
        "ListDeliveryStreams" => list(context, input(body)?),
        "PutRecord" => put_record(context, input(body)?).await,
        "PutRecordBatch" => put_record_batch(context, input(body)?).await,
        other => Err(KinesisError::unknown_operation(format!(
            "unknown operation {other}"
        ))),
    }
}

/// The log's errors, with Firehose's words for a delivery stream that is or is not there.
fn error(e: sluice_log::Error) -> KinesisError {
    match &e {
        sluice_log::Error::StreamNotFound(name) => KinesisError::not_found(format!(
            "Firehose {name} under account {ACCOUNT} not found."
        )),
        sluice_log::Error::StreamExists(name) => KinesisError::resource_in_use(format!(
            "Firehose {name} under accountId {ACCOUNT} already exists"
        )),
        // Firehose has no throughput exception of its own: it says "slow down".
        sluice_log::Error::Backpressure => KinesisError::service_unavailable(
            "Slow down: the log is busy writing earlier records; retry.",
        ),
        _ => {
            let mut error = KinesisError::from(e);
            // Kinesis's name for it has no suffix; Firehose's has.
            if error.kind == "ServiceUnavailable" {
                error.kind = "ServiceUnavailableException";
            }
            error
        }
    }
}

fn arn(context: &Context, name: &str) -> String {
    format!(
        "arn:aws:firehose:{}:{ACCOUNT}:deliverystream/{name}",
        context.region
    )
}

/// A delivery stream's name, checked against Firehose's pattern.
fn name(name: Option<String>) -> Result<String, KinesisError> {
    let name = name.ok_or_else(|| KinesisError::missing("deliveryStreamName"))?;
    if name.chars().count() > MAX_NAME_CHARS || sluice_log::validate_name(&name).is_err() {
        return Err(KinesisError::validation(format!(
            "1 validation error detected: Value '{name:.80}' at 'deliveryStreamName' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ \
             and have length between 1 and {MAX_NAME_CHARS}"
        )));
    }
    Ok(name)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateInput {
    delivery_stream_name: Option<String>,
    delivery_stream_type: Option<String>,
}

async fn create(context: &Context, input: CreateInput) -> Output {
    let name = name(input.delivery_stream_name)?;
    match input.delivery_stream_type.as_deref() {
        None | Some("DirectPut") => {}
        Some(other) => {
            return Err(KinesisError::invalid_argument(format!(
                "DeliveryStreamType {other} is not served: Sluice's delivery streams are \
                 DirectPut (to read a Kinesis stream or a Kafka topic, CREATE STREAM … WITH \
                 (connector = 'kinesis' | 'kafka', …))"
            )));
        }
    }
    let log = context.ingest.log.clone();
    let options = StreamOptions {
        shards: SHARDS,
        retention: Retention::default(),
        definition: Value::Null,
        elsewhere: None,
    };
    let creating = name.clone();
    tokio::task::spawn_blocking(move || log.create_stream(&creating, options))
        .await
        .map_err(|e| sluice_log::Error::Internal(e.to_string()))?
        .map_err(error)?;
    Ok(Json(json!({"DeliveryStreamARN": arn(context, &name)})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamedInput {
    delivery_stream_name: Option<String>,
}

async fn delete(context: &Context, input: NamedInput) -> Output {
    let name = name(input.delivery_stream_name)?;
    let log = context.ingest.log.clone();
    tokio::task::spawn_blocking(move || log.drop_stream(&name))
        .await
        .map_err(|e| sluice_log::Error::Internal(e.to_string()))?
        .map_err(error)?;
    Ok(Json(json!({})))
}

fn describe(context: &Context, input: NamedInput) -> Output {
    let name = name(input.delivery_stream_name)?;
    let stream = context.ingest.log.stream(&name).map_err(error)?;
    let meta = stream.meta();
    // A stream whose doors take no records is no delivery stream.
    if !stream.takes_doors() {
        return Err(error(sluice_log::Error::StreamNotFound(name)));
    }
    Ok(Json(json!({"DeliveryStreamDescription": {
        "DeliveryStreamName": meta.name,
        "DeliveryStreamARN": arn(context, &meta.name),
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamType": "DirectPut",
        "VersionId": "1",
        "CreateTimestamp": seconds(meta.created_ms),
        "Destinations": [],
        "HasMoreDestinations": false,
    }})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    limit: Option<i64>,
    delivery_stream_type: Option<String>,
    exclusive_start_delivery_stream_name: Option<String>,
}

fn list(context: &Context, input: ListInput) -> Output {
    let limit = limit(input.limit, 10, 10_000, "limit")?;
    let after = input.exclusive_start_delivery_stream_name;
    // Every stream that takes records is a delivery stream (DirectPut, the one type served).
    let names: Vec<String> = match input.delivery_stream_type.as_deref() {
        None | Some("DirectPut") => context
            .ingest
            .log
            .streams()
            .into_iter()
            .filter(|s| s.takes_doors())
            .map(|s| s.name().to_string())
            .filter(|name| after.as_deref().is_none_or(|after| name.as_str() > after))
            .collect(),
        Some(_) => Vec::new(),
    };
    let page = &names[..names.len().min(limit)];
    Ok(Json(json!({
        "DeliveryStreamNames": page,
        "HasMoreDeliveryStreams": page.len() < names.len(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordInput {
    data: Option<String>,
}

impl RecordInput {
    fn data(self, member: &str) -> Result<Vec<u8>, KinesisError> {
        let data = self
            .data
            .ok_or_else(|| KinesisError::missing(&format!("{member}data")))?;
        let data = STANDARD.decode(data.as_bytes()).map_err(|e| {
            KinesisError::serialization(format!("{member}Data is not valid base64: {e}"))
        })?;
        if data.len() > MAX_RECORD_BYTES {
            return Err(KinesisError::validation(format!(
                "1 validation error detected: Value at '{member}data' failed to satisfy \
                 constraint: Member must have length less than or equal to {MAX_RECORD_BYTES}"
            )));
        }
        Ok(data)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordInput {
    delivery_stream_name: Option<String>,
    record: Option<RecordInput>,
}

async fn put_record(context: &Context, input: PutRecordInput) -> Output {
    let name = name(input.delivery_stream_name)?;
    let record = input
        .record
        .ok_or_else(|| KinesisError::missing("record"))?;
    let responses = put(context, &name, vec![record.data("record.")?]).await?;
    match responses.into_iter().next() {
        Some(Ok(id)) => Ok(Json(json!({"RecordId": id, "Encrypted": false}))),
        Some(Err(e)) => Err(e),
        None => {
            Err(sluice_log::Error::Internal("an append of one record wrote nothing".into()).into())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordBatchInput {
    delivery_stream_name: Option<String>,
    records: Option<Vec<RecordInput>>,
}

async fn put_record_batch(context: &Context, input: PutRecordBatchInput) -> Output {
    let name = name(input.delivery_stream_name)?;
    let records = input
        .records
        .ok_or_else(|| KinesisError::missing("records"))?;
    if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
        return Err(KinesisError::validation(format!(
            "1 validation error detected: Value at 'records' failed to satisfy constraint: \
             Member must have length between 1 and {MAX_BATCH_RECORDS} (found {})",
            records.len()
        )));
    }
    let records = (records.into_iter().enumerate())
        .map(|(i, r)| r.data(&format!("records.{}.member.", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let size: usize = records.iter().map(Vec::len).sum();
    if size > MAX_BATCH_BYTES {
        return Err(KinesisError::invalid_argument(format!(
            "Records size exceeds {MAX_BATCH_BYTES} bytes (found {size})"
        )));
    }
    let responses: Vec<Value> = put(context, &name, records)
        .await?
        .into_iter()
        .map(|outcome| match outcome {
            Ok(id) => json!({"RecordId": id}),
            // Firehose's two codes: a failure of Sluice's, or anything to retry.
            Err(e) => {
                let code = match e.kind {
                    "InternalFailure" => "InternalFailure",
                    _ => "ServiceUnavailableException",
                };
                json!({"ErrorCode": code, "ErrorMessage": e.message})
            }
        })
        .collect();
    let failed = responses
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    Ok(Json(json!({
        "FailedPutCount": failed,
        "Encrypted": false,
        "RequestResponses": responses,
    })))
}

/// Appends `records` to delivery stream `name`, spread over its shards from the next in turn:
/// per record, its id (`<shard>-<sequence number>`) or why its shard's append failed.
async fn put(
    context: &Context,
    name: &str,
    records: Vec<Vec<u8>>,
) -> Result<Vec<Result<String, KinesisError>>, KinesisError> {
    let stream = context.ingest.log.stream(name).map_err(error)?;
    let shards = stream.shards().len() as u64;
    let first = context
        .ingest
        .round_robin
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    let mut batches = stream.batches();
    let mut placed = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let shard = ((first + i as u64) % shards) as u32;
        placed.push((shard, batches.push(shard, b"", record)?));
    }
    let outcome = stream.append(batches).await.map_err(error)?;
    Ok(placed
        .into_iter()
        .map(
            |(shard, index)| match outcome.iter().find(|o| o.shard == shard).map(|o| &o.result) {
                Some(Ok(a)) => Ok(format!("{shard}-{}", a.seq(index))),
                Some(Err(e)) => Err(error(e.clone())),
                None => Err(sluice_log::Error::Internal("shard not written".into()).into()),
            },
        )
        .collect())
}
