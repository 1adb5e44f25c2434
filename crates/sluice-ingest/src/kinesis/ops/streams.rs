//! The streams' operations: CreateStream, DeleteStream, DescribeStream,
//! DescribeStreamSummary, ListStreams, ListShards.

use axum::Json;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_log::{Retention, StreamOptions};

use super::{
    Context, KinesisError, Output, StreamRef, arn, limit, parse_shard, retention_hours, seconds,
    shard_json,
};

/// Shards of a stream created without a ShardCount (as an on-demand Kinesis stream starts).
const DEFAULT_SHARDS: u32 = 4;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateStreamInput {
    #[serde(flatten)]
    stream: StreamRef,
    shard_count: Option<i64>,
}

pub(crate) async fn create_stream(context: &Context, input: CreateStreamInput) -> Output {
    let name = input.stream.name()?;
    let shards = match input.shard_count {
        None => DEFAULT_SHARDS,
        Some(n) if n < 1 => {
            return Err(KinesisError::validation(format!(
                "1 validation error detected: Value '{n}' at 'shardCount' failed to satisfy constraint: \
                 Member must have value greater than or equal to 1"
            )));
        }
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    let log = context.ingest.log.clone();
    let options = StreamOptions {
        shards,
        retention: Retention::default(),
        definition: Value::Null,
        elsewhere: None,
    };
    tokio::task::spawn_blocking(move || log.create_stream(&name, options))
        .await
        .map_err(|e| sluice_log::Error::Internal(e.to_string()))??;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteStreamInput {
    #[serde(flatten)]
    stream: StreamRef,
    #[serde(rename = "EnforceConsumerDeletion")]
    _enforce_consumer_deletion: Option<bool>,
}

pub(crate) async fn delete_stream(context: &Context, input: DeleteStreamInput) -> Output {
    let name = input.stream.name()?;
    let log = context.ingest.log.clone();
    tokio::task::spawn_blocking(move || log.drop_stream(&name))
        .await
        .map_err(|e| sluice_log::Error::Internal(e.to_string()))??;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeStreamInput {
    #[serde(flatten)]
    stream: StreamRef,
    limit: Option<i64>,
    exclusive_start_shard_id: Option<String>,
}

pub(crate) fn describe_stream(context: &Context, input: DescribeStreamInput) -> Output {
    let stream = input.stream.stream(context)?;
    let limit = limit(input.limit, 100, 10_000, "limit")?;
    let first = match &input.exclusive_start_shard_id {
        Some(id) => parse_shard(&stream, id)? as usize + 1,
        None => 0,
    };
    let count = stream.shards().len();
    let shards: Vec<Value> = (first..count)
        .take(limit)
        .map(|s| shard_json(&stream, s as u32))
        .collect();
    let has_more = first + shards.len() < count;
    let meta = stream.meta();
    Ok(Json(json!({"StreamDescription": {
        "StreamName": meta.name,
        "StreamARN": arn(context, &meta.name),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
        "Shards": shards,
        "HasMoreShards": has_more,
        "RetentionPeriodHours": retention_hours(&stream),
        "StreamCreationTimestamp": seconds(meta.created_ms),
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    }})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeStreamSummaryInput {
    #[serde(flatten)]
    stream: StreamRef,
}

pub(crate) fn describe_stream_summary(
    context: &Context,
    input: DescribeStreamSummaryInput,
) -> Output {
    let stream = input.stream.stream(context)?;
    let meta = stream.meta();
    Ok(Json(json!({"StreamDescriptionSummary": {
        "StreamName": meta.name,
        "StreamARN": arn(context, &meta.name),
        "StreamId": meta.id.to_string(),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
        "RetentionPeriodHours": retention_hours(&stream),
        "StreamCreationTimestamp": seconds(meta.created_ms),
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
        "OpenShardCount": meta.shards,
        "ConsumerCount": 0,
        "MaxRecordSizeInKiB": sluice_log::MAX_RECORD_BYTES / 1024,
    }})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListStreamsInput {
    limit: Option<i64>,
    exclusive_start_stream_name: Option<String>,
    next_token: Option<String>,
}

pub(crate) fn list_streams(context: &Context, input: ListStreamsInput) -> Output {
    let limit = limit(input.limit, 100, 10_000, "limit")?;
    let after = match &input.next_token {
        Some(token) => Some(decode_token(token)?),
        None => input.exclusive_start_stream_name.clone(),
    };
    let streams: Vec<_> = context
        .ingest
        .log
        .streams()
        .into_iter()
        .filter(|s| after.as_deref().is_none_or(|after| s.name() > after))
        .collect();
    let page = &streams[..streams.len().min(limit)];
    let has_more = page.len() < streams.len();
    let mut output = json!({
        "StreamNames": page.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "HasMoreStreams": has_more,
        "StreamSummaries": page.iter().map(|s| json!({
            "StreamName": s.name(),
            "StreamARN": arn(context, s.name()),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "StreamCreationTimestamp": seconds(s.meta().created_ms),
        })).collect::<Vec<_>>(),
    });
    if let (true, Some(last)) = (has_more, page.last()) {
        output["NextToken"] = json!(STANDARD.encode(last.name()));
    }
    Ok(Json(output))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListShardsInput {
    #[serde(flatten)]
    stream: StreamRef,
    next_token: Option<String>,
    exclusive_start_shard_id: Option<String>,
    max_results: Option<i64>,
}

pub(crate) fn list_shards(context: &Context, input: ListShardsInput) -> Output {
    let max = limit(input.max_results, 1000, 10_000, "maxResults")?;
    // A NextToken carries the stream and where the previous page stopped.
    let (stream, first) = match &input.next_token {
        Some(token) => {
            if input.stream.stream_name.is_some() {
                return Err(KinesisError::invalid_argument(
                    "NextToken and StreamName cannot be provided together.",
                ));
            }
            let decoded = decode_token(token)?;
            let (name, first) = decoded
                .rsplit_once('/')
                .and_then(|(n, f)| Some((n.to_string(), f.parse::<usize>().ok()?)))
                .ok_or_else(|| KinesisError::invalid_argument("Invalid NextToken."))?;
            (context.ingest.log.stream(&name)?, first)
        }
        None => {
            let stream = input.stream.stream(context)?;
            let first = match &input.exclusive_start_shard_id {
                Some(id) => parse_shard(&stream, id)? as usize + 1,
                None => 0,
            };
            (stream, first)
        }
    };
    let count = stream.shards().len();
    let end = count.min(first.saturating_add(max));
    let shards: Vec<Value> = (first.min(end)..end)
        .map(|s| shard_json(&stream, s as u32))
        .collect();
    let mut output = json!({ "Shards": shards });
    if end < count {
        output["NextToken"] = json!(STANDARD.encode(format!("{}/{end}", stream.name())));
    }
    Ok(Json(output))
}

fn decode_token(token: &str) -> Result<String, KinesisError> {
    STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| KinesisError::invalid_argument("Invalid NextToken."))
}
