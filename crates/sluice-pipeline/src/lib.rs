//! Pipelines: what happens to records between the log and the lake.
//!
//! ```text
//!  log ──► decode (by the stream's definition, into Arrow) ──┬─► raw table  <stream>
//!                                                            └─► errors     <stream>_errors
//! ```
//!
//! [`raw::RawPipeline`] keeps a stream's raw tables, exactly once (see its module).
//! [`decode::Decoder`] turns a stream's records into the rows of its raw table — the declared
//! columns plus `_shard`, `_seq` and `_ingested_at` — and every record it cannot decode into a
//! row of `<stream>_errors` with the raw payload and the reason. Nothing is dropped: good rows
//! plus error rows always equal the records decoded.

pub mod decode;
pub mod raw;
pub mod view;

pub use decode::{Decoded, Decoder, RawRecord};
pub use raw::{
    Health, LogRead, RawConfig, RawPipeline, Round, drop_tables, errors_table, errors_table_stream,
    past, positions, read,
};

/// When a pipeline (raw or view) runs its rounds: every `interval`, a late round delaying the
/// next rather than doubling up, and at once after a round that left a backlog.
struct Rounds {
    tick: tokio::time::Interval,
}

impl Rounds {
    fn every(interval: std::time::Duration) -> Rounds {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Rounds { tick }
    }

    /// Waits for the next round; false once `stop` turns true (then there is none).
    async fn next(&mut self, backlog: bool, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return false;
        }
        if !backlog {
            tokio::select! {
                _ = self.tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
        true
    }
}

/// Why a pipeline cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// What the user asked for (a view's query, a definition) cannot be done.
    #[error("{0}")]
    Unsupported(String),
    #[error("materialized view '{0}' already exists")]
    ViewExists(String),
    #[error("materialized view '{0}' does not exist")]
    ViewNotFound(String),
    #[error(transparent)]
    Sql(#[from] sluice_sql::SqlError),
    /// The data directory (a view's definition or state).
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    #[error(transparent)]
    Lake(#[from] sluice_lake::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for PipelineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        PipelineError::Internal(e.strip_backtrace())
    }
}

impl From<arrow::error::ArrowError> for PipelineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        PipelineError::Internal(e.to_string())
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
