//! Producers' doors into the log.
//!
//! ```text
//!  POST /v1/streams/{stream}/records   NDJSON or a JSON array  ─┐
//!  POST /  (X-Amz-Target: Kinesis_20131202.*)  Kinesis JSON 1.1  ─┴─► sluice_log::Stream::append
//! ```
//!
//! Both doors answer only once every record they accepted is durable, and refuse a request
//! whole (nothing written) when any part of it is malformed. Records stay opaque bytes: the
//! doors split requests into records and pick their shard, they never decode events.

pub mod http;
pub mod kinesis;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_auth::Users;
use sluice_log::Log;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of the ingest doors; each is answered with a clear error when exceeded.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest HTTP ingest body (`POST /v1/streams/{stream}/records`).
    pub max_body_bytes: usize,
    /// Most records in one HTTP ingest request (bounds the memory a request of tiny records
    /// takes beyond its body).
    pub max_records_per_request: usize,
    /// Most memory the requests being handled may hold at once (bodies, and the batches or
    /// answers made from them). A request reserves its share before its body is read; one that
    /// cannot within the backpressure wait is answered with backpressure.
    pub max_request_memory: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_records_per_request: 500_000,
            max_request_memory: 512 << 20,
        }
    }
}

/// What the ingest routes share.
#[derive(Clone)]
pub struct Ingest {
    pub log: Arc<Log>,
    pub config: IngestConfig,
    /// Picks the shard of requests that name no partition key.
    round_robin: Arc<AtomicU64>,
    /// Permits of [`IngestConfig::max_request_memory`], in bytes.
    request_memory: Arc<Semaphore>,
    /// Who may use the Kinesis door (it verifies their signatures); `None`: anyone. The HTTP
    /// door's bearer tokens are checked by the server in front of every route.
    pub users: Option<Arc<Users>>,
}

/// How long a request waits for memory before it is answered with backpressure.
const MEMORY_WAIT: Duration = Duration::from_millis(200);

impl Ingest {
    pub fn new(log: Arc<Log>, config: IngestConfig, users: Option<Arc<Users>>) -> Self {
        let request_memory = Arc::new(Semaphore::new(config.max_request_memory));
        Self {
            log,
            config,
            round_robin: Arc::default(),
            request_memory,
            users,
        }
    }

    /// Reserves `bytes` of request memory for as long as the permit lives; `None` when the
    /// budget stays exhausted (the caller answers with backpressure).
    pub(crate) async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(bytes.min(self.config.max_request_memory)).unwrap_or(u32::MAX);
        let semaphore = self.request_memory.clone();
        match semaphore.clone().try_acquire_many_owned(permits) {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout(MEMORY_WAIT, semaphore.acquire_many_owned(permits))
                .await
                .ok()
                .and_then(Result::ok),
        }
    }
}

/// An error of Sluice's own HTTP API: a status and a JSON body `{"error": message, "code": code}`
/// naming what is wrong.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields of the body (e.g. the position of a SQL error).
    pub details: Option<serde_json::Value>,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl From<sluice_log::Error> for HttpError {
    fn from(e: sluice_log::Error) -> Self {
        use sluice_log::Error as E;
        let (status, code) = match &e {
            E::StreamNotFound(_) => (StatusCode::NOT_FOUND, "stream_not_found"),
            E::StreamExists(_) => (StatusCode::CONFLICT, "stream_exists"),
            E::NoSuchShard { .. } => (StatusCode::NOT_FOUND, "shard_not_found"),
            E::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_stream_name"),
            E::InvalidShardCount(_) => (StatusCode::BAD_REQUEST, "invalid_shard_count"),
            E::RecordTooLarge { .. } => (StatusCode::BAD_REQUEST, "record_too_large"),
            E::KeyTooLong { .. } => (StatusCode::BAD_REQUEST, "key_too_long"),
            E::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            E::Backpressure => (StatusCode::SERVICE_UNAVAILABLE, "backpressure"),
            E::Io { .. } | E::Unavailable(_) | E::Closed => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            E::Indeterminate(_) => (StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown"),
            E::Corrupt { .. } | E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.message, "code": self.code});
        if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(map)) =
            (self.details, &mut body)
        {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
