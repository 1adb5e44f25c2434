//! Why an ingest door refuses a request, and who must act on it (see `sluice-error`). The
//! server's HTTP API says it with the status its class gives; the Kinesis door in Kinesis'
//! own shapes (`kinesis::KinesisError`).

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_error::{Class, Classify, Position};

/// Why a request was refused. A refused request wrote nothing (but for
/// [`IngestError::PartiallyWritten`], which says what it wrote).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The log refused it: an unknown stream, backpressure, a disk that failed.
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    /// The log refused one of its records (too large, a key too long).
    #[error("record {index} (counting from 1): {source}")]
    Record {
        /// Which record, counting from 1.
        index: usize,
        /// Why the log refused it.
        source: sluice_log::Error,
    },
    /// More records than the door takes in one request (the number is the limit).
    #[error("the request holds more than {0} records: split it")]
    TooManyRecords(usize),
    /// An `application/json` body (an array of records, or one record) that does not parse.
    #[error("the body is not a JSON array: {message}")]
    InvalidJson {
        /// What the JSON parser said.
        message: String,
        /// The line the parse failed on (1-based).
        line: usize,
        /// The column the parse failed at (1-based).
        column: usize,
    },
    /// A body with no record in it (empty, or blank lines only).
    #[error("the body holds no records")]
    NoRecords,
    /// A body over the door's size limit (the number), by its `Content-Length` or as read.
    #[error("the body is over the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// No request memory was free within the wait.
    #[error("too many requests are being handled: slow down and retry")]
    Backpressure,
    /// The body did not arrive within the wait (the duration), so that a stalled client
    /// does not hold request memory.
    #[error("the body did not arrive within {0:?}")]
    BodyTimedOut(Duration),
    /// A body that could not be read: the connection failed part way.
    #[error("{0}")]
    InvalidBody(String),
    /// Some shards stored their records and others failed: retrying the whole request would
    /// store the first part twice.
    #[error(
        "{accepted} records were stored (shards {}), the rest were not (shards {}): resend \
         only the records of the failed shards",
        keys(shard_sequences),
        keys(failed)
    )]
    PartiallyWritten {
        /// How many records were stored.
        accepted: usize,
        /// The last sequence number of each shard that stored its records.
        shard_sequences: BTreeMap<String, u64>,
        /// Why each other shard failed.
        failed: BTreeMap<String, String>,
    },
}

fn keys<V>(map: &BTreeMap<String, V>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

impl IngestError {
    /// What an answer says beyond the message: what a partial write stored.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            IngestError::PartiallyWritten {
                accepted,
                shard_sequences,
                failed,
            } => Some(serde_json::json!({
                "accepted": accepted,
                "shard_sequences": shard_sequences,
                "failed_shards": failed,
            })),
            _ => None,
        }
    }
}

impl Classify for IngestError {
    fn class(&self) -> Class {
        match self {
            IngestError::Log(e) | IngestError::Record { source: e, .. } => e.class(),
            IngestError::TooManyRecords(_) | IngestError::BodyTooLarge(_) => Class::TooLarge,
            IngestError::InvalidJson { .. }
            | IngestError::NoRecords
            | IngestError::InvalidBody(_) => Class::InvalidData,
            IngestError::Backpressure => Class::Busy,
            IngestError::BodyTimedOut(_) => Class::RequestTimeout,
            IngestError::PartiallyWritten { .. } => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IngestError::Log(e) | IngestError::Record { source: e, .. } => e.code(),
            IngestError::TooManyRecords(_) => "too_many_records",
            IngestError::InvalidJson { .. } => "invalid_json",
            IngestError::NoRecords => "no_records",
            IngestError::BodyTooLarge(_) => "body_too_large",
            IngestError::Backpressure => "backpressure",
            IngestError::BodyTimedOut(_) => "request_timeout",
            IngestError::InvalidBody(_) => "invalid_body",
            IngestError::PartiallyWritten { .. } => "partially_written",
        }
    }

    fn position(&self) -> Option<Position> {
        match self {
            IngestError::InvalidJson { line, column, .. } => Some(Position {
                line: *line as u64,
                column: *column as u64,
            }),
            _ => None,
        }
    }
}
