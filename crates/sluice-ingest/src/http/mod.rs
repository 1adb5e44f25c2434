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
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

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
    let (body, _memory) = read_body(&ingest, body, &headers, limit).await?;
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

/// How long a request's body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    /// No request memory was free within the wait.
    Backpressure,
    TimedOut,
    Invalid(String),
}

impl From<BodyError> for HttpError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(limit) => HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over the limit of {limit} bytes"),
            ),
            BodyError::Backpressure => HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backpressure",
                "too many requests are being handled: slow down and retry",
            ),
            BodyError::TimedOut => HttpError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            ),
            BodyError::Invalid(m) => HttpError::bad_request("invalid_body", m),
        }
    }
}

/// Reads a body of at most `limit` bytes within [`BODY_TIMEOUT`], reserving request memory as
/// it arrives — twice its size: the body, and the batches or answers made of it — so that a
/// client that declares a large body and sends little holds only what it sent. The permit is
/// the caller's to keep while it uses what it made of the body.
pub async fn read_body(
    ingest: &Ingest,
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<(bytes::Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut body = bytes::BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                BodyError::Invalid(format!("could not read the body: {}", e.into_inner()))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            let permit = ingest
                .reserve(2 * chunk.len())
                .await
                .ok_or(BodyError::Backpressure)?;
            match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), held))
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| BodyError::TimedOut)?
}

#[cfg(test)]
pub(crate) mod tests;
