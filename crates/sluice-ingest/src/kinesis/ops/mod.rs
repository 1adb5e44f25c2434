//! The Kinesis operations: inputs as the service model names them, checks in the order the
//! service applies them (shape, then constraints, then state), outputs as the SDKs expect.
//! The streams' operations are in [`streams`], the records' in [`records`]; what both use is
//! here.

mod records;
mod streams;

pub(crate) use records::{
    MAX_GET_RECORDS_BYTES, get_records, get_shard_iterator, put_record, put_records,
};
pub(crate) use streams::{
    create_stream, delete_stream, describe_stream, describe_stream_summary, list_shards,
    list_streams,
};

use std::sync::Arc;

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_log::{Stream, hash_key_range};

pub(super) use super::ACCOUNT;
use super::{Context, KinesisError, shard_id};

pub(super) type Output = Result<Json<Value>, KinesisError>;

/// Members every stream-addressed input has.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StreamRef {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

impl StreamRef {
    /// The stream's name, from StreamName or StreamARN, checked against Kinesis' pattern.
    pub(super) fn name(&self) -> Result<String, KinesisError> {
        let name = match (&self.stream_name, &self.stream_arn) {
            (Some(name), _) => name.clone(),
            (None, Some(arn)) => arn
                .rsplit_once(":stream/")
                .map(|(_, name)| name.to_string())
                .ok_or_else(|| {
                    KinesisError::invalid_argument(format!("{arn} is not a Kinesis stream ARN"))
                })?,
            (None, None) => return Err(KinesisError::missing("streamName")),
        };
        sluice_log::validate_name(&name).map_err(|_| {
            KinesisError::validation(format!(
                "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and 128"
            ))
        })?;
        Ok(name)
    }

    pub(super) fn stream(&self, context: &Context) -> Result<Arc<Stream>, KinesisError> {
        Ok(context.ingest.log.stream(&self.name()?)?)
    }
}

pub(super) fn arn(context: &Context, name: &str) -> String {
    format!("arn:aws:kinesis:{}:{ACCOUNT}:stream/{name}", context.region)
}

pub(super) fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub(super) fn retention_hours(stream: &Stream) -> u64 {
    // A stream kept forever reports Kinesis' own maximum, 365 days.
    stream
        .meta()
        .retention
        .max_age_ms
        .map_or(8760, |ms| ms.div_ceil(3_600_000))
}

/// Parses a shard id: `shardId-000000000001` (or its number alone).
pub(super) fn parse_shard(stream: &Stream, id: &str) -> Result<u32, KinesisError> {
    let digits = id.strip_prefix("shardId-").unwrap_or(id);
    digits
        .parse::<u32>()
        .ok()
        .filter(|&n| (n as usize) < stream.shards().len() && !digits.is_empty())
        .ok_or_else(|| {
            KinesisError::not_found(format!(
                "Shard {id} in stream {} under account {ACCOUNT} does not exist",
                stream.name()
            ))
        })
}

pub(super) fn parse_seq(text: &str, member: &str) -> Result<u64, KinesisError> {
    text.parse().map_err(|_| {
        KinesisError::invalid_argument(format!("{member} {text:?} is not a valid sequence number"))
    })
}

pub(super) fn shard_json(stream: &Stream, shard: u32) -> Value {
    let (start, end) = hash_key_range(shard, stream.shards().len() as u32);
    let (first, _) = stream.shards()[shard as usize].bounds();
    json!({
        "ShardId": shard_id(shard),
        "HashKeyRange": {"StartingHashKey": start.to_string(), "EndingHashKey": end.to_string()},
        "SequenceNumberRange": {"StartingSequenceNumber": first.to_string()},
    })
}

/// A count member (Limit, MaxResults): its default when absent, else checked against 1..=max.
pub(super) fn limit(
    value: Option<i64>,
    default: usize,
    max: usize,
    member: &str,
) -> Result<usize, KinesisError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(KinesisError::validation(format!(
            "1 validation error detected: Value '{n}' at '{member}' failed to satisfy constraint: \
             Member must have value between 1 and {max}"
        ))),
    }
}
