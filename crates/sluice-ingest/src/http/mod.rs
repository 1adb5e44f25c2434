//! `POST /v1/streams/{stream}/records`: Sluice's own ingest API.
//!
//! The body is NDJSON (one record a line), or, with `Content-Type: application/json`, a JSON
//! array of records (or one JSON value). `?key=field` takes each record's partition key from
//! that top-level field; without it, each request goes whole to the next shard in turn.
//!
//! The answer, `{"accepted": n, "shard_sequences": {"<shard>": <last sequence number>}}`, comes
//! only once every record is durable. A request with any bad part is refused whole.

mod split;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::{Deserialize, Serialize};

pub use split::{SplitError, json_records, ndjson_lines, partition_key};

use crate::{HttpError, Ingest};

pub fn routes() -> Router<Ingest> {
    Router::new().route("/v1/streams/{stream}/records", post(put_records))
}

#[derive(Debug, Deserialize)]
struct PutParams {
    key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: usize,
    /// The last sequence number written to each shard the request touched.
    pub shard_sequences: BTreeMap<String, u64>,
}

async fn put_records(
    State(ingest): State<Ingest>,
    Path(stream): Path<String>,
    Query(params): Query<PutParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, HttpError> {
    sluice_log::validate_name(&stream)?;
    let stream = ingest.log.stream(&stream)?;
    let limit = ingest.config.max_body_bytes;
    let _memory = ingest
        .reserve(crate::request_memory(&headers, limit))
        .await
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backpressure",
                "too many requests are being handled: slow down and retry",
            )
        })?;
    let body = read_body(body, &headers, limit).await?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));

    // Records go straight from the body into per-shard batches: no list of them is built.
    let mut batches = stream.batches();
    let round_robin =
        (ingest.round_robin.fetch_add(1, Ordering::Relaxed) % stream.shards().len() as u64) as u32;
    let max_records = ingest.config.max_records_per_request;
    let mut count = 0usize;
    let mut push = |record: &[u8]| -> Result<(), HttpError> {
        count += 1;
        if count > max_records {
            return Err(HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_records",
                format!("the request holds more than {max_records} records: split it"),
            ));
        }
        let pushed = match &params.key {
            Some(field) => {
                let key = partition_key(record, field);
                batches.push(stream.shard_for_key(&key), &key, record)
            }
            None => batches.push(round_robin, b"", record),
        };
        pushed.map(drop).map_err(|e| {
            let e = HttpError::from(e);
            HttpError {
                message: format!("record {count} (counting from 1): {}", e.message),
                ..e
            }
        })
    };
    if is_json {
        json_records(&body, &mut push).map_err(|e| match e {
            SplitError::Record(e) => e,
            SplitError::Json(e) => {
                HttpError::bad_request("invalid_json", format!("the body is not a JSON array: {e}"))
                    .with_details(serde_json::json!({"line": e.line(), "column": e.column()}))
            }
        })?;
    } else {
        ndjson_lines(&body).try_for_each(&mut push)?;
    }
    if count == 0 {
        return Err(HttpError::bad_request(
            "no_records",
            "the body holds no records",
        ));
    }
    let outcome = stream.append(batches).await?;
    answer(outcome)
}

/// The answer to an append: every shard's last sequence number, or what went wrong. When some
/// shards stored their records and others failed, the answer says which: retrying the whole
/// request would store the first part twice.
fn answer(outcome: Vec<sluice_log::ShardAppend>) -> Result<Json<Accepted>, HttpError> {
    let mut accepted = 0;
    let mut shard_sequences = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut first_error = None;
    for part in outcome {
        match part.result {
            Ok(appended) => {
                accepted += appended.count as usize;
                shard_sequences.insert(part.shard.to_string(), appended.last_seq());
            }
            Err(e) => {
                failed.insert(part.shard.to_string(), e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(Json(Accepted {
            accepted,
            shard_sequences,
        })),
        Some(e) if shard_sequences.is_empty() => Err(e.into()),
        Some(_) => Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "partially_written",
            format!(
                "{accepted} records were stored (shards {}), the rest were not (shards {}): \
                 resend only the records of the failed shards",
                shard_sequences
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                failed.keys().cloned().collect::<Vec<_>>().join(", "),
            ),
        )
        .with_details(serde_json::json!({
            "accepted": accepted,
            "shard_sequences": shard_sequences,
            "failed_shards": failed,
        }))),
    }
}

/// Reads a whole body, refusing one over `limit` bytes before reading it when it says its size.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let cause = e.into_inner();
        if cause.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            HttpError::bad_request("invalid_body", format!("could not read the body: {cause}"))
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
