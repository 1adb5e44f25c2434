//! The stream log: Sluice's one storage engine.
//!
//! A log is a folder of streams; a stream is a fixed number of shards; a shard is an ordered,
//! durable sequence of records, each with a sequence number, an append time, a partition key and
//! opaque data. Records are never interpreted here: decoding is the pipelines' job.
//!
//! ```text
//! <data-dir>/streams/<name>/stream.json            the stream's StreamMeta (atomically replaced)
//! <data-dir>/streams/<name>/shard-0000/000…0.seg   segments of record batches (see `batch`)
//! <data-dir>/streams/<name>/shard-0000/000…0.idx   the sparse index of a sealed segment
//! <data-dir>/streams/<name>/kinesis.pins           a stream read elsewhere: its reader's files
//! <data-dir>/trash/                                streams being dropped
//! ```
//!
//! Guarantees, each kept by one module:
//! - [`batch`]: every byte on disk is covered by a CRC32C; no length is used before it is checked.
//! - [`shard`]: group commit; an acknowledgement follows the fsync; readers see only durable data;
//!   in-flight bytes are bounded (producers get [`Error::Backpressure`], never an unbounded queue).
//! - [`segment`]: recovery truncates a torn tail of the active segment and nothing else.
//! - this module: a stream exists whole or not at all (created in a temporary folder, fsynced,
//!   renamed into place; dropped by stopping its writers, then renaming it away).

pub mod batch;
pub mod segment;
pub mod shard;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

pub use batch::{BatchBuilder, MAX_KEY_BYTES, MAX_RECORD_BYTES, SealedBatch};
pub use shard::{Appended, ReadResult, Record, Shard};
pub use stream::{
    Forward, MAX_SHARDS, Retention, ShardAppend, ShardBatches, Stream, StreamMeta, Tail, hash_key,
    hash_key_range, validate_name,
};

/// The log's results: every failure is an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, grouped by who must act: the caller (bad input), the environment (retry
/// later), or the data on disk (an operator).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No stream has this name (or not the incarnation asked for).
    #[error("stream '{0}' does not exist")]
    StreamNotFound(String),
    /// A stream of this name exists already.
    #[error("stream '{0}' already exists")]
    StreamExists(String),
    /// Something depends on the stream (views read it): it cannot be dropped.
    #[error("stream '{stream}' cannot be dropped: {reason}")]
    InUse {
        /// The stream asked to be dropped.
        stream: String,
        /// What depends on it, as the drop guard said.
        reason: String,
    },
    /// The stream has no shard of that id.
    #[error("stream '{stream}' has no shard {shard}")]
    NoSuchShard {
        /// The stream asked for.
        stream: String,
        /// The shard id asked for, at or past the stream's shard count.
        shard: u32,
    },
    /// A stream name the log does not take (see [`validate_name`]).
    #[error(
        "invalid stream name {0:?}: use 1 to 128 letters, digits, '_', '.' or '-', not starting with '.'"
    )]
    InvalidName(String),
    /// A stream must have 1 to [`MAX_SHARDS`] shards.
    #[error("invalid shard count {0}: a stream has 1 to {max} shards", max = MAX_SHARDS)]
    InvalidShardCount(u32),
    /// A record's data is over [`MAX_RECORD_BYTES`].
    #[error("record of {bytes} bytes is over the limit of {max} bytes", max = MAX_RECORD_BYTES)]
    RecordTooLarge {
        /// The record's data, in bytes.
        bytes: usize,
    },
    /// A partition key is over [`MAX_KEY_BYTES`].
    #[error("partition key of {bytes} bytes is over the limit of {max} bytes", max = MAX_KEY_BYTES)]
    KeyTooLong {
        /// The key's length, in bytes.
        bytes: usize,
    },
    /// The stream's records come from elsewhere (a Kafka topic): its doors take none.
    #[error("stream '{stream}' reads its records from {source_of_records}: produce them there")]
    Elsewhere {
        /// The stream appended to.
        stream: String,
        /// Where its records come from, and so where to produce them.
        source_of_records: String,
    },
    /// One request's records do not fit in one batch (see [`batch::MAX_BATCH_PAYLOAD`]).
    #[error("batch of {bytes} bytes is over the limit of {max} bytes", max = batch::MAX_BATCH_PAYLOAD)]
    BatchTooLarge {
        /// The batch's payload with the record that did not fit, in bytes.
        bytes: usize,
    },

    /// Too many bytes are waiting for the disk: slow down and retry.
    #[error("the log is busy writing earlier records: slow down and retry")]
    Backpressure,
    /// A file operation failed: the disk or the file system, worth retrying later.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder the operation was on.
        path: PathBuf,
        /// The operating system's message.
        message: String,
        /// The operating system's kind of failure, for callers that tell them apart.
        kind: std::io::ErrorKind,
    },
    /// The shard's writer failed a write it could not undo: it refuses appends until the log
    /// is reopened and recovers.
    #[error("the shard is unavailable: {0}")]
    Unavailable(String),
    /// A write failed in a way that leaves its outcome unknown: it may be read back after a
    /// restart. Retrying may duplicate it.
    #[error("the outcome of the write is unknown (it may have been stored): {0}")]
    Indeterminate(String),
    /// The shard was closed (its stream dropped, or the log closing) before the append was
    /// written.
    #[error("the log is shutting down")]
    Closed,

    /// Data on disk fails its checks where recovery may not cut it: an operator must look.
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in the file the damage starts.
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// The catalog the log shares with other processes will not take the stream (a cluster
    /// takes only streams whose records are in Kafka).
    #[error("{0}")]
    NotShared(String),
    /// The catalog the log shares with other processes cannot be reached: retry later.
    #[error("the cluster's catalog: {0}")]
    Catalog(String),
    /// A bug in Sluice (or a failure the log has no better word for).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
            kind: e.kind(),
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn is_retryable(&self) -> bool {
        use sluice_error::Classify;
        self.class().actor() == sluice_error::Actor::Environment
    }
}

/// A new incarnation id (of a stream, a view): 64 random bits from the operating system. Never
/// a clock's reading: a clock stepped back could give an id again, and a stream created anew
/// under an old name would adopt the old one's tables.
pub fn new_id() -> Result<u64> {
    getrandom::u64().map_err(|e| Error::Internal(format!("no randomness for a new id: {e}")))
}

impl sluice_error::Classify for Error {
    fn class(&self) -> sluice_error::Class {
        use sluice_error::Class;
        match self {
            Error::StreamNotFound(_) | Error::NoSuchShard { .. } => Class::UndefinedTable,
            Error::StreamExists(_) => Class::Exists,
            Error::InUse { .. } => Class::InUse,
            Error::InvalidName(_) | Error::InvalidShardCount(_) => Class::InvalidValue,
            Error::RecordTooLarge { .. } | Error::KeyTooLong { .. } => Class::InvalidData,
            Error::BatchTooLarge { .. } => Class::TooLarge,
            Error::Elsewhere { .. } | Error::NotShared(_) => Class::Unsupported,
            Error::Backpressure => Class::Busy,
            Error::Io { .. } | Error::Unavailable(_) | Error::Closed | Error::Catalog(_) => {
                Class::Unavailable
            }
            Error::Indeterminate(_) | Error::Corrupt { .. } | Error::Internal(_) => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::StreamNotFound(_) => "stream_not_found",
            Error::StreamExists(_) => "stream_exists",
            Error::InUse { .. } => "stream_in_use",
            Error::NoSuchShard { .. } => "shard_not_found",
            Error::InvalidName(_) => "invalid_stream_name",
            Error::InvalidShardCount(_) => "invalid_shard_count",
            Error::RecordTooLarge { .. } => "record_too_large",
            Error::KeyTooLong { .. } => "key_too_long",
            Error::BatchTooLarge { .. } => "body_too_large",
            Error::Elsewhere { .. } => "stream_reads_elsewhere",
            Error::NotShared(_) => "stream_not_shared",
            Error::Catalog(_) => "catalog_unavailable",
            Error::Backpressure => "backpressure",
            Error::Io { .. } | Error::Unavailable(_) | Error::Closed => "unavailable",
            Error::Indeterminate(_) => "outcome_unknown",
            Error::Corrupt { .. } | Error::Internal(_) => "internal",
        }
    }
}

/// Milliseconds since the Unix epoch. Injected so that tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock, in milliseconds since the Unix epoch (0 should the system clock be set
/// before it). Servers use it; tests pass a clock they move.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// Tuning of the log; the defaults suit a server.
#[derive(Clone)]
pub struct LogConfig {
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// … or once its first batch is this old (so that retention by age can delete it).
    pub segment_ms: i64,
    /// Most bytes one group commit writes.
    pub max_group_bytes: usize,
    /// Most bytes accepted but not yet durable, across the whole log.
    pub inflight_bytes: usize,
    /// How long an append waits for in-flight room before it is refused with backpressure.
    pub backpressure_wait: Duration,
    /// Reads the time stamped on appends and compared with retention.
    pub clock: Clock,
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("segment_bytes", &self.segment_bytes)
            .field("segment_ms", &self.segment_ms)
            .field("max_group_bytes", &self.max_group_bytes)
            .field("inflight_bytes", &self.inflight_bytes)
            .field("backpressure_wait", &self.backpressure_wait)
            .finish_non_exhaustive()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 << 20,
            segment_ms: 3600 * 1000,
            max_group_bytes: 16 << 20,
            inflight_bytes: 256 << 20,
            backpressure_wait: Duration::from_millis(200),
            clock: system_clock(),
        }
    }
}

/// What a new stream is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOptions {
    /// How many shards the stream spreads its records over; fixed for its life.
    pub shards: u32,
    /// How long, or how many bytes of, its records are kept.
    pub retention: Retention,
    /// What the stream's owner keeps with it (its SQL columns and format), stored in
    /// `stream.json` and never read by the log.
    pub definition: serde_json::Value,
    /// Where the stream's records come from when not from the log's doors (a Kafka topic, as
    /// producers should be told): then appends are refused.
    pub elsewhere: Option<String>,
}

/// The log: every stream of a data directory, with its shards' writers. The ingest doors
/// append to it, the pipelines read it; one per server.
pub struct Log {
    root: PathBuf,
    config: LogConfig,
    inflight: Arc<Semaphore>,
    /// Where appends to streams whose records are elsewhere go, once given.
    forwarding: stream::Forwarding,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serializes stream creation and deletion.
    ddl: Mutex<()>,
    /// Who else must agree before a stream is dropped (see [`Log::guard_drops`]).
    drop_guards: RwLock<Vec<DropGuard>>,
    /// The catalog shared with other processes, in cluster mode (see [`Log::share`]).
    catalog: RwLock<Option<Arc<dyn Catalog>>>,
}

/// Where the streams are agreed with the other processes of a cluster (a catalog in the
/// lake): a stream is created once the catalog has taken it, dropped from the catalog before
/// it is dropped here, and [`Log::follow`] makes the log's streams the catalog's. Called under
/// the log's DDL lock; blocking.
pub trait Catalog: Send + Sync + 'static {
    /// Records `meta` as the stream of its name: refused if the catalog has a stream of that
    /// name (`StreamExists`) or does not take such streams (`NotShared`). The catalog may first
    /// give the stream a place for its records (a cluster's topic of its own), in `meta`'s
    /// definition and `elsewhere`: the stream is created as `meta` is then.
    fn claim(&self, meta: &mut StreamMeta) -> Result<()>;
    /// Records `meta` anew as its stream's (a column added to its definition): refused unless
    /// the catalog has that incarnation of the stream.
    fn redefine(&self, meta: &StreamMeta) -> Result<()>;
    /// Removes stream `name` incarnation `id` (nothing if it is not there).
    fn release(&self, name: &str, id: u64) -> Result<()>;
    /// Every stream the catalog has.
    fn streams(&self) -> Result<Vec<StreamMeta>>;
}

/// What [`Log::follow`] changed: the names of the streams created, dropped and redefined.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Followed {
    /// Streams the catalog has that the log had not.
    pub created: Vec<String>,
    /// Streams the catalog has no more.
    pub dropped: Vec<String>,
    /// Streams whose definition the catalog has anew.
    pub redefined: Vec<String>,
}

impl Followed {
    /// Whether nothing changed.
    pub fn nothing(&self) -> bool {
        self.created.is_empty() && self.dropped.is_empty() && self.redefined.is_empty()
    }
}

/// Says whether a stream may be dropped: `Some(reason)` when something depends on it (views
/// read it, a source writes it). Called under the log's DDL lock.
pub type DropGuard = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Log {
    /// Opens the log in `root`, recovering every stream.
    pub fn open(root: impl Into<PathBuf>, config: LogConfig) -> Result<Log> {
        let root = root.into();
        let streams_dir = root.join("streams");
        std::fs::create_dir_all(&streams_dir).map_err(|e| Error::io(&streams_dir, e))?;
        let trash = root.join("trash");
        if trash.exists() {
            std::fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        }
        let inflight = Arc::new(Semaphore::new(config.inflight_bytes));
        let forwarding = stream::Forwarding::default();
        let mut streams = BTreeMap::new();
        for entry in std::fs::read_dir(&streams_dir).map_err(|e| Error::io(&streams_dir, e))? {
            let dir = entry.map_err(|e| Error::io(&streams_dir, e))?.path();
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                // A creation that did not finish.
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                continue;
            }
            let meta = read_meta(&dir)?;
            let stream = open_stream(&dir, meta, &config, &inflight, &forwarding)?;
            streams.insert(name, Arc::new(stream));
        }
        Ok(Log {
            root,
            config,
            inflight,
            forwarding,
            streams: RwLock::new(streams),
            ddl: Mutex::new(()),
            drop_guards: RwLock::default(),
            catalog: RwLock::default(),
        })
    }

    /// Makes every drop of a stream, through whichever door, ask `guard` first (and every
    /// guard given before): one rule for SQL's `DROP STREAM` and the Kinesis API's
    /// `DeleteStream` alike.
    pub fn guard_drops(&self, guard: DropGuard) {
        self.drop_guards.write().expect("guard lock").push(guard);
    }

    /// Shares the log's streams with the other processes of a cluster through `catalog`
    /// (see [`Catalog`]); [`Log::follow`] then keeps them the catalog's.
    pub fn share(&self, catalog: Arc<dyn Catalog>) {
        *self.catalog.write().expect("catalog lock") = Some(catalog);
    }

    /// Sends the doors' appends to streams whose records are elsewhere through `forward`
    /// (each stream's Kafka topic, in a cluster), which the log refuses otherwise
    /// ([`Error::Elsewhere`]). Given once; a second is ignored.
    pub fn forward_appends(&self, forward: Arc<dyn Forward>) {
        let _ = self.forwarding.set(forward);
    }

    /// Whether the log's streams are a shared catalog's ([`Log::share`]).
    pub fn shared(&self) -> bool {
        self.catalog().is_some()
    }

    fn catalog(&self) -> Option<Arc<dyn Catalog>> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Makes the log's streams the shared catalog's: creates those it lacks (with their ids),
    /// drops those it has no more (no drop guard is asked: the stream is gone from the
    /// cluster), and takes the definitions redefined elsewhere (a column added). Blocking.
    pub fn follow(&self) -> Result<Followed> {
        let mut followed = Followed::default();
        let Some(catalog) = self.catalog() else {
            return Ok(followed);
        };
        let _ddl = self.ddl.lock().expect("ddl lock");
        let wanted = catalog.streams()?;
        for stream in self.streams() {
            if !wanted
                .iter()
                .any(|m| m.name == stream.name() && m.id == stream.id())
            {
                self.remove_stream(stream.name())?;
                followed.dropped.push(stream.name().to_string());
            }
        }
        for meta in wanted {
            match self.stream(&meta.name) {
                Err(_) => {
                    followed.created.push(meta.name.clone());
                    self.make_stream(meta)?;
                }
                Ok(stream) if stream.meta().definition != meta.definition => {
                    followed.redefined.push(meta.name.clone());
                    self.write_definition(&stream, meta.definition)?;
                }
                Ok(_) => {}
            }
        }
        Ok(followed)
    }

    /// Stream `name` if it is still incarnation `id`, asked under the DDL lock: a drop in
    /// progress has finished first. What depends on a stream checks with this after making
    /// itself known to the drop guard, so that no drop slips between the two.
    pub fn confirm_stream(&self, name: &str, id: u64) -> Result<Arc<Stream>> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        self.stream(name)
            .ok()
            .filter(|s| s.id() == id)
            .ok_or_else(|| Error::StreamNotFound(name.to_string()))
    }

    /// The data directory the log was opened in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of stream `name`: its reader of records elsewhere keeps its own files
    /// there (they go with the stream).
    pub fn stream_dir(&self, name: &str) -> PathBuf {
        self.root.join("streams").join(name)
    }

    /// Stream `name`, or [`Error::StreamNotFound`].
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        self.streams
            .read()
            .expect("streams lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::StreamNotFound(name.to_string()))
    }

    /// Every stream, in name order.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.streams
            .read()
            .expect("streams lock")
            .values()
            .cloned()
            .collect()
    }

    /// Creates a stream; it exists whole, durably, when this returns.
    pub fn create_stream(&self, name: &str, options: StreamOptions) -> Result<Arc<Stream>> {
        validate_name(name)?;
        if options.shards == 0 || options.shards > MAX_SHARDS {
            return Err(Error::InvalidShardCount(options.shards));
        }
        let _ddl = self.ddl.lock().expect("ddl lock");
        if self
            .streams
            .read()
            .expect("streams lock")
            .contains_key(name)
        {
            return Err(Error::StreamExists(name.to_string()));
        }
        let now = (self.config.clock)();
        let mut meta = StreamMeta {
            name: name.to_string(),
            id: new_id()?,
            created_ms: now,
            shards: options.shards,
            retention: options.retention,
            definition: options.definition,
            elsewhere: options.elsewhere,
        };
        let Some(catalog) = self.catalog() else {
            return self.make_stream(meta);
        };
        catalog.claim(&mut meta)?;
        let id = meta.id;
        self.make_stream(meta).inspect_err(|_| {
            if let Err(e) = catalog.release(name, id) {
                tracing::warn!(stream = name, error = %e, "cannot withdraw a stream not created");
            }
        })
    }

    /// Creates stream `meta.name` as `meta` says, durably. The DDL lock held.
    fn make_stream(&self, meta: StreamMeta) -> Result<Arc<Stream>> {
        let name = meta.name.clone();
        let name = name.as_str();
        let streams_dir = self.root.join("streams");
        let tmp = streams_dir.join(format!(".{name}.creating"));
        let dir = streams_dir.join(name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        write_meta(&tmp.join("stream.json"), &meta)?;
        for shard in 0..meta.shards {
            let shard_dir = tmp.join(shard_dir_name(shard));
            std::fs::create_dir(&shard_dir).map_err(|e| Error::io(&shard_dir, e))?;
            segment::Segment::create(&shard_dir, 0)?;
        }
        segment::sync_dir(&tmp)?;
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        segment::sync_dir(&streams_dir)?;
        let stream = Arc::new(open_stream(
            &dir,
            meta,
            &self.config,
            &self.inflight,
            &self.forwarding,
        )?);
        self.streams
            .write()
            .expect("streams lock")
            .insert(name.to_string(), stream.clone());
        Ok(stream)
    }

    /// Replaces stream `name`'s definition (its owner's: the SQL layer's columns), durably, if
    /// it is still incarnation `id`; in a shared catalog first, which the other logs follow.
    pub fn redefine_stream(
        &self,
        name: &str,
        id: u64,
        definition: serde_json::Value,
    ) -> Result<()> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let stream = self
            .stream(name)
            .ok()
            .filter(|s| s.id() == id)
            .ok_or_else(|| Error::StreamNotFound(name.to_string()))?;
        if let Some(catalog) = self.catalog() {
            catalog.redefine(&StreamMeta {
                definition: definition.clone(),
                ..stream.meta()
            })?;
        }
        self.write_definition(&stream, definition)
    }

    /// Gives `stream` `definition`, durably, under the DDL lock.
    fn write_definition(&self, stream: &Stream, definition: serde_json::Value) -> Result<()> {
        let meta = StreamMeta {
            definition: definition.clone(),
            ..stream.meta()
        };
        let dir = self.root.join("streams").join(stream.name());
        let temporary = dir.join("stream.json.new");
        write_meta(&temporary, &meta)?;
        let path = dir.join("stream.json");
        std::fs::rename(&temporary, &path).map_err(|e| Error::io(&path, e))?;
        segment::sync_dir(&dir)?;
        stream.set_definition(definition);
        Ok(())
    }

    /// Drops a stream and its records. Appends still queued finish first.
    pub fn drop_stream(&self, name: &str) -> Result<()> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let id = self.stream(name)?.id();
        let guards = self.drop_guards.read().expect("guard lock").clone();
        if let Some(reason) = guards.iter().find_map(|guard| guard(name)) {
            return Err(Error::InUse {
                stream: name.to_string(),
                reason,
            });
        }
        if let Some(catalog) = self.catalog() {
            catalog.release(name, id)?;
        }
        self.remove_stream(name)
    }

    /// Drops stream `name` here, its records with it. The DDL lock held.
    fn remove_stream(&self, name: &str) -> Result<()> {
        let stream = self
            .streams
            .write()
            .expect("streams lock")
            .remove(name)
            .ok_or_else(|| Error::StreamNotFound(name.to_string()))?;
        // Stop the writers first: nothing may touch the stream's files by their old paths once
        // they are renamed (a stream of the same name could be created there next).
        for shard in stream.shards() {
            shard.close();
        }
        if let Some(forward) = self.forwarding.get() {
            forward.forget(stream.id());
        }
        let dir = self.root.join("streams").join(name);
        let trash = self.root.join("trash");
        std::fs::create_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        let doomed = trash.join(format!("{name}-{}", stream.id()));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io(&dir, e))?;
        segment::sync_dir(&self.root.join("streams"))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
    }

    /// Applies every stream's retention; returns how many segments were deleted. Holds the DDL
    /// lock, so that no stream is dropped (and its files renamed) under it.
    pub fn enforce_retention(&self) -> Result<usize> {
        let _ddl = self.ddl.lock().expect("ddl lock");
        let now = (self.config.clock)();
        let mut deleted = 0;
        for stream in self.streams() {
            deleted += stream.enforce_retention(now)?;
        }
        Ok(deleted)
    }
}

fn shard_dir_name(shard: u32) -> String {
    format!("shard-{shard:04}")
}

fn open_stream(
    dir: &Path,
    meta: StreamMeta,
    config: &LogConfig,
    inflight: &Arc<Semaphore>,
    forwarding: &stream::Forwarding,
) -> Result<Stream> {
    let label = [("stream", meta.name.clone())];
    let shard_metrics = shard::ShardMetrics {
        fsync_seconds: metrics::histogram!("sluice_log_fsync_seconds", &label),
        group_records: metrics::histogram!("sluice_log_group_records", &label),
    };
    let shards = (0..meta.shards)
        .map(|id| {
            shard::Shard::open(
                id,
                dir.join(shard_dir_name(id)),
                config,
                shard_metrics.clone(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Stream::new(
        meta,
        shards,
        inflight.clone(),
        forwarding.clone(),
        config.backpressure_wait,
    ))
}

fn read_meta(dir: &Path) -> Result<StreamMeta> {
    let path = dir.join("stream.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path,
        offset: e.column() as u64,
        reason: e.to_string(),
    })
}

/// Writes `meta` to `path`, synced.
fn write_meta(path: &Path, meta: &StreamMeta) -> Result<()> {
    let path = path.to_path_buf();
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&path, e))
}
