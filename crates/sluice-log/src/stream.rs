//! A stream: a named set of shards, its persisted definition, and appends across shards.
//!
//! Partition keys map to shards as in Kinesis: the MD5 of the key, read as a 128-bit unsigned
//! big-endian integer, falls in one shard's hash-key range; shard `i` of `n` starts at
//! `i * floor(2^128 / n)` and the last shard ends at `2^128 - 1`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::batch::{BatchBuilder, SealedBatch};
use crate::shard::{Appended, Shard};
use crate::{Error, Result};

/// Most shards a stream may have.
pub const MAX_SHARDS: u32 = 256;
/// Longest stream name, as in Kinesis.
pub const MAX_NAME_LEN: usize = 128;

/// How long a stream keeps records. Whole segments are deleted once every record in them is
/// older than `max_age_ms`, or, oldest first, while a shard holds more than `max_bytes_per_shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Records older than this many milliseconds are deleted, a segment at a time; `None`
    /// keeps them for ever.
    pub max_age_ms: Option<u64>,
    /// A shard holding more bytes than this deletes its oldest segments; `None` for no
    /// limit.
    pub max_bytes_per_shard: Option<u64>,
}

impl Default for Retention {
    /// Kinesis' default: 24 hours.
    fn default() -> Self {
        Self {
            max_age_ms: Some(24 * 3600 * 1000),
            max_bytes_per_shard: None,
        }
    }
}

/// What a stream is, as persisted in `stream.json`. `definition` belongs to the stream's owner
/// (the SQL layer keeps columns, format and event time there); the log stores it verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// The stream's name, as SQL and the Kinesis API name it.
    pub name: String,
    /// Distinguishes this stream from an earlier one of the same name.
    pub id: u64,
    /// When the stream was created (ms since the Unix epoch).
    pub created_ms: i64,
    /// How many shards the stream has; fixed for its life.
    pub shards: u32,
    /// How long the stream keeps records.
    pub retention: Retention,
    /// The owner's definition of the stream, stored verbatim (`null` when it has none).
    #[serde(default)]
    pub definition: serde_json::Value,
    /// Where its records come from when not from the log's doors: appends are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elsewhere: Option<String>,
}

/// Checks a stream name: 1 to 128 of `A-Z a-z 0-9 _ . -`, not starting with `.` (the Kinesis
/// alphabet, minus names that could mean a directory).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// The inclusive hash-key range of shard `shard` of `shards`.
pub fn hash_key_range(shard: u32, shards: u32) -> (u128, u128) {
    if shards == 1 {
        return (0, u128::MAX);
    }
    let step = step(shards);
    let start = step * u128::from(shard);
    let end = if shard + 1 == shards {
        u128::MAX
    } else {
        step * u128::from(shard + 1) - 1
    };
    (start, end)
}

/// floor(2^128 / n) for n >= 2, computed without 2^128.
fn step(shards: u32) -> u128 {
    debug_assert!(shards >= 2);
    let n = u128::from(shards);
    u128::MAX / n + (u128::MAX % n + 1) / n
}

/// The hash key of a partition key: its MD5 as a big-endian integer.
pub fn hash_key(partition_key: &[u8]) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key).into())
}

/// Where the doors' appends to a stream whose records are elsewhere go, when that place takes
/// them: the Kafka topic a cluster's stream reads, shared by every worker's doors (see
/// [`crate::Log::forward_appends`]). The log's in-flight budget bounds them as it bounds its
/// own shards' appends.
pub trait Forward: Send + Sync + 'static {
    /// Appends each batch to the partition numbered as its shard, and answers once each is
    /// durable there: per shard, its records' positions, or why it did not take them.
    fn append(
        &self,
        stream: &Stream,
        batches: Vec<(u32, SealedBatch)>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ShardAppend>>> + Send>>;

    /// Whether the doors' appends to `stream` go there: its records come from that place (not
    /// from a database's changes, which only their source's reader appends).
    fn takes_doors(&self, stream: &Stream) -> bool;

    /// Stream incarnation `stream_id` was dropped: what was kept to append to it goes.
    fn forget(&self, stream_id: u64);
}

/// Where a shard's (or a topic partition's) records are: its first position, the next, and
/// its last record.
#[derive(Debug, Default)]
pub struct Tail {
    /// The first position held.
    pub first: u64,
    /// The position the next record takes.
    pub next: u64,
    /// The record before `next`, if any.
    pub last: Option<Vec<u8>>,
}

/// The log's [`Forward`], once given: shared by every stream of the log.
pub(crate) type Forwarding = Arc<OnceLock<Arc<dyn Forward>>>;

/// A stream: its shards, its definition, and the in-flight budget its appends share with
/// the rest of the log.
pub struct Stream {
    meta: StreamMeta,
    /// The owner's definition as it is now (`meta.definition` is the one it was opened with).
    definition: std::sync::RwLock<serde_json::Value>,
    shards: Vec<Shard>,
    inflight: Arc<Semaphore>,
    forwarding: Forwarding,
    backpressure_wait: Duration,
    metrics: StreamMetrics,
}

pub(crate) struct StreamMetrics {
    pub records_in: metrics::Counter,
    pub bytes_in: metrics::Counter,
    pub append_seconds: metrics::Histogram,
    pub backpressure: metrics::Counter,
}

impl StreamMetrics {
    pub fn new(stream: &str) -> Self {
        let label = [("stream", stream.to_string())];
        Self {
            records_in: metrics::counter!("sluice_stream_records_in_total", &label),
            bytes_in: metrics::counter!("sluice_stream_bytes_in_total", &label),
            append_seconds: metrics::histogram!("sluice_log_append_seconds", &label),
            backpressure: metrics::counter!("sluice_log_backpressure_total", &label),
        }
    }
}

/// Records to append to a stream, already split by shard.
pub struct ShardBatches {
    shards: Vec<BatchBuilder>,
}

impl ShardBatches {
    /// Adds a record to `shard`; returns its index within that shard's part of the append.
    pub fn push(&mut self, shard: u32, key: &[u8], data: &[u8]) -> Result<u32> {
        self.shards[shard as usize].push(key, data)
    }

    /// How many records, over every shard.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|b| b.len() as usize).sum()
    }

    /// Whether no record was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(BatchBuilder::is_empty)
    }
}

/// The outcome of an append for one shard it touched.
#[derive(Debug)]
pub struct ShardAppend {
    /// The shard the records went to.
    pub shard: u32,
    /// Their sequence numbers once durable, or why the shard did not take them.
    pub result: Result<Appended>,
}

impl Stream {
    pub(crate) fn new(
        meta: StreamMeta,
        shards: Vec<Shard>,
        inflight: Arc<Semaphore>,
        forwarding: Forwarding,
        backpressure_wait: Duration,
    ) -> Self {
        let metrics = StreamMetrics::new(&meta.name);
        Self {
            definition: std::sync::RwLock::new(meta.definition.clone()),
            meta,
            shards,
            inflight,
            forwarding,
            backpressure_wait,
            metrics,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// What the stream is, as `stream.json` holds it.
    pub fn meta(&self) -> StreamMeta {
        StreamMeta {
            definition: self.definition.read().expect("definition lock").clone(),
            ..self.meta.clone()
        }
    }

    /// Distinguishes this stream from an earlier one of the same name.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// Replaces the owner's definition in memory, once `stream.json` holds it
    /// ([`crate::Log::redefine_stream`]).
    pub(crate) fn set_definition(&self, definition: serde_json::Value) {
        *self.definition.write().expect("definition lock") = definition;
    }

    /// The stream's shards, in id order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Where shard `id`'s records are, with its last: what a writer resuming after its own
    /// records reads.
    pub fn tail(&self, id: u32) -> Result<Tail> {
        let shard = self.shard(id)?;
        let (first, next) = shard.bounds();
        let last = match next > first {
            true => (shard.read(next - 1, 1, usize::MAX)?.records.into_iter())
                .next()
                .map(|r| r.data.to_vec()),
            false => None,
        };
        Ok(Tail { first, next, last })
    }

    /// Shard `id`, or [`Error::NoSuchShard`].
    pub fn shard(&self, id: u32) -> Result<&Shard> {
        self.shards
            .get(id as usize)
            .ok_or_else(|| Error::NoSuchShard {
                stream: self.meta.name.clone(),
                shard: id,
            })
    }

    /// The shard whose hash-key range holds `hash_key`.
    pub fn shard_for_hash(&self, hash_key: u128) -> u32 {
        match self.meta.shards {
            1 => 0,
            n => ((hash_key / step(n)) as u32).min(n - 1),
        }
    }

    /// The shard a partition key goes to: by its MD5, as in Kinesis.
    pub fn shard_for_key(&self, partition_key: &[u8]) -> u32 {
        self.shard_for_hash(hash_key(partition_key))
    }

    /// An empty set of batches, one per shard, to fill and pass to [`Stream::append`].
    pub fn batches(&self) -> ShardBatches {
        ShardBatches {
            shards: (0..self.shards.len())
                .map(|_| BatchBuilder::default())
                .collect(),
        }
    }

    /// Appends the batches, one per shard touched, and waits until every one is durable.
    ///
    /// Fails as a whole with [`Error::Backpressure`] (nothing written) when the log's in-flight
    /// budget stays exhausted for the backpressure wait. Otherwise each shard reports its own
    /// outcome: a shard that fails does not undo the others. A stream whose records come from
    /// elsewhere sends them there when the log forwards appends ([`Forward`]), and refuses
    /// them otherwise ([`Error::Elsewhere`]).
    pub async fn append(&self, batches: ShardBatches) -> Result<Vec<ShardAppend>> {
        let forward = match &self.meta.elsewhere {
            None => None,
            Some(elsewhere) => match self.takes_doors() {
                true => self.forwarding.get().cloned(),
                false => {
                    return Err(Error::Elsewhere {
                        stream: self.meta.name.clone(),
                        source_of_records: elsewhere.clone(),
                    });
                }
            },
        };
        self.write(batches, forward).await
    }

    /// Whether the doors' appends are taken ([`Stream::append`]): the log's own stream's, and a
    /// stream's whose records are where the log forwards appends (a cluster's topic), unless
    /// they come from a source there (a database's changes, which only its reader appends).
    pub fn takes_doors(&self) -> bool {
        match &self.meta.elsewhere {
            None => true,
            Some(_) => (self.forwarding.get()).is_some_and(|forward| forward.takes_doors(self)),
        }
    }

    /// [`Stream::append`] for the reader of where a stream's records come from (a database's
    /// changes), which the doors refuse: to the log's own shards, or where the log forwards
    /// appends (a cluster's topic).
    pub async fn append_from_elsewhere(&self, batches: ShardBatches) -> Result<Vec<ShardAppend>> {
        self.write(batches, self.forwarding.get().cloned()).await
    }

    /// Appends to the log's shards, or through `forward`, within the in-flight budget.
    async fn write(
        &self,
        batches: ShardBatches,
        forward: Option<Arc<dyn Forward>>,
    ) -> Result<Vec<ShardAppend>> {
        let started = Instant::now();
        let sealed: Vec<(u32, SealedBatch)> = batches
            .shards
            .into_iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(shard, b)| (shard as u32, b.seal()))
            .collect();
        let total: usize = sealed.iter().map(|(_, b)| b.byte_len()).sum();
        let records: u64 = sealed.iter().map(|(_, b)| u64::from(b.count())).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let permits = u32::try_from(total).map_err(|_| Error::BatchTooLarge { bytes: total })?;
        let mut permit = match self.inflight.clone().try_acquire_many_owned(permits) {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(
                    self.backpressure_wait,
                    self.inflight.clone().acquire_many_owned(permits),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::Closed),
                    Err(_) => {
                        self.metrics.backpressure.increment(1);
                        return Err(Error::Backpressure);
                    }
                }
            }
        };
        let outcome = match forward {
            // The budget is held until the other place answered.
            Some(forward) => forward.append(self, sealed).await?,
            None => {
                let mut waiting = Vec::with_capacity(sealed.len());
                for (shard, batch) in sealed {
                    let part = permit
                        .split(batch.byte_len())
                        .expect("permits cover every batch");
                    waiting.push((shard, self.shards[shard as usize].append(batch, part)));
                }
                let mut outcome = Vec::with_capacity(waiting.len());
                for (shard, ack) in waiting {
                    let result = ack.await.unwrap_or(Err(Error::Closed));
                    outcome.push(ShardAppend { shard, result });
                }
                outcome
            }
        };
        drop(permit);
        if outcome.iter().all(|o| o.result.is_ok()) {
            self.metrics.records_in.increment(records);
            self.metrics.bytes_in.increment(total as u64);
        }
        self.metrics.append_seconds.record(started.elapsed());
        Ok(outcome)
    }

    /// Deletes segments that retention no longer keeps; returns how many.
    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let r = self.meta.retention;
        let mut deleted = 0;
        for shard in &self.shards {
            deleted += shard.enforce_retention(now_ms, r.max_age_ms, r.max_bytes_per_shard)?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_ranges_match_kinesis() {
        // Kinesis splits 3 shards at these boundaries.
        assert_eq!(
            hash_key_range(0, 3).1,
            113427455640312821154458202477256070484
        );
        assert_eq!(
            hash_key_range(1, 3).0,
            113427455640312821154458202477256070485
        );
        assert_eq!(
            hash_key_range(2, 3),
            (226854911280625642308916404954512140970, u128::MAX)
        );
        assert_eq!(hash_key_range(1, 4).0, 1u128 << 126);
        assert_eq!(hash_key_range(0, 1), (0, u128::MAX));
        for n in [1, 2, 3, 4, 7, 256] {
            for i in 0..n - 1 {
                assert_eq!(hash_key_range(i, n).1 + 1, hash_key_range(i + 1, n).0);
            }
        }
    }

    #[test]
    fn names() {
        for good in ["ticks", "a", "my-stream.v2", "A_B", &"x".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\0b",
            "é",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn md5_hash_key() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(b""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }
}
