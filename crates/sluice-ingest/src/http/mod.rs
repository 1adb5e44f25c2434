//! `POST /v1/streams/{stream}/records`: Sluice's own ingest API (the route is the server's;
//! this is what it does).
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

use axum::body::Body;
use axum::http::{HeaderMap, header};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

pub use split::{SplitError, json_records, ndjson_lines, partition_key};

use crate::{Ingest, IngestError};

/// The answer to an ingest request.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    /// Records stored.
    pub accepted: usize,
    /// The last sequence number written to each shard the request touched.
    pub shard_sequences: BTreeMap<String, u64>,
}

/// Stores the records of `body` in stream `stream`, keyed by each record's field `key` (or all
/// in the next shard in turn), and answers once they are durable.
pub async fn put_records(
    ingest: &Ingest,
    stream: &str,
    key: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, IngestError> {
    sluice_log::validate_name(stream)?;
    let stream = ingest.log.stream(stream)?;
    let limit = ingest.config.max_body_bytes;
    let (body, _memory) = read_body(ingest, body, headers, limit).await?;
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
    let mut push = |record: &[u8]| -> Result<(), IngestError> {
        count += 1;
        if count > max_records {
            return Err(IngestError::TooManyRecords(max_records));
        }
        let pushed = match key {
            Some(field) => {
                let key = partition_key(record, field);
                batches.push(stream.shard_for_key(&key), &key, record)
            }
            None => batches.push(round_robin, b"", record),
        };
        pushed.map(drop).map_err(|source| IngestError::Record {
            index: count,
            source,
        })
    };
    if is_json {
        json_records(&body, &mut push).map_err(|e| match e {
            SplitError::Record(e) => e,
            SplitError::Json(e) => IngestError::InvalidJson {
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            },
        })?;
    } else {
        ndjson_lines(&body).try_for_each(&mut push)?;
    }
    if count == 0 {
        return Err(IngestError::NoRecords);
    }
    let outcome = stream.append(batches).await?;
    answer(outcome)
}

/// The answer to an append: every shard's last sequence number, or what went wrong. When some
/// shards stored their records and others failed, the answer says which: retrying the whole
/// request would store the first part twice.
fn answer(outcome: Vec<sluice_log::ShardAppend>) -> Result<Accepted, IngestError> {
    let mut accepted = 0;
    let mut shard_sequences = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut first_error = None;
    for part in outcome {
        match part.result {
            Ok(appended) => {
                accepted += appended.count() as usize;
                shard_sequences.insert(part.shard.to_string(), appended.last_seq());
            }
            Err(e) => {
                failed.insert(part.shard.to_string(), e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(Accepted {
            accepted,
            shard_sequences,
        }),
        Some(e) if shard_sequences.is_empty() => Err(e.into()),
        Some(_) => Err(IngestError::PartiallyWritten {
            accepted,
            shard_sequences,
            failed,
        }),
    }
}

/// How long a request's body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads a body of at most `limit` bytes within [`BODY_TIMEOUT`], reserving request memory as
/// it arrives — twice its size: the body, and the batches or answers made of it — so that a
/// client that declares a large body and sends little holds only what it sent. The permit is
/// the caller's to keep while it uses what it made of the body.
pub async fn read_body(
    ingest: &Ingest,
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<(bytes::Bytes, Option<OwnedSemaphorePermit>), IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IngestError::BodyTooLarge(limit));
    }
    let read = async {
        let mut chunks = body.into_data_stream();
        // The chunks as they come, joined once at the end: a buffer grown chunk by chunk is
        // copied again at each doubling and its fresh pages zeroed (a profile of HTTP ingest
        // showed both among the server's top costs).
        let mut parts: Vec<bytes::Bytes> = Vec::new();
        let mut length = 0;
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                IngestError::InvalidBody(format!("could not read the body: {}", e.into_inner()))
            })?;
            if length + chunk.len() > limit {
                return Err(IngestError::BodyTooLarge(limit));
            }
            let permit = ingest
                .reserve(2 * chunk.len())
                .await
                .ok_or(IngestError::Backpressure)?;
            match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            length += chunk.len();
            parts.push(chunk);
        }
        let body = match parts.len() {
            1 => parts.remove(0),
            _ => {
                let mut body = bytes::BytesMut::with_capacity(length);
                parts.iter().for_each(|part| body.extend_from_slice(part));
                body.freeze()
            }
        };
        Ok((body, held))
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| IngestError::BodyTimedOut(BODY_TIMEOUT))?
}

#[cfg(test)]
pub(crate) mod tests;
