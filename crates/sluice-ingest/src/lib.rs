//! Producers' doors into the log.
//!
//! ```text
//!  POST /v1/streams/{stream}/records   NDJSON or a JSON array  ─┐
//!  POST /  (X-Amz-Target: Kinesis_20131202.*)  Kinesis JSON 1.1  ─┼─► sluice_log::Stream::append
//!  POST /  (X-Amz-Target: Firehose_20150804.*) Firehose JSON 1.1 ─┘
//!  a PostgreSQL slot (CREATE SOURCE … FROM POSTGRES)  ─────────────► its tables' change streams
//! ```
//!
//! The doors answer only once every record they accepted is durable, and refuse a request
//! whole (nothing written) when any part of it is malformed. Records stay opaque bytes: the
//! doors split requests into records and pick their shard, they never decode events.
//!
//! The Kinesis door is a protocol of its own (its routes, its error shapes: [`kinesis`], with
//! Firehose's beside it). Sluice's
//! own ingest API is a route of the server's, which calls [`http::put_records`] and says its
//! [`IngestError`]s as every error of its API.

mod error;
pub mod http;
pub mod kinesis;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use error::IngestError;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

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
    /// The log the doors append to.
    pub log: Arc<Log>,
    /// The doors' limits.
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
    /// What the doors share, over `log`; with `users` `None`, the Kinesis door asks no one
    /// for a signature.
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
    pub async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
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
