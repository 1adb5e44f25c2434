//! Integration tests of the stream log: a model test with crashes, and targeted scenarios.

// Helpers unwrap as tests do: a test fails on a bad unwrap, with the value in its message.
#![allow(clippy::unwrap_used)]

mod catalog;
mod faults;
mod model;
mod scenarios;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sluice_log::{Clock, Log, LogConfig, Record, Retention, Shard, StreamOptions};

/// A clock the test moves by hand.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn at(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }
    /// Moves the clock on by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    /// What the clock reads.
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    /// The clock as the log takes it; it follows every later move.
    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || inner.load(Ordering::SeqCst))
    }
}

/// A log that rolls segments every 600 bytes, so that a few records span several, on `clock`.
pub fn small_config(clock: &ManualClock) -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        segment_ms: i64::MAX,
        clock: clock.clock(),
        ..LogConfig::default()
    }
}

/// Opens (recovering) the log in `dir`.
pub fn open(dir: &std::path::Path, config: LogConfig) -> Log {
    Log::open(dir, config).expect("open log")
}

/// Every committed record of a shard, read in small pieces to exercise continuation.
pub fn read_all(shard: &Shard) -> Vec<Record> {
    let mut out = Vec::new();
    let mut seq = 0;
    loop {
        let r = shard.read(seq, 7, 1 << 20).expect("read");
        if r.records.is_empty() {
            return out;
        }
        seq = r.next_seq;
        out.extend(r.records);
    }
}

/// A single-threaded runtime for the tests' appends.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime with two workers, for tests where appends race.
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A stream of `shards` shards with the default retention.
pub fn options(shards: u32) -> StreamOptions {
    StreamOptions {
        shards,
        retention: Retention::default(),
        definition: serde_json::json!({"format": "json"}),
        elsewhere: None,
    }
}

/// Reopens the log in `dir` and returns the data of every record of stream `s`, shard 0.
pub fn data_after_reopen(dir: &std::path::Path, config: LogConfig) -> Vec<bytes::Bytes> {
    let log = open(dir, config);
    read_all(log.stream("s").unwrap().shard(0).unwrap())
        .into_iter()
        .map(|r| r.data)
        .collect()
}
