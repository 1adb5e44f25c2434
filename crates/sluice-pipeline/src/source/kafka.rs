//! A Kafka topic as the records of a stream: its partitions are the stream's shards, their
//! offsets the positions.
//!
//! ```text
//!  broker ──► librdkafka (one consumer a stream) ──► fetch thread ──► a buffer a partition
//!                                                                          │
//!   the raw pipeline, every view, a fresh query ── read(from, limits) ─────┘ (copies out)
//! ```
//!
//! Invariants:
//! - Positions of record are the lake's (`exactly_once`): a read starts exactly where its
//!   reader says, and the consumer group's offsets are never read back. After the lake
//!   commits, the group is told the lowest position any reader of the stream still needs, so
//!   that Kafka's own lag tools show the truth.
//! - One consumer reads a stream for all its readers ([`Topic`], shared by stream id). Its
//!   buffers keep what the slowest live reader has not taken (up to [`BUFFER_BYTES`] a
//!   partition: then the partition is paused). A reader behind a buffer makes the consumer seek
//!   back; a reader ahead of it waits while another reader still needs what lies between.
//! - Offsets never go backwards: a position past a partition's end (the topic deleted and
//!   created again, or truncated) fails every read with a message that says so, and nothing is
//!   read again silently (`auto.offset.reset = error`, then the offsets asked). Records the
//!   broker's retention deleted before a reader took them are reported as a gap.
//! - Partitions added to the topic are found within [`REFRESH`] and read from their oldest
//!   record (`exactly_once`, rule 6).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_sql::{KafkaTopic, Start};

use super::elsewhere::{Buffer, ByStream, LastError, Positioned, READ_WAIT, Readers};
use super::{Bounds, Fetched, FetchedRecord};
use crate::decode::{Origin, RawRecord};
use crate::exactly_once::{Partition, Positions};
use crate::{PipelineError, Result};

/// The most bytes of records a partition's buffer holds before the partition is paused.
pub const BUFFER_BYTES: usize = 32 << 20;
/// How often the topic's partitions are looked up again (partitions added).
pub const REFRESH: Duration = Duration::from_secs(10);
/// The most records the fetch thread moves into the buffers before it lets the readers in.
const POLL_BATCH: usize = 10_000;
/// How long the fetch thread waits when the consumer had nothing.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// How often the consumer group is told the positions the lake holds.
const COMMIT_EVERY: Duration = Duration::from_secs(5);
/// How long broker calls made while creating a stream may take.
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One record of a partition, as fetched.
#[derive(Debug)]
pub struct Record {
    /// Its offset in the partition.
    pub offset: u64,
    /// Its key, if it has one.
    pub key: Option<Box<[u8]>>,
    /// Its value (none for a tombstone: then empty).
    pub payload: Box<[u8]>,
    /// Its timestamp (ms since the Unix epoch), if it has one.
    pub timestamp_ms: Option<i64>,
    /// When Sluice read it (ms since the Unix epoch).
    pub fetched_ms: i64,
}

impl FetchedRecord for Record {
    fn raw(&self, partition: Partition) -> RawRecord<'_> {
        RawRecord {
            shard: partition,
            seq: self.offset,
            append_ms: self.fetched_ms,
            data: &self.payload,
            origin: Origin::Kafka {
                key: self.key.as_deref(),
                timestamp_ms: self.timestamp_ms,
            },
        }
    }
}

/// Checks that a new stream's topic can be read and fixes where the stream starts: per
/// partition for `latest` and a timestamp (`starts`), so that every pipeline and restart
/// agree. Returns how many partitions the topic has. Blocking (broker calls).
pub fn prepare(stream: &str, topic: &mut KafkaTopic) -> Result<u32> {
    let consumer: BaseConsumer<Context> = config(stream, topic)?
        .create_with_context(Context::default())
        .map_err(|e| unreachable(topic, e))?;
    let partitions = partitions(&consumer, topic, CHECK_TIMEOUT)?;
    topic.starts = match topic.start {
        Start::Earliest => BTreeMap::new(),
        Start::Latest => partitions
            .iter()
            .map(|&p| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic.topic, p as i32, CHECK_TIMEOUT)
                    .map_err(|e| unreachable(topic, e))?;
                Ok((p, high.max(0) as u64))
            })
            .collect::<Result<_>>()?,
        Start::Timestamp(ms) => {
            let mut asked = TopicPartitionList::new();
            for &p in &partitions {
                asked
                    .add_partition_offset(&topic.topic, p as i32, Offset::Offset(ms))
                    .map_err(|e| unreachable(topic, e))?;
            }
            let found = consumer
                .offsets_for_times(asked, CHECK_TIMEOUT)
                .map_err(|e| unreachable(topic, e))?;
            let mut starts = BTreeMap::new();
            for element in found.elements() {
                let p = element.partition();
                let at = match element.offset() {
                    Offset::Offset(at) => at as u64,
                    // None at or after the instant, says the broker: some brokers (the test
                    // ones) say so for any instant, so the partition's records are asked.
                    _ => first_since(&consumer, topic, p, ms)?,
                };
                starts.insert(p as u32, at);
            }
            starts
        }
    };
    Ok(partitions.len() as u32)
}

/// The offset of the first record of partition `p` whose timestamp is at or after `ms` (its
/// end if none is), by a binary search over the partition's records: timestamps are taken to
/// grow with offsets, as the broker's own time index takes them.
fn first_since(
    consumer: &BaseConsumer<Context>,
    topic: &KafkaTopic,
    p: i32,
    ms: i64,
) -> Result<u64> {
    let (low, high) = consumer
        .fetch_watermarks(&topic.topic, p, CHECK_TIMEOUT)
        .map_err(|e| unreachable(topic, e))?;
    let (mut low, mut high) = (low.max(0), high.max(0));
    while low < high {
        let middle = low + (high - low) / 2;
        let record = first_record(consumer, topic, p, middle, |m| (m.offset(), m.timestamp()))?;
        match record {
            Some((offset, timestamp)) if timestamp.to_millis().unwrap_or(i64::MIN) < ms => {
                low = offset + 1
            }
            _ => high = middle,
        }
    }
    Ok(low as u64)
}

/// Where partition `p` of `stream`'s topic starts and ends, and its last record's payload:
/// what the reader of a source writing it resumes after. Blocking (broker calls).
pub fn tail(stream: &str, topic: &KafkaTopic, p: u32) -> Result<sluice_log::Tail> {
    let consumer: BaseConsumer<Context> = config(stream, topic)?
        .create_with_context(Context::default())
        .map_err(|e| unreachable(topic, e))?;
    let (low, high) = consumer
        .fetch_watermarks(&topic.topic, p as i32, CHECK_TIMEOUT)
        .map_err(|e| unreachable(topic, e))?;
    let (low, mut high) = (low.max(0), high.max(0));
    let last = match high > low {
        true => first_record(&consumer, topic, p as i32, high - 1, |m| {
            (m.offset(), m.payload().unwrap_or_default().to_vec())
        })?,
        false => None,
    };
    // The record read (the first at or after `high - 1`) is the tail's last, whatever it is.
    if let Some((offset, _)) = last {
        high = high.max(offset + 1);
    }
    Ok(sluice_log::Tail {
        first: low as u64,
        next: high as u64,
        last: last.map(|(_, payload)| payload),
    })
}

/// What `take` makes of the first record of partition `p` at or after `offset`, if any.
fn first_record<T>(
    consumer: &BaseConsumer<Context>,
    topic: &KafkaTopic,
    p: i32,
    offset: i64,
    take: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Result<Option<T>> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&topic.topic, p, Offset::Offset(offset))
        .map_err(|e| unreachable(topic, e))?;
    consumer.assign(&list).map_err(|e| unreachable(topic, e))?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.partition() == p && m.offset() >= offset => {
                return Ok(Some(take(&m)));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(e)) => return Err(unreachable(topic, e)),
            _ => {}
        }
    }
    Err(PipelineError::Unavailable(format!(
        "Kafka topic '{}' on {}: no answer for partition {p} at offset {offset}",
        topic.topic, topic.brokers
    )))
}

/// The consumer settings of a stream's topic: Sluice's defaults, the user's `properties`
/// ([`client_config`]), then the settings exactly once rests on.
fn config(stream: &str, topic: &KafkaTopic) -> Result<ClientConfig> {
    let mut defaults = ClientConfig::new();
    defaults
        .set("client.id", format!("sluice-{stream}"))
        // Low latency by default: a fetch returns as soon as a record is there.
        .set("fetch.wait.max.ms", "100")
        // librdkafka's default (1 s) stalls a partition whose local queue filled for a whole
        // second, though the fetch thread drains it at once: 4.4× the throughput on W1.
        .set("fetch.queue.backoff.ms", "10");
    let mut config = client_config(stream, topic, defaults)?;
    config
        .set("group.id", &topic.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error");
    Ok(config)
}

/// The settings of a client of a stream's topic: `defaults`, then the user's `properties`
/// (secrets read from the environment variables they name), then the brokers.
pub(super) fn client_config(
    stream: &str,
    topic: &KafkaTopic,
    defaults: ClientConfig,
) -> Result<ClientConfig> {
    let mut config = defaults;
    for (key, value) in &topic.properties {
        match key.strip_suffix("_env") {
            Some(key) => {
                let secret = std::env::var(value).map_err(|_| {
                    PipelineError::Invalid(format!(
                        "the Kafka setting '{key}' of stream '{stream}' is read from the \
                         environment variable {value}, which is not set"
                    ))
                })?;
                config.set(key, secret)
            }
            None => config.set(key, value),
        };
    }
    config.set("bootstrap.servers", &topic.brokers);
    Ok(config)
}

/// The topic's partitions, or why they cannot be known.
fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &KafkaTopic,
    timeout: Duration,
) -> Result<Vec<u32>> {
    let metadata = consumer
        .fetch_metadata(Some(&topic.topic), timeout)
        .map_err(|e| unreachable(topic, e))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic.topic);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id() as u32).collect())
        }
        _ => Err(PipelineError::InputGone(format!(
            "Kafka topic '{}' does not exist on {}",
            topic.topic, topic.brokers
        ))),
    }
}

pub(super) fn unreachable(topic: &KafkaTopic, e: KafkaError) -> PipelineError {
    PipelineError::Unavailable(format!(
        "Kafka brokers {} (topic '{}'): {e}",
        topic.brokers, topic.topic
    ))
}

/// A stream's consumer and buffers, shared by every reader of the stream.
pub struct Topic {
    shared: Arc<Shared>,
    fetcher: Option<std::thread::JoinHandle<()>>,
}

/// What the fetch thread and the readers share.
struct Shared {
    stream: String,
    topic: KafkaTopic,
    consumer: BaseConsumer<Context>,
    state: Mutex<State>,
    /// Told when the fetch thread has put records in the buffers.
    arrived: Condvar,
    stop: AtomicBool,
    next_reader: AtomicU64,
}

/// The consumer's context: keeps the partitions' watermarks from its statistics, and keeps
/// librdkafka's own logs and errors at debug level (what matters reaches the reads, hence
/// the pipeline's status; a broker down would otherwise log at every reconnect).
#[derive(Default)]
struct Context {
    watermarks: Mutex<HashMap<u32, Watermarks>>,
}

/// A partition's watermarks as the broker last told them (-1 when unknown).
#[derive(Debug, Clone, Copy)]
struct Watermarks {
    /// Its oldest offset.
    low: i64,
    /// The offset its next record will take.
    high: i64,
    /// When the statistics that told them came.
    at: Instant,
}

impl Context {
    fn watermarks(&self) -> HashMap<u32, Watermarks> {
        self.watermarks.lock().expect("watermarks lock").clone()
    }
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, message, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka");
    }

    fn stats(&self, statistics: Statistics) {
        let mut watermarks = self.watermarks.lock().expect("watermarks lock");
        let at = Instant::now();
        for topic in statistics.topics.values() {
            for (&p, partition) in &topic.partitions {
                if p >= 0 {
                    let (low, high) = (partition.lo_offset, partition.hi_offset);
                    watermarks.insert(p as u32, Watermarks { low, high, at });
                }
            }
        }
    }
}

impl ConsumerContext for Context {}

#[derive(Default)]
struct State {
    /// The topic's partitions, each with its buffer (once a reader asked for it).
    partitions: BTreeMap<u32, PartitionFetch>,
    /// Per live reader, where it last read from and when.
    readers: Readers,
    /// The consumer's last error and when it came, until a record or a partition's end
    /// arrives.
    error: LastError,
    /// When the partitions were last looked up.
    refreshed: Option<Instant>,
    /// A fetch was answered "offset out of range": the partitions' offsets are to be checked.
    out_of_range: bool,
    /// Why the topic cannot be read any more (its offsets went backwards).
    gone: Option<String>,
}

/// One partition's fetch.
#[derive(Default)]
struct PartitionFetch {
    /// Whether the consumer fetches it (a reader asked for it).
    assigned: bool,
    /// Whether it is paused (the buffer is full).
    paused: bool,
    /// Its fetched records, by offset.
    records: Buffer<Record>,
    /// The oldest offset the broker still holds, as last asked after a fetch out of range.
    floor: u64,
    /// When its last record was fetched.
    fetched: Option<Instant>,
}

impl Positioned for Record {
    fn position(&self) -> u64 {
        self.offset
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.payload.len() + self.key.as_ref().map_or(0, |k| k.len())
    }
}

/// The topics of the streams read now.
static TOPICS: ByStream<Topic> = ByStream::new();

impl Topic {
    /// A reader of stream `stream_id`'s topic (the stream's shared consumer, started if none
    /// runs).
    pub fn reader(stream: &str, stream_id: u64, topic: &KafkaTopic) -> Result<Reader> {
        let shared = TOPICS.get(stream_id, || Topic::start(stream, topic))?;
        let id = shared.shared.next_reader.fetch_add(1, Ordering::Relaxed);
        Ok(Reader { topic: shared, id })
    }

    fn start(stream: &str, topic: &KafkaTopic) -> Result<Topic> {
        let consumer: BaseConsumer<Context> = config(stream, topic)?
            // The partitions' watermarks, for the bounds.
            .set("statistics.interval.ms", "1000")
            .create_with_context(Context::default())
            .map_err(|e| unreachable(topic, e))?;
        let shared = Arc::new(Shared {
            stream: stream.to_string(),
            topic: topic.clone(),
            consumer,
            state: Mutex::default(),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            next_reader: AtomicU64::new(0),
        });
        let fetching = shared.clone();
        let fetcher = std::thread::Builder::new()
            .name(format!("kafka-{stream}"))
            .spawn(move || fetching.fetch())
            .map_err(|e| PipelineError::Internal(format!("cannot start a thread: {e}")))?;
        Ok(Topic {
            shared,
            fetcher: Some(fetcher),
        })
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(fetcher) = self.fetcher.take() {
            // The thread polls with a short timeout: it sees the flag soon.
            let _ = fetcher.join();
        }
    }
}

impl Shared {
    /// The fetch thread: moves records from the consumer into the buffers, keeps the
    /// partitions' list, and tells the group the lake's positions.
    fn fetch(&self) {
        let mut committed = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            // Polled under the lock: a seek (made under it too) then never meets a record
            // fetched before it, which librdkafka could not take back.
            let mut state = self.state.lock().expect("kafka state lock");
            let mut polled = 0;
            // One reading of the clock a batch, not one a record.
            let now_ms = chrono::Utc::now().timestamp_millis();
            let mut touched = BTreeSet::new();
            while polled < POLL_BATCH {
                match self.consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(polled_one) => {
                        polled += 1;
                        touched.extend(self.take(&mut state, polled_one, now_ms));
                    }
                }
            }
            // Read after the batch: statistics newer than this are newer than its records.
            let fetched = Instant::now();
            for p in touched {
                if let Some(buffer) = state.partitions.get_mut(&p) {
                    buffer.fetched = Some(fetched);
                }
            }
            if committed.elapsed() >= COMMIT_EVERY {
                committed = Instant::now();
                self.commit(&state);
            }
            drop(state);
            if polled == 0 {
                std::thread::sleep(IDLE_POLL);
            } else {
                self.arrived.notify_all();
            }
        }
    }

    /// A record (into its partition's buffer) or an event the consumer polled, its batch
    /// polled at `now_ms`; the partition a record went to.
    fn take(
        &self,
        state: &mut State,
        polled: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
        now_ms: i64,
    ) -> Option<u32> {
        match polled {
            Ok(message) => {
                state.error.clear();
                let p = message.partition() as u32;
                let buffer = state.partitions.get_mut(&p)?;
                // Offsets only grow in a buffer: anything else is not this fetch's.
                if !buffer.assigned || (message.offset() as u64) < buffer.records.next() {
                    return None;
                }
                let record = Record {
                    offset: message.offset() as u64,
                    key: message.key().map(Box::from),
                    payload: message.payload().map(Box::from).unwrap_or_default(),
                    timestamp_ms: message.timestamp().to_millis(),
                    fetched_ms: now_ms,
                };
                buffer.records.push(record);
                if buffer.records.bytes() > BUFFER_BYTES && !buffer.paused {
                    buffer.paused = self.pause(p, true);
                }
                return Some(p);
            }
            // The end of a partition: the broker answers again.
            Err(KafkaError::PartitionEOF(_)) => state.error.clear(),
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                state.out_of_range = true;
            }
            Err(e) => {
                tracing::warn!(stream = self.stream, topic = self.topic.topic, error = %e, "Kafka consumer error");
                state.error.set(e.to_string());
            }
        }
        None
    }

    fn pause(&self, partition: u32, pause: bool) -> bool {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic.topic, partition as i32);
        let done = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        match done {
            Ok(()) => pause,
            Err(e) => {
                tracing::warn!(stream = self.stream, error = %e, "cannot pause or resume a Kafka partition");
                !pause
            }
        }
    }

    /// Tells the consumer group the lowest position any live reader needs, per partition.
    fn commit(&self, state: &State) {
        let lowest = state.readers.lowest(None);
        if lowest.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (&p, &at) in &lowest {
            if list
                .add_partition_offset(&self.topic.topic, p as i32, Offset::Offset(at as i64))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(stream = self.stream, error = %e, "cannot commit offsets to the Kafka group");
        }
    }

    /// Looks the topic's partitions up again when due; a partition new to the topic gets a
    /// buffer.
    fn refresh(&self, state: &mut State) -> Result<()> {
        if state.refreshed.is_some_and(|at| at.elapsed() < REFRESH) {
            return Ok(());
        }
        let found = partitions(&self.consumer, &self.topic, CHECK_TIMEOUT)?;
        state.refreshed = Some(Instant::now());
        for p in found {
            state.partitions.entry(p).or_default();
        }
        Ok(())
    }

    /// After a fetch out of range: a partition whose end is now before where the stream got
    /// went backwards (the topic deleted and created again, or truncated), which is final; one
    /// whose oldest record is now past it lost records to the broker's retention, and is read
    /// on from its oldest (the reader reports the gap).
    fn check_offsets(&self, state: &mut State) -> Result<()> {
        let assigned: Vec<(u32, u64)> = (state.partitions.iter())
            .filter(|(_, b)| b.assigned)
            .map(|(&p, b)| (p, b.records.next()))
            .collect();
        for (p, fetched) in assigned {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic.topic, p as i32, CHECK_TIMEOUT)
                .map_err(|e| unreachable(&self.topic, e))?;
            let (low, high) = (low.max(0) as u64, high.max(0) as u64);
            if fetched > high {
                state.gone = Some(self.went_backwards(p, high, fetched));
            } else if fetched < low {
                self.seek(state, p, low)?;
                state.partitions.entry(p).or_default().floor = low;
            }
        }
        Ok(())
    }

    /// Why a partition that ends at `high`, before `reached`, is not read any more.
    fn went_backwards(&self, partition: u32, high: u64, reached: u64) -> String {
        format!(
            "partition {partition} of Kafka topic '{}' ends at offset {high}, before offset \
             {reached} that stream '{}' already reached: the topic was deleted and created \
             again, or truncated. Sluice does not read it again from the start by itself: drop \
             the stream and create it again to start over",
            self.topic.topic, self.stream
        )
    }

    /// Starts (or moves) the consumer's fetch of `partition` at `at`.
    fn seek(&self, state: &mut State, partition: u32, at: u64) -> Result<()> {
        let buffer = state.partitions.entry(partition).or_default();
        let offset = Offset::Offset(at as i64);
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic.topic, partition as i32, offset)
            .map_err(|e| unreachable(&self.topic, e))?;
        if buffer.assigned {
            self.consumer
                .seek_partitions(list, Duration::from_secs(5))
                .map_err(|e| unreachable(&self.topic, e))?;
            if buffer.paused {
                buffer.paused = self.pause(partition, false);
            }
        } else {
            self.consumer
                .incremental_assign(&list)
                .map_err(|e| unreachable(&self.topic, e))?;
            buffer.assigned = true;
        }
        buffer.records.reset(at);
        Ok(())
    }
}

/// One reader of a stream's topic (a pipeline, a query's fresh tail); dropping it lets the
/// buffers go past its position.
pub struct Reader {
    topic: Arc<Topic>,
    id: u64,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.topic.shared.state.lock().expect("kafka state lock");
        state.readers.remove(self.id);
    }
}

impl Reader {
    /// The topic's partitions, each with its oldest position (the stream's start, or the
    /// oldest record the broker keeps) and its end (the broker's, or what was fetched).
    pub fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        let shared = &self.topic.shared;
        let mut state = shared.state.lock().expect("kafka state lock");
        shared.refresh(&mut state)?;
        let watermarks = shared.consumer.context().watermarks();
        Ok(state
            .partitions
            .iter()
            .map(|(&p, buffer)| {
                let (low, high) = watermarks.get(&p).map_or((-1, -1), |w| (w.low, w.high));
                let start = shared.topic.starts.get(&p).copied().unwrap_or(0);
                let oldest = start.max(low.max(0) as u64).max(buffer.floor);
                let next = (high.max(0) as u64).max(buffer.records.next()).max(oldest);
                (p, Bounds { oldest, next })
            })
            .collect())
    }

    /// Per partition of `positions`, how far the record at the position is behind the newest
    /// record fetched, by their timestamps (0 when the reader has taken everything fetched).
    pub fn time_lag(&self, positions: &Positions) -> BTreeMap<Partition, u64> {
        let state = self.topic.shared.state.lock().expect("kafka state lock");
        positions
            .iter()
            .filter_map(|(p, &at)| {
                let buffer = state.partitions.get(p)?;
                let lag = match buffer.records.span(at) {
                    Some((oldest, newest)) => newest
                        .timestamp_ms
                        .zip(oldest.timestamp_ms)
                        .map_or(0, |(newest, oldest)| newest.saturating_sub(oldest).max(0)),
                    None => 0,
                };
                Some((*p, lag as u64))
            })
            .collect()
    }

    /// Per partition of `limits`, the records from its position in `from` (its oldest, when
    /// none), at most its limit, as the buffers hold them: a read waits for the broker only
    /// while nothing is buffered past its positions and the broker holds more, and then at
    /// most [`READ_WAIT`].
    pub fn read(
        &self,
        from: &Positions,
        limits: &BTreeMap<Partition, usize>,
    ) -> Result<BTreeMap<Partition, Fetched<Record>>> {
        let shared = &self.topic.shared;
        {
            let mut state = shared.state.lock().expect("kafka state lock");
            if std::mem::take(&mut state.out_of_range) {
                shared.check_offsets(&mut state)?;
            }
            if let Some(gone) = &state.gone {
                return Err(PipelineError::InputGone(gone.clone()));
            }
        }
        let bounds = self.bounds()?;
        let mut state = shared.state.lock().expect("kafka state lock");
        let positions: Positions = limits
            .keys()
            .map(|p| {
                let oldest = bounds.get(p).map_or(0, |b| b.oldest);
                (*p, from.get(p).copied().unwrap_or(oldest).max(oldest))
            })
            .collect();
        state.readers.reads_from(self.id, positions.clone());
        let others = state.readers.lowest(Some(self.id));
        let watermarks = shared.consumer.context().watermarks();
        for (&p, &at) in &positions {
            let fetched = state.partitions.get(&p).and_then(|b| b.fetched);
            // The broker's end, told after the last record fetched, is before the position:
            // the partition went backwards (some brokers answer a fetch past the end with no
            // error at all).
            if let Some(w) = watermarks.get(&p)
                && w.high >= 0
                && (w.high as u64) < at
                && fetched.is_none_or(|f| w.at > f)
            {
                let gone = shared.went_backwards(p, w.high as u64, at);
                state.gone = Some(gone.clone());
                return Err(PipelineError::InputGone(gone));
            }
        }
        for &p in limits.keys() {
            let at = positions[&p];
            let buffer = state.partitions.entry(p).or_default();
            if !(buffer.assigned && buffer.records.serves(at, others.get(&p).copied())) {
                shared.seek(&mut state, p, at)?;
            }
        }
        // Where each partition ends, as far as anyone knows: the broker's end or what came.
        let end = |state: &State, p: &Partition| {
            let high = watermarks.get(p).map_or(0, |w| w.high.max(0) as u64);
            high.max(state.partitions.get(p).map_or(0, |b| b.records.next()))
        };
        // Records come in the background: while none is buffered past any position but the
        // broker holds more, wait for them a little (a round that took nothing would wait a
        // whole interval, and one that spun would take the lock from the fetch thread).
        let deadline = Instant::now() + READ_WAIT;
        loop {
            let nothing_buffered = positions.iter().all(|(p, &at)| {
                state
                    .partitions
                    .get(p)
                    .is_none_or(|b| b.records.next() <= at)
            });
            let more_at_broker = positions.iter().any(|(p, &at)| end(&state, p) > at);
            let now = Instant::now();
            if !(nothing_buffered && more_at_broker) || now >= deadline {
                break;
            }
            state = (shared.arrived)
                .wait_timeout(state, deadline - now)
                .expect("kafka state lock")
                .0;
        }
        let mut reads = BTreeMap::new();
        for (&p, &limit) in limits {
            let at = positions[&p];
            let partition_end = end(&state, &p);
            let buffer = (state.partitions.get(&p)).expect("a buffer per partition read");
            // More is buffered, or the broker holds more: the runtime reads again at once.
            let read =
                (buffer.records).read(from.get(&p).copied(), at, limit, buffer.assigned, |next| {
                    next < partition_end
                });
            reads.insert(p, read);
        }
        // What no live reader needs any more goes, and a full partition fetches again.
        let lowest = state.readers.lowest(None);
        for (p, buffer) in state.partitions.iter_mut() {
            if let Some(&low) = lowest.get(p) {
                buffer.records.trim(low);
            }
            if buffer.paused && buffer.records.bytes() < BUFFER_BYTES / 2 {
                buffer.paused = shared.pause(*p, false);
            }
        }
        let read_nothing = reads.values().all(|r| r.records.is_empty());
        if let (true, Some(error)) = (read_nothing, state.error.recent()) {
            return Err(PipelineError::Unavailable(format!(
                "Kafka topic '{}' on {}: {error}",
                shared.topic.topic, shared.topic.brokers
            )));
        }
        Ok(reads)
    }
}
