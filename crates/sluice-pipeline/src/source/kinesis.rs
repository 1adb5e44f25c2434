//! A Kinesis stream as the records of a stream: its shards are the stream's shards (shard
//! `shardId-000000000003` is shard 3), and a record's position is its **ordinal**: its place
//! in its shard, counted by Sluice from where the stream starts.
//!
//! ```text
//!  Kinesis ──GetRecords──► a fetch task a shard ──► a buffer a shard ─┐
//!          ──ListShards──► the shard list (every REFRESH)             │
//!   the raw pipeline, every view, a fresh query ── read(from, limits) ─┘ (copies out)
//! ```
//!
//! Invariants:
//! - Positions of record are the lake's (`exactly_once`): ordinals, because Kinesis sequence
//!   numbers (up to 56 digits) fit neither a Delta `txn` version nor `_seq`. Each row keeps
//!   its sequence number as text (`_kinesis_seq`). What ties the two together is the
//!   stream's **pins** ([`Pins`]): per shard, ordinals with the sequence number of their
//!   record, in a file of the stream's directory in the log. The first record of a shard is
//!   pinned, synced, before any reader sees it; then a record about every [`PIN_EVERY`]
//!   records or [`PIN_AGE`]. A read from ordinal `n` starts `AT_SEQUENCE_NUMBER` the pin at
//!   or before `n` and skips to `n`: a shard's records never change order, so ordinals are
//!   the same after any restart, and a restart resumes exactly after the last record taken.
//! - One fetch task a shard reads for all the stream's readers ([`Kinesis`], shared by stream
//!   id); its buffer keeps what the slowest live reader has not taken (up to
//!   [`BUFFER_BYTES`]: then it waits). A reader behind the buffer moves the fetch back.
//! - Shards are followed through resharding: a child shard is read only by a reader that has
//!   taken its parents to their ends (a parent closed and read to its end, or gone from the
//!   list with the stream's retention), so that records of a key come in order.
//! - A pinned record that the stream's retention deleted before the readers took it fails
//!   the reads with a message that says so: how many records went is not knowable.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use sluice_sql::{KinesisStream, Start};

use super::elsewhere::{Buffer, ByStream, LastError, Positioned, READ_WAIT, Readers};
use super::{Bounds, Fetched, FetchedRecord};
use crate::decode::{Origin, RawRecord};
use crate::exactly_once::{Partition, Positions};
use crate::{PipelineError, Result};

/// The most bytes of records a shard's buffer holds before its fetch waits.
pub const BUFFER_BYTES: usize = 32 << 20;
/// How often the stream's shards are listed again (resharding).
pub const REFRESH: Duration = Duration::from_secs(10);
/// Records between two pins of a shard, at most.
pub const PIN_EVERY: u64 = 10_000;
/// Time between two pins of a shard that is read, at most.
pub const PIN_AGE: Duration = Duration::from_secs(60);
/// The most records one GetRecords call asks for (Kinesis's own limit).
const GET_LIMIT: i32 = 10_000;
/// The wait between two GetRecords calls of a shard that is caught up: Kinesis allows five
/// calls a second a shard, for all its consumers, and the KCL's consumers poll once a second.
const CAUGHT_UP_POLL: Duration = Duration::from_secs(1);
/// The first wait after a failed call: doubled after each failure in a row, up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one call to Kinesis may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One record of a shard, as fetched.
#[derive(Debug)]
pub struct Record {
    /// Its ordinal in the shard.
    pub ordinal: u64,
    /// Its sequence number, as Kinesis gave it.
    pub sequence: Box<str>,
    /// Its partition key.
    pub key: Box<str>,
    /// Its data.
    pub data: Box<[u8]>,
    /// Its approximate arrival time (ms since the Unix epoch).
    pub arrival_ms: Option<i64>,
    /// When Sluice read it (ms since the Unix epoch).
    pub fetched_ms: i64,
}

impl Positioned for Record {
    fn position(&self) -> u64 {
        self.ordinal
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.data.len() + self.sequence.len() + self.key.len()
    }
}

impl FetchedRecord for Record {
    fn raw(&self, partition: Partition) -> RawRecord<'_> {
        RawRecord {
            shard: partition,
            seq: self.ordinal,
            append_ms: self.fetched_ms,
            data: &self.data,
            origin: Origin::Kinesis {
                key: &self.key,
                sequence: &self.sequence,
                arrival_ms: self.arrival_ms,
            },
        }
    }
}

/// The runtime of every Kinesis client and fetch task (one small thread: they wait on the
/// network, and the pipelines' work is elsewhere).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kinesis")
            .enable_all()
            .build()
            .expect("the Kinesis runtime starts")
    })
}

/// Runs `future` on the Kinesis runtime and waits for it. The wait is on a thread of its own:
/// the caller may be a thread of another runtime, which may not wait on one.
fn wait_for<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| runtime().block_on(future));
        match waiting.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Checks that a new stream's Kinesis stream can be read and fixes where the stream starts
/// (`latest`: now). Blocking.
pub fn prepare(stream: &str, source: &mut KinesisStream) -> Result<()> {
    wait_for(async {
        let client = client(stream, source).await?;
        list_shards(&client, source).await
    })?;
    if source.start == Start::Latest {
        source.started_ms = Some(chrono::Utc::now().timestamp_millis());
    }
    Ok(())
}

/// The client of `source`: its region, endpoint and credentials (the environment variables
/// it names, or the AWS SDK's default chain).
async fn client(stream: &str, source: &KinesisStream) -> Result<Client> {
    let variable = |name: &Option<String>| -> Result<Option<String>> {
        name.as_ref()
            .map(|name| {
                std::env::var(name).map_err(|_| {
                    PipelineError::Invalid(format!(
                        "the credentials of stream '{stream}' are read from the environment \
                         variable {name}, which is not set"
                    ))
                })
            })
            .transpose()
    };
    let mut config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(source.region.clone()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(CALL_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = &source.endpoint {
        config = config.endpoint_url(endpoint);
    }
    if let (Some(key), Some(secret)) = (
        variable(&source.access_key_id_env)?,
        variable(&source.secret_access_key_env)?,
    ) {
        let token = variable(&source.session_token_env)?;
        config = config.credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            key, secret, token, None, "sluice",
        ));
    }
    Ok(Client::new(&config.load().await))
}

/// A shard as ListShards tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: String,
    parents: Vec<Partition>,
}

/// The stream's shards, by number; fails when the stream does not exist or cannot be reached.
async fn list_shards(client: &Client, source: &KinesisStream) -> Result<BTreeMap<u32, Listed>> {
    let mut shards = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        // A page after the first names the token only.
        let call = match &token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(&source.stream_name),
        };
        let page = call.send().await.map_err(|e| {
            let gone = e
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception());
            if gone {
                PipelineError::InputGone(format!(
                    "Kinesis stream '{}' does not exist ({})",
                    source.stream_name,
                    source.endpoint.as_deref().unwrap_or(&source.region)
                ))
            } else {
                unreachable(source, &e)
            }
        })?;
        for shard in page.shards() {
            let number = shard_number(shard.shard_id())?;
            let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(shard_number)
                .collect::<Result<_>>()?;
            let id = shard.shard_id().to_string();
            shards.insert(number, Listed { id, parents });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(shards);
        }
    }
}

/// The number of shard `shardId-000000000003`: 3.
fn shard_number(id: &str) -> Result<u32> {
    id.strip_prefix("shardId-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            PipelineError::Unsupported(format!(
                "Kinesis shard id '{id}' is not shardId-<number>: Sluice numbers shards by it"
            ))
        })
}

fn unreachable(source: &KinesisStream, e: &dyn std::error::Error) -> PipelineError {
    // The SDK's errors say what failed in their sources ("dispatch failure": connection
    // refused); each is said once.
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(error) = cause {
        let more = error.to_string();
        if !said.contains(&more) {
            said = format!("{said}: {more}");
        }
        cause = error.source();
    }
    PipelineError::Unavailable(format!(
        "Kinesis stream '{}' ({}): {said}",
        source.stream_name,
        source.endpoint.as_deref().unwrap_or(&source.region),
    ))
}

/// Per shard, ordinals pinned to the sequence numbers of their records: lines
/// `<shard> <ordinal> <sequence number>` appended to a file (a torn last line is cut off when
/// the file is loaded, so that the next line is whole).
#[derive(Debug)]
struct Pins {
    path: PathBuf,
    pins: BTreeMap<Partition, BTreeMap<u64, String>>,
}

impl Pins {
    fn load(path: PathBuf) -> Result<Pins> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(PipelineError::Internal(format!("{}: {e}", path.display()))),
        };
        // A line without its end was torn by a crash: its pin was never synced, hence never
        // used. It goes, lest the next pin be appended to it.
        let whole = text.rfind('\n').map_or(0, |end| end + 1);
        if whole < text.len() {
            let file = std::fs::OpenOptions::new().write(true).open(&path);
            file.and_then(|f| f.set_len(whole as u64).and_then(|()| f.sync_data()))
                .map_err(|e| PipelineError::Internal(format!("{}: {e}", path.display())))?;
        }
        let mut pins: BTreeMap<Partition, BTreeMap<u64, String>> = BTreeMap::new();
        for line in text[..whole].lines() {
            let mut fields = line.split(' ');
            if let (Some(shard), Some(ordinal), Some(sequence), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
                && let (Ok(shard), Ok(ordinal)) = (shard.parse(), ordinal.parse())
                && !sequence.is_empty()
            {
                pins.entry(shard)
                    .or_default()
                    .insert(ordinal, sequence.to_string());
            }
        }
        Ok(Pins { path, pins })
    }

    /// Pins `ordinal` of `shard` to `sequence`, synced.
    fn pin(&mut self, shard: Partition, ordinal: u64, sequence: &str) -> Result<()> {
        let io =
            |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", self.path.display()));
        let created = !self.path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(format!("{shard} {ordinal} {sequence}\n").as_bytes())
            .map_err(io)?;
        file.sync_data().map_err(io)?;
        // A new file is durable once its directory is.
        if created && let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        self.pins
            .entry(shard)
            .or_default()
            .insert(ordinal, sequence.to_string());
        Ok(())
    }

    /// The last pin of `shard` at or before `ordinal`.
    fn at_or_before(&self, shard: Partition, ordinal: u64) -> Option<(u64, Box<str>)> {
        let (&at, sequence) = self.pins.get(&shard)?.range(..=ordinal).next_back()?;
        Some((at, sequence.as_str().into()))
    }

    /// Forgets the pins of `shard` at or before `ordinal` (their records are gone); the first
    /// pin left, if any.
    fn forget_through(&mut self, shard: Partition, ordinal: u64) -> Option<u64> {
        let pins = self.pins.get_mut(&shard)?;
        *pins = pins.split_off(&(ordinal + 1));
        pins.keys().next().copied()
    }

    /// The last pin of `shard`.
    fn last(&self, shard: Partition) -> Option<u64> {
        self.pins.get(&shard)?.keys().next_back().copied()
    }
}

/// A stream's Kinesis client, pins and buffers, shared by every reader of the stream.
pub struct Kinesis {
    shared: Arc<Shared>,
}

/// What the fetch tasks and the readers share.
struct Shared {
    stream: String,
    source: KinesisStream,
    client: Client,
    state: Mutex<State>,
    /// Told when a fetch task has put records in a buffer (or found a shard's end).
    arrived: Condvar,
    stop: AtomicBool,
    next_reader: AtomicU64,
}

struct State {
    /// The stream's shards, each with its buffer.
    shards: BTreeMap<Partition, Shard>,
    pins: Pins,
    /// Per live reader, where it last read from and when.
    readers: Readers,
    /// The last error of a call, and when it came, until a call succeeds.
    error: LastError,
    /// Why the stream cannot be read any more.
    gone: Option<String>,
}

/// One shard's fetched records: a run of ordinals from `start` to `next`.
#[derive(Debug, Default)]
struct Shard {
    id: String,
    /// The shards it was split or merged from.
    parents: Vec<Partition>,
    /// Whether ListShards still lists it.
    listed: bool,
    /// The oldest ordinal it still holds, as far as Sluice knows.
    oldest: u64,
    /// Bumped when the fetch is moved: the fetch task starts over from the buffer's end.
    epoch: u64,
    /// Whether a fetch task runs for it.
    fetching: bool,
    /// Its fetched records, by ordinal.
    records: Buffer<Record>,
    /// Closed, and read to its end: no record comes after the buffer's end.
    ended: bool,
    /// How far the fetch is behind the shard's newest record, as Kinesis last said.
    millis_behind: Option<i64>,
    /// When a record of it was last pinned.
    pinned: Option<Instant>,
}

impl Shard {
    fn moved_to(&mut self, at: u64) {
        self.epoch += 1;
        self.records.reset(at);
        self.ended = false;
        self.millis_behind = None;
    }

    /// Whether Kinesis holds records past what was fetched (unknown yet: yes).
    fn behind(&self) -> bool {
        !self.ended && self.millis_behind.is_none_or(|ms| ms > 0)
    }
}

/// The Kinesis streams read now.
static STREAMS: ByStream<Kinesis> = ByStream::new();

impl Kinesis {
    /// A reader of stream `stream_id`'s Kinesis stream (started if none runs), its pins in
    /// directory `dir`.
    pub fn reader(
        stream: &str,
        stream_id: u64,
        source: &KinesisStream,
        dir: &Path,
    ) -> Result<Reader> {
        let kinesis = STREAMS.get(stream_id, || Kinesis::start(stream, source, dir))?;
        let id = kinesis.shared.next_reader.fetch_add(1, Ordering::Relaxed);
        Ok(Reader { kinesis, id })
    }

    fn start(stream: &str, source: &KinesisStream, dir: &Path) -> Result<Kinesis> {
        // The shards are known before the first read (a pipeline reads its positions for the
        // shards it is told of); then listed again in the background.
        let (client, listed) = wait_for(async {
            let client = client(stream, source).await?;
            let listed = list_shards(&client, source).await?;
            Ok::<_, PipelineError>((client, listed))
        })?;
        let pins = Pins::load(dir.join("kinesis.pins"))?;
        let shared = Arc::new(Shared::new(stream, source, client, pins));
        shared.listed(listed);
        runtime().spawn(shared.clone().list_every());
        Ok(Kinesis { shared })
    }
}

impl Drop for Kinesis {
    fn drop(&mut self) {
        // The tasks see it within a call or a wait.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    fn new(stream: &str, source: &KinesisStream, client: Client, pins: Pins) -> Shared {
        Shared {
            stream: stream.to_string(),
            source: source.clone(),
            client,
            state: Mutex::new(State {
                shards: BTreeMap::new(),
                pins,
                readers: Readers::default(),
                error: LastError::default(),
                gone: None,
            }),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            next_reader: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("kinesis state lock")
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Takes a listing in: new shards get a buffer; a shard no longer listed was deleted by
    /// the stream's retention (it no longer holds its children back).
    fn listed(&self, listed: BTreeMap<u32, Listed>) {
        let mut state = self.lock();
        for shard in state.shards.values_mut() {
            shard.listed = false;
        }
        for (number, Listed { id, parents }) in listed {
            let shard = state.shards.entry(number).or_default();
            shard.id = id;
            shard.parents = parents;
            shard.listed = true;
        }
    }

    async fn list_every(self: Arc<Self>) {
        while !self.stopped() {
            tokio::time::sleep(REFRESH).await;
            match list_shards(&self.client, &self.source).await {
                Ok(listed) => self.listed(listed),
                Err(e) => self.lock().error.set(e.to_string()),
            }
        }
    }

    /// Records a failed call, and waits before the next.
    async fn failed(&self, error: String, backoff: &mut Duration) {
        tracing::debug!(stream = self.stream, error, "Kinesis call failed");
        self.lock().error.set(error);
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// A shard's fetch task: from the shard's `next`, into its buffer, until the shard ends
    /// or the stream is no longer read; over again when a reader moves the fetch.
    async fn fetch(self: Arc<Self>, number: Partition) {
        let mut backoff = MIN_BACKOFF;
        'moved: while !self.stopped() {
            let (epoch, id, from, last) = {
                let state = self.lock();
                let shard = &state.shards[&number];
                let last = (shard.records.newest()).map(|r| (r.ordinal, r.sequence.clone()));
                (shard.epoch, shard.id.clone(), shard.records.next(), last)
            };
            // Where the fetch starts: after the last record fetched, else at the pin at or
            // before `from` (skipping to it), else where the stream starts.
            let pinned = self.lock().pins.at_or_before(number, from);
            let (kind, sequence, skip) = match last {
                Some((ordinal, sequence)) if ordinal + 1 == from => {
                    (ShardIteratorType::AfterSequenceNumber, Some(sequence), 0)
                }
                _ => match pinned {
                    Some((at, sequence)) => (
                        ShardIteratorType::AtSequenceNumber,
                        Some(sequence),
                        from - at,
                    ),
                    None if from == 0 => match self.source.start {
                        Start::Earliest => (ShardIteratorType::TrimHorizon, None, 0),
                        _ => (ShardIteratorType::AtTimestamp, None, 0),
                    },
                    None => {
                        self.lock().gone = Some(format!(
                            "shard {id} of Kinesis stream '{}': no pin at or before ordinal \
                             {from} (the stream's kinesis.pins was lost); drop the stream and \
                             create it again to start over",
                            self.source.stream_name
                        ));
                        break;
                    }
                },
            };
            let pinned_at = (kind == ShardIteratorType::AtSequenceNumber).then(|| sequence.clone());
            let mut call = self
                .client
                .get_shard_iterator()
                .stream_name(&self.source.stream_name)
                .shard_id(&id)
                .shard_iterator_type(kind.clone());
            if let Some(sequence) = &sequence {
                call = call.starting_sequence_number(sequence.as_ref());
            }
            if kind == ShardIteratorType::AtTimestamp {
                let ms = match self.source.start {
                    Start::Timestamp(ms) => ms,
                    _ => self.source.started_ms.unwrap_or_default(),
                };
                call = call.timestamp(DateTime::from_millis(ms));
            }
            let mut iterator = match call.send().await {
                Ok(answer) => answer.shard_iterator().map(str::to_string),
                Err(e) => {
                    let error = unreachable(&self.source, &e).to_string();
                    self.failed(error, &mut backoff).await;
                    continue 'moved;
                }
            };
            let mut cursor = Cursor {
                epoch,
                id,
                from,
                pin: (kind == ShardIteratorType::AtSequenceNumber).then(|| from - skip),
                check: pinned_at.flatten(),
                skip,
            };
            while let Some(at) = iterator.take() {
                if self.stopped() {
                    break 'moved;
                }
                let answer = match self
                    .client
                    .get_records()
                    .shard_iterator(at)
                    .limit(GET_LIMIT)
                    .send()
                    .await
                {
                    Ok(answer) => answer,
                    Err(e) => {
                        let error = unreachable(&self.source, &e).to_string();
                        self.failed(error, &mut backoff).await;
                        continue 'moved;
                    }
                };
                backoff = MIN_BACKOFF;
                iterator = answer.next_shard_iterator().map(str::to_string);
                let (caught_up, full) = match self.take(number, &mut cursor, &answer) {
                    Taken::Buffered { caught_up, full } => (caught_up, full),
                    Taken::Moved => continue 'moved,
                    Taken::Gone => break 'moved,
                    Taken::Unpinned(error) => {
                        self.failed(error, &mut backoff).await;
                        continue 'moved;
                    }
                };
                self.arrived.notify_all();
                if caught_up || answer.records().is_empty() {
                    tokio::time::sleep(CAUGHT_UP_POLL).await;
                }
                // Readers take from a full buffer; a reader moving the fetch starts it over.
                while full && !self.stopped() {
                    match self.drained(number, cursor.epoch) {
                        None => continue 'moved,
                        Some(true) => break,
                        Some(false) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            // The shard is closed and read to its end: the task is done, unless a reader moved
            // the fetch meanwhile.
            if self.done(number, Some(cursor.epoch)) {
                return;
            }
        }
        self.done(number, None);
    }

    /// Ends shard `number`'s fetch task, unless a reader moved the fetch since `epoch`.
    fn done(&self, number: Partition, epoch: Option<u64>) -> bool {
        let mut state = self.lock();
        let Some(shard) = state.shards.get_mut(&number) else {
            return true;
        };
        if epoch.is_some_and(|epoch| shard.epoch != epoch) {
            return false;
        }
        shard.fetching = false;
        drop(state);
        self.arrived.notify_all();
        true
    }

    /// Takes a GetRecords answer for shard `number` into its buffer, pinning records as due.
    fn take(&self, number: Partition, cursor: &mut Cursor, answer: &GetRecordsOutput) -> Taken {
        let fetched_ms = chrono::Utc::now().timestamp_millis();
        let mut state = self.lock();
        state.error.clear();
        if state.shards[&number].epoch != cursor.epoch {
            return Taken::Moved;
        }
        // The pinned record must come first: else retention deleted it, and the shard's
        // records are counted from the first pin whose record is still there (readers before
        // it are told what they lost).
        if let Some(first) = answer.records().first()
            && let Some(pinned) = cursor.check.take()
            && *first.sequence_number() != *pinned
        {
            let State { shards, pins, .. } = &mut *state;
            let pin = cursor.pin.unwrap_or(cursor.from);
            if let Some(next) = pins.forget_through(number, pin) {
                let shard = shards.get_mut(&number).expect("a fetched shard");
                shard.oldest = next;
                shard.moved_to(next);
                return Taken::Moved;
            }
            state.gone = Some(format!(
                "shard {} of Kinesis stream '{}' no longer holds record {pinned} nor any \
                 later one whose place Sluice knows: the stream's retention deleted them before \
                 Sluice took them. Drop the stream and create it again to start over",
                cursor.id, self.source.stream_name
            ));
            return Taken::Gone;
        }
        let skipped = (cursor.skip as usize).min(answer.records().len());
        cursor.skip -= skipped as u64;
        let State { shards, pins, .. } = &mut *state;
        let shard = shards.get_mut(&number).expect("a fetched shard");
        for record in answer.records().iter().skip(skipped) {
            let ordinal = shard.records.next();
            let due = pins.last(number).is_none_or(|last| {
                ordinal >= last + PIN_EVERY || shard.pinned.is_none_or(|at| at.elapsed() >= PIN_AGE)
            });
            // A record is seen only once it or an earlier one is pinned.
            if due {
                if let Err(e) = pins.pin(number, ordinal, record.sequence_number()) {
                    return Taken::Unpinned(e.to_string());
                }
                shard.pinned = Some(Instant::now());
            }
            let record = Record {
                ordinal,
                sequence: record.sequence_number().into(),
                key: record.partition_key().unwrap_or_default().into(),
                data: record.data().as_ref().into(),
                arrival_ms: record
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok()),
                fetched_ms,
            };
            shard.records.push(record);
        }
        shard.millis_behind = answer.millis_behind_latest();
        shard.ended = answer.next_shard_iterator().is_none() && cursor.skip == 0;
        Taken::Buffered {
            caught_up: !shard.behind(),
            full: shard.records.bytes() > BUFFER_BYTES,
        }
    }

    /// Whether shard `number`'s buffer has room again; none when its fetch was moved since
    /// `epoch`.
    fn drained(&self, number: Partition, epoch: u64) -> Option<bool> {
        let state = self.lock();
        let shard = &state.shards[&number];
        (shard.epoch == epoch).then_some(shard.records.bytes() <= BUFFER_BYTES / 2)
    }

    /// Moves shard `number`'s fetch to `at` (starting its task if none runs).
    fn fetch_from(self: &Arc<Self>, state: &mut State, number: Partition, at: u64) {
        let shard = state.shards.entry(number).or_default();
        shard.moved_to(at);
        if !shard.fetching {
            shard.fetching = true;
            runtime().spawn(self.clone().fetch(number));
        }
    }
}

/// Where a fetch task is in its shard since its fetch was last moved.
struct Cursor {
    /// The shard's epoch when the fetch started.
    epoch: u64,
    /// The shard's id.
    id: String,
    /// The ordinal the fetch was moved to.
    from: u64,
    /// The pin the fetch started at, if it did.
    pin: Option<u64>,
    /// The sequence number the first record must have (the fetch started at a pin).
    check: Option<Box<str>>,
    /// Records to skip before `from`.
    skip: u64,
}

/// What became of a GetRecords answer.
enum Taken {
    /// In the buffer: whether the shard is caught up, and whether its buffer is full.
    Buffered { caught_up: bool, full: bool },
    /// A reader moved the fetch meanwhile: the answer is not wanted.
    Moved,
    /// The shard no longer holds what it must: the stream cannot be read any more.
    Gone,
    /// A record could not be pinned.
    Unpinned(String),
}

/// Whether a reader at `positions` may read shard `number`: every parent of it still listed
/// is closed and taken to its end.
fn parents_taken(
    shards: &BTreeMap<Partition, Shard>,
    number: Partition,
    positions: &Positions,
) -> bool {
    shards[&number]
        .parents
        .iter()
        .all(|parent| match shards.get(parent) {
            Some(p) if p.listed => {
                p.ended
                    && positions
                        .get(parent)
                        .is_some_and(|&at| at >= p.records.next())
            }
            _ => true,
        })
}

/// One reader of a stream's Kinesis stream (a pipeline, a query's fresh tail); dropping it
/// lets the buffers go past its position.
pub struct Reader {
    kinesis: Arc<Kinesis>,
    id: u64,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.kinesis.shared.lock().readers.remove(self.id);
    }
}

impl Reader {
    /// The stream's shards, each from ordinal 0 to what was fetched (one more while Kinesis
    /// holds more past it).
    pub fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        let state = self.kinesis.shared.lock();
        if let Some(gone) = &state.gone {
            return Err(PipelineError::InputGone(gone.clone()));
        }
        Ok(state
            .shards
            .iter()
            .map(|(&p, shard)| {
                let next = shard.records.next() + u64::from(shard.behind() && shard.fetching);
                let oldest = shard.oldest;
                (p, Bounds { oldest, next })
            })
            .collect())
    }

    /// Per shard of `positions`, how far the record at the position is behind the shard's
    /// newest record: Kinesis's MillisBehindLatest for the fetch, plus the arrival times
    /// between the position and the last record fetched.
    pub fn time_lag(&self, positions: &Positions) -> BTreeMap<Partition, u64> {
        let state = self.kinesis.shared.lock();
        positions
            .iter()
            .filter_map(|(p, &at)| {
                let shard = state.shards.get(p)?;
                let buffered = match shard.records.span(at) {
                    Some((oldest, newest)) => newest
                        .arrival_ms
                        .zip(oldest.arrival_ms)
                        .map_or(0, |(newest, oldest)| (newest - oldest).max(0)),
                    None => 0,
                };
                let behind = shard.millis_behind.unwrap_or(0).max(0);
                Some((*p, (buffered + behind) as u64))
            })
            .collect()
    }

    /// Per shard of `limits`, the records from its position in `from` (ordinal 0 when none),
    /// at most its limit; none from a shard whose parents the reader has not taken to their
    /// ends. A read waits for Kinesis only while nothing is buffered past its positions and
    /// Kinesis holds more, and then at most [`READ_WAIT`].
    pub fn read(
        &self,
        from: &Positions,
        limits: &BTreeMap<Partition, usize>,
    ) -> Result<BTreeMap<Partition, Fetched<Record>>> {
        let shared = &self.kinesis.shared;
        let mut state = shared.lock();
        if let Some(gone) = &state.gone {
            return Err(PipelineError::InputGone(gone.clone()));
        }
        // Where the reader is in each shard the listing knows (others read as empty), at its
        // oldest record when it has no position; it reads the shards whose parents it has
        // taken to their ends, and only those hold records for it.
        let asked: Positions = (limits.keys())
            .filter_map(|p| {
                let shard = state.shards.get(p).filter(|s| s.listed)?;
                let at = from.get(p).copied().unwrap_or(shard.oldest);
                Some((*p, at.max(shard.oldest)))
            })
            .collect();
        let positions: Positions = (asked.iter())
            .filter(|(p, _)| parents_taken(&state.shards, **p, &asked))
            .map(|(&p, &at)| (p, at))
            .collect();
        state.readers.reads_from(self.id, positions.clone());
        let others = state.readers.lowest(Some(self.id));
        for (&p, &at) in &positions {
            let shard = state.shards.entry(p).or_default();
            let serves = shard.fetching && shard.records.serves(at, others.get(&p).copied());
            let done = shard.ended && shard.records.holds(at);
            if !serves && !done {
                shared.fetch_from(&mut state, p, at);
            }
        }
        // Records come in the background: while none is buffered past any position but a
        // shard is behind, wait for them a little.
        let deadline = Instant::now() + READ_WAIT;
        loop {
            let shards = &state.shards;
            let nothing_buffered =
                (positions.iter()).all(|(p, &at)| shards[p].records.next() <= at);
            let coming = (positions.keys()).any(|p| shards[p].behind() && shards[p].fetching);
            let now = Instant::now();
            if !(nothing_buffered && coming) || now >= deadline || state.gone.is_some() {
                break;
            }
            state = (shared.arrived)
                .wait_timeout(state, deadline - now)
                .expect("kinesis state lock")
                .0;
        }
        let mut reads = BTreeMap::new();
        for (&p, &limit) in limits {
            let Some(&at) = positions.get(&p) else {
                let at = asked.get(&p).or(from.get(&p)).copied().unwrap_or(0);
                reads.insert(p, Fetched::nothing(at));
                continue;
            };
            // A position before the shard's oldest record: retention took what lay between.
            let shard = &state.shards[&p];
            let asked = from.get(&p).copied();
            let read = (shard.records).read(asked, at, limit, true, |_| shard.behind());
            reads.insert(p, read);
        }
        let lowest = state.readers.lowest(None);
        for (p, shard) in state.shards.iter_mut() {
            if let Some(&low) = lowest.get(p) {
                shard.records.trim(low);
            }
        }
        if let Some(gone) = &state.gone {
            return Err(PipelineError::InputGone(gone.clone()));
        }
        let read_nothing = reads.values().all(|r| r.records.is_empty());
        if let (true, Some(error)) = (read_nothing, state.error.recent()) {
            return Err(PipelineError::Unavailable(error.to_string()));
        }
        Ok(reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_numbered_by_their_ids() {
        assert_eq!(shard_number("shardId-000000000003").unwrap(), 3);
        assert_eq!(shard_number("shardId-000000000120").unwrap(), 120);
        assert!(shard_number("shard-3").is_err());
    }

    #[test]
    fn pins_survive_a_restart_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kinesis.pins");
        let long = "49590338271490256608559692538361571095921575989136588898";
        let mut pins = Pins::load(path.clone()).unwrap();
        pins.pin(0, 0, long).unwrap();
        pins.pin(
            0,
            10_000,
            "49590338271490256608559692540000000000000000000000000001",
        )
        .unwrap();
        pins.pin(2, 0, "7").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"0 20000 4959")
            .unwrap();
        let pins = Pins::load(path.clone()).unwrap();
        assert_eq!(pins.at_or_before(0, 9_999), Some((0, long.into())));
        assert_eq!(pins.at_or_before(0, 10_000).unwrap().0, 10_000);
        // The torn line is not a pin (its digits are a sequence number's first ones).
        assert_eq!(pins.at_or_before(0, 25_000).unwrap().0, 10_000);
        assert_eq!(pins.at_or_before(2, 5), Some((0, "7".into())));
        assert_eq!(pins.at_or_before(1, 5), None);
        assert_eq!(pins.last(2), Some(0));
        // The torn line was cut off: the next pin is a line of its own.
        let mut pins = pins;
        pins.pin(2, 7, "8").unwrap();
        let mut pins = Pins::load(path).unwrap();
        assert_eq!(pins.at_or_before(2, 9), Some((7, "8".into())));
        // Pins whose records retention took are forgotten; the first left is where the shard's
        // known records start.
        assert_eq!(pins.forget_through(0, 0), Some(10_000));
        assert_eq!(pins.at_or_before(0, 9_999), None);
        assert_eq!(pins.forget_through(0, 10_000), None);
    }

    fn answer(sequences: &[&str]) -> GetRecordsOutput {
        let records = sequences.iter().map(|&sequence| {
            aws_sdk_kinesis::types::Record::builder()
                .sequence_number(sequence)
                .partition_key("k")
                .data(aws_sdk_kinesis::primitives::Blob::new(b"{}".to_vec()))
                .build()
                .unwrap()
        });
        GetRecordsOutput::builder()
            .set_records(Some(records.collect()))
            .next_shard_iterator("more")
            .millis_behind_latest(0)
            .build()
            .unwrap()
    }

    #[test]
    fn a_pinned_record_retention_deleted_moves_the_shard_to_the_next_pin_and_only_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = Pins::load(dir.path().join("kinesis.pins")).unwrap();
        pins.pin(0, 0, "100").unwrap();
        pins.pin(0, 10_000, "20100").unwrap();
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let source = KinesisStream {
            stream_name: "s".into(),
            region: "us-east-1".into(),
            endpoint: None,
            start: Start::Earliest,
            started_ms: None,
            access_key_id_env: None,
            secret_access_key_env: None,
            session_token_env: None,
        };
        let shared = Shared::new("s", &source, Client::from_conf(config), pins);
        // A reader asks for ordinal 3: the fetch is moved there.
        let mut shard = Shard::default();
        shard.moved_to(3);
        shared.lock().shards.insert(0, shard);
        let cursor = |from: u64, pin: u64, check: &str| Cursor {
            epoch: 1,
            id: "shardId-000000000000".into(),
            from,
            pin: Some(pin),
            check: Some(check.into()),
            skip: from - pin,
        };
        // Read from ordinal 3, at pin 0: the pinned record is there; ordinals count from it.
        let taken = shared.take(
            0,
            &mut cursor(3, 0, "100"),
            &answer(&["100", "101", "102", "103"]),
        );
        assert!(matches!(taken, Taken::Buffered { .. }));
        assert_eq!(
            shared.lock().shards[&0].records.span(0).unwrap().0.ordinal,
            3
        );
        // Ordinal 3's record was pinned as it came (the shard's first since the start).
        assert_eq!(
            shared.lock().pins.at_or_before(0, 9_999),
            Some((3, "103".into()))
        );
        // Pins 0 and 3's records are gone: the shard's known records start at the next pin.
        for (pin, check) in [(0, "100"), (3, "103")] {
            let epoch = shared.lock().shards[&0].epoch;
            let mut at_pin = Cursor {
                epoch,
                ..cursor(3, pin, check)
            };
            let taken = shared.take(0, &mut at_pin, &answer(&["150", "151"]));
            assert!(matches!(taken, Taken::Moved));
        }
        let state = shared.lock();
        assert_eq!(
            (state.shards[&0].oldest, state.shards[&0].records.next()),
            (10_000, 10_000)
        );
        assert!(state.gone.is_none());
        drop(state);
        // And once no pin's record is left, the stream cannot be read any more.
        let epoch = shared.lock().shards[&0].epoch;
        let mut at_last = Cursor {
            epoch,
            ..cursor(10_000, 10_000, "20100")
        };
        assert!(matches!(
            shared.take(0, &mut at_last, &answer(&["30000"])),
            Taken::Gone
        ));
        assert!(
            shared
                .lock()
                .gone
                .as_deref()
                .unwrap()
                .contains("retention deleted")
        );
    }

    #[test]
    fn a_child_shard_waits_until_its_parents_are_taken_to_their_ends() {
        let shard = |parents: Vec<Partition>, ended: bool, next: u64| {
            let mut shard = Shard {
                parents,
                listed: true,
                ended,
                ..Shard::default()
            };
            shard.records.reset(next);
            shard
        };
        let mut shards = BTreeMap::from([
            (0, shard(vec![], true, 100)),
            (1, shard(vec![0], false, 0)),
            (2, shard(vec![0], false, 0)),
        ]);
        assert!(parents_taken(&shards, 0, &Positions::new()));
        assert!(!parents_taken(&shards, 1, &Positions::from([(0, 99)])));
        assert!(parents_taken(&shards, 1, &Positions::from([(0, 100)])));
        // A parent still open holds its children back; one gone with retention does not.
        shards.get_mut(&0).unwrap().ended = false;
        assert!(!parents_taken(&shards, 2, &Positions::from([(0, 100)])));
        shards.get_mut(&0).unwrap().listed = false;
        assert!(parents_taken(&shards, 2, &Positions::new()));
    }
}
