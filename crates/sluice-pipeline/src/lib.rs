//! Pipelines: what happens to records between a source and the lake.
//!
//! ```text
//!  source (a stream's shards — its own log's, a Kafka topic's, a Kinesis stream's; an
//!          append-only view)
//!    │ partitions, read and decoded apart                      source/
//!    ▼
//!  pipeline ── raw: rows ─► <stream>, bad records ─► <stream>_errors      raw.rs
//!           │  (a change stream: changes ─► <stream>_changes, newest a key ─► <stream>  mirror.rs)
//!           └─ view: the query, cut into partition-local and combined parts ─► <view>   view/
//!    │ one commit a table a round, with the positions of record          exactly_once.rs
//!    ▼
//!  lake (Delta tables)
//! ```
//!
//! Every pipeline runs in one runtime ([`runtime`]): paced rounds, reads ahead, compaction,
//! failures retried after a backoff, panics caught and the pipeline started again, one status
//! shape and one set of metrics. [`Pipelines`] is the set a server runs — a raw pipeline per
//! stream, a pipeline per view — and the views' lifecycle. The exactly-once rules every
//! pipeline keeps are written, and kept, in [`exactly_once`]. A stream's tables answer queries
//! with the log's tail past what their pipeline committed ([`fresh`]).
//!
//! [`decode::Decoder`] turns a stream's records into the rows of its raw table — the declared
//! columns plus `_shard`, `_seq` and `_ingested_at` — and every record it cannot decode into a
//! row of `<stream>_errors` with the raw payload and the reason. Nothing is dropped: good rows
//! plus error rows always equal the records decoded.

pub mod decode;
mod error;
pub mod exactly_once;
pub mod fresh;
pub mod functions;
pub mod mirror;
mod pipelines;
pub mod raw;
pub mod runtime;
pub mod source;
pub mod view;

pub use decode::{Decoded, Decoder, RawRecord};
pub use error::{PipelineError, Result, lake_class};
pub use exactly_once::{Writer, writer};
pub use mirror::changes_table;
pub use pipelines::{ClusterMember, Pipelines, PipelinesConfig};
pub use raw::{RawConfig, RawPipeline};
pub use runtime::{Kind, Pipeline, PipelineStatus, Round};

/// The name of the errors table of a stream's or a view's table.
pub fn errors_table(table: &str) -> String {
    format!("{table}{ERRORS_SUFFIX}")
}

/// The stream or view an errors table's name belongs to, if it is one's (`ticks_errors` →
/// `ticks`).
pub fn errors_table_of(table: &str) -> Option<&str> {
    table.strip_suffix(ERRORS_SUFFIX)
}

const ERRORS_SUFFIX: &str = "_errors";

/// Runs file work (or other blocking work) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PipelineError::Internal(e.to_string()))?
}
