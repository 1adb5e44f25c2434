//! A shard: an ordered, durable sequence of records, written by one thread with group commit.
//!
//! ```text
//!  producers ──append──► queue ──► writer thread: take everything queued (one group)
//!   (await ack)                     stamp sequence numbers, one write(), one fdatasync(),
//!        ▲                          publish the new end to readers, then acknowledge
//!        └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! Invariants:
//! - Sequence numbers increase by one per record, with no gaps, from 0 for the life of the shard.
//! - An acknowledgement is sent only after the fsync covering the record returned.
//! - Readers see only committed (fsynced) records: `ShardState` moves forward only after the
//!   fsync, so nothing a reader saw can be lost by a crash.
//! - Append times are monotonic within a shard (the writer never stamps a time before the last),
//!   so seeking by time is a binary search.
//! - Memory is bounded: queued batches hold permits of the log's in-flight byte budget, which
//!   the writer releases as it acknowledges.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};

use crate::batch::{self, HEADER_LEN, Records, SealedBatch};
use crate::segment::{self, Segment};
use crate::{Clock, Error, LogConfig, Result};

/// Most bytes a read takes from a segment at once.
const READ_CHUNK: usize = 1 << 20;

/// One record read back from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's sequence number in its shard.
    pub seq: u64,
    /// When the record's batch was made durable (ms since the Unix epoch).
    pub append_ms: i64,
    /// The partition key the producer gave, which chose the shard.
    pub key: Bytes,
    /// The record's data, as the producer sent it: the log never interprets it.
    pub data: Bytes,
}

/// The result of a read: records in order, and where the next read continues.
#[derive(Debug, Default)]
pub struct ReadResult {
    /// The records read, in sequence-number order.
    pub records: Vec<Record>,
    /// The sequence number to read from next.
    pub next_seq: u64,
    /// The sequence number after the last committed record, at the time of the read.
    pub end_seq: u64,
    /// Append time of the last committed record (0 when the shard is empty).
    pub end_ms: i64,
    /// Sequence numbers `first..=last` that the read was asked for but retention had deleted:
    /// the read went on after them. Only at the start of a read: should retention delete
    /// records in the middle of one, the read ends before them, so that the next reports them.
    pub skipped: Option<(u64, u64)>,
}

/// The positions one append made durable in one shard: consecutive in the log's own shards;
/// scattered in a partition other writers share (a Kafka topic's, see [`crate::Forward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    first_seq: u64,
    count: u32,
    /// Each record's position, in the append's order, when they are not consecutive.
    scattered: Option<Arc<[u64]>>,
}

impl Appended {
    /// Records `first_seq..first_seq + count`; `count` is at least one.
    pub fn consecutive(first_seq: u64, count: u32) -> Appended {
        debug_assert!(count > 0);
        Appended {
            first_seq,
            count,
            scattered: None,
        }
    }

    /// Records at these positions, in the append's order (at least one, ascending).
    pub fn scattered(seqs: Vec<u64>) -> Appended {
        debug_assert!(!seqs.is_empty() && seqs.is_sorted());
        Appended {
            first_seq: seqs[0],
            count: seqs.len() as u32,
            scattered: Some(seqs.into()),
        }
    }

    /// How many records the append made durable, at least one.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The position of the append's record `index` (counted from 0, below [`Self::count`]).
    pub fn seq(&self, index: u32) -> u64 {
        match &self.scattered {
            Some(seqs) => seqs[index as usize],
            None => self.first_seq + u64::from(index),
        }
    }

    /// The position of the append's first record.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The position of the append's last record.
    pub fn last_seq(&self) -> u64 {
        self.seq(self.count - 1)
    }
}

/// Everything the writer thread and readers share.
#[derive(Debug)]
struct ShardState {
    /// Sealed segments, then the active one (always present).
    segments: Vec<Segment>,
}

impl ShardState {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a shard always has an active segment")
    }

    fn end_seq(&self) -> u64 {
        self.active().next_seq
    }

    fn start_seq(&self) -> u64 {
        self.segments[0].base_seq
    }

    fn last_ms(&self) -> i64 {
        self.segments
            .iter()
            .rev()
            .map(|s| s.last_ms)
            .find(|&ms| ms != 0)
            .unwrap_or(0)
    }
}

struct Pending {
    batch: SealedBatch,
    ack: oneshot::Sender<Result<Appended>>,
    _permit: OwnedSemaphorePermit,
}

/// Per-shard metric handles, labelled by stream.
#[derive(Clone)]
pub(crate) struct ShardMetrics {
    pub fsync_seconds: metrics::Histogram,
    pub group_records: metrics::Histogram,
}

/// A shard of a stream: its segments, readable by anyone, and the one writer thread that
/// appends to them (see the module docs).
pub struct Shard {
    id: u32,
    state: Arc<RwLock<ShardState>>,
    /// `None` once the shard is closed (its stream dropped, or the log closing).
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    committed: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Shard {
    /// Opens (recovering) or creates the shard in `dir` and starts its writer.
    pub(crate) fn open(
        id: u32,
        dir: PathBuf,
        config: &LogConfig,
        metrics: ShardMetrics,
    ) -> Result<Shard> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Only the last group can be torn: the writer makes none larger than this.
        let max_torn = config
            .max_group_bytes
            .max(HEADER_LEN + batch::MAX_BATCH_PAYLOAD) as u64;
        let segments = open_segments(&dir, max_torn)?;
        let end = segments.last().expect("at least one segment").next_seq;
        let state = Arc::new(RwLock::new(ShardState { segments }));
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(end);
        let writer = Writer {
            dir,
            state: state.clone(),
            committed: committed_tx,
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            max_group_bytes: config.max_group_bytes,
            clock: config.clock.clone(),
            metrics,
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("sluice-shard-{id}"))
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Internal(format!("cannot start a shard writer: {e}")))?;
        Ok(Shard {
            id,
            state,
            queue: Mutex::new(Some(tx)),
            committed,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The shard's id within its stream, from 0.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Queues a sealed batch; the future resolves once it is durable.
    pub(crate) fn append(
        &self,
        batch: SealedBatch,
        permit: OwnedSemaphorePermit,
    ) -> oneshot::Receiver<Result<Appended>> {
        let (ack, rx) = oneshot::channel();
        let pending = Pending {
            batch,
            ack,
            _permit: permit,
        };
        let queue = self.queue.lock().expect("shard queue lock");
        let refused = match queue.as_ref() {
            Some(queue) => queue.send(pending).err().map(|mpsc::SendError(p)| p),
            None => Some(pending),
        };
        if let Some(p) = refused {
            let _ = p.ack.send(Err(Error::Closed));
        }
        rx
    }

    /// A receiver of the committed end (sequence number after the last durable record),
    /// for waiting on new data.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// The first retained and the next unwritten sequence numbers.
    pub fn bounds(&self) -> (u64, u64) {
        let state = self.state.read().expect("shard lock");
        (state.start_seq(), state.end_seq())
    }

    /// Bytes held in segments, and their count.
    pub fn size(&self) -> (u64, usize) {
        let state = self.state.read().expect("shard lock");
        (
            state.segments.iter().map(|s| s.len).sum(),
            state.segments.len(),
        )
    }

    /// Reads committed records from `from` on (from the oldest retained one if `from` was
    /// deleted by retention, saying so in [`ReadResult::skipped`]), at most `max_records` and
    /// about `max_bytes` of data (at least one record when any is available).
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadResult> {
        let mut result = ReadResult::default();
        let mut seq = from;
        let mut bytes = 0usize;
        loop {
            let (file, path, mut pos, seg_len, seg_end) = {
                let state = self.state.read().expect("shard lock");
                result.end_seq = state.end_seq();
                result.end_ms = state.last_ms();
                let start = state.start_seq();
                if seq < start {
                    if !result.records.is_empty() || result.skipped.is_some() {
                        result.next_seq = seq;
                        return Ok(result);
                    }
                    result.skipped = Some((seq, start - 1));
                    seq = start;
                }
                let i = state
                    .segments
                    .partition_point(|s| s.base_seq <= seq)
                    .saturating_sub(1);
                let seg = &state.segments[i];
                if seq >= seg.next_seq {
                    // Nothing committed at or after `seq` (it is the end of the shard).
                    result.next_seq = seq;
                    return Ok(result);
                }
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    seg.seek_seq(seq),
                    seg.len,
                    seg.next_seq,
                )
            };
            // Read whole batches from `pos`, a chunk at a time; a chunk holds at least one batch.
            let mut at_least = 0u64;
            while pos < seg_len {
                // Chunks of at most READ_CHUNK: a read limited by records stops early without
                // having copied (and zeroed) the whole byte budget.
                let budget = max_bytes
                    .saturating_sub(bytes)
                    .clamp(HEADER_LEN, READ_CHUNK) as u64;
                let want = (seg_len - pos).min(budget.max(at_least));
                let chunk = Bytes::from(
                    segment::read_at(&file, pos, want as usize).map_err(|e| Error::io(&path, e))?,
                );
                let mut offset = 0usize;
                while offset + HEADER_LEN <= chunk.len() {
                    let at = pos + offset as u64;
                    let header_bytes: &[u8; HEADER_LEN] = chunk[offset..offset + HEADER_LEN]
                        .try_into()
                        .expect("header");
                    let header = batch::decode_header(header_bytes, seg_len - at)
                        .map_err(|why| corrupt(&path, at, why))?;
                    let end = offset + header.total_len() as usize;
                    if end > chunk.len() {
                        at_least = header.total_len();
                        break;
                    }
                    let payload = chunk.slice(offset + HEADER_LEN..end);
                    batch::check_payload(&header, &payload)
                        .map_err(|why| corrupt(&path, at, why))?;
                    for (i, record) in Records::new(&payload).enumerate() {
                        let record_seq = header.base_seq + i as u64;
                        if record_seq < seq {
                            continue;
                        }
                        let (key, data) = record.map_err(|why| corrupt(&path, at, why))?;
                        if result.records.len() >= max_records
                            || (!result.records.is_empty() && bytes + data.len() > max_bytes)
                        {
                            result.next_seq = record_seq;
                            return Ok(result);
                        }
                        bytes += data.len();
                        result.records.push(Record {
                            seq: record_seq,
                            append_ms: header.append_ms,
                            key: payload.slice_ref(key),
                            data: payload.slice_ref(data),
                        });
                    }
                    seq = seq.max(header.next_seq());
                    offset = end;
                }
                pos += offset as u64;
            }
            // The segment is done: continue in the next one, if the shard goes on.
            seq = seq.max(seg_end);
            result.next_seq = seq;
            if seq >= result.end_seq {
                return Ok(result);
            }
        }
    }

    /// The sequence number of the first record appended at or after `ms`, or the end of the
    /// shard if there is none.
    pub fn seq_at_time(&self, ms: i64) -> Result<u64> {
        let (file, path, mut pos, seg_len, fallback) = {
            let state = self.state.read().expect("shard lock");
            match state.segments.iter().find(|s| s.len > 0 && s.last_ms >= ms) {
                None => return Ok(state.end_seq()),
                Some(seg) => (
                    seg.file.clone(),
                    seg.path.clone(),
                    seg.seek_time(ms),
                    seg.len,
                    seg.next_seq,
                ),
            }
        };
        while pos < seg_len {
            let header_bytes =
                segment::read_at(&file, pos, HEADER_LEN).map_err(|e| Error::io(&path, e))?;
            let header = batch::decode_header(
                header_bytes.as_slice().try_into().expect("header"),
                seg_len - pos,
            )
            .map_err(|why| corrupt(&path, pos, why))?;
            if header.append_ms >= ms {
                return Ok(header.base_seq);
            }
            pos += header.total_len();
        }
        Ok(fallback)
    }

    /// Deletes sealed segments that are entirely older than `max_age_ms`, then the oldest
    /// sealed segments while the shard holds more than `max_bytes`. The active segment is kept.
    pub(crate) fn enforce_retention(
        &self,
        now_ms: i64,
        max_age_ms: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<usize> {
        let doomed: Vec<Segment> = {
            let mut state = self.state.write().expect("shard lock");
            let sealed = state.segments.len() - 1;
            let mut total: u64 = state.segments.iter().map(|s| s.len).sum();
            let mut n = 0;
            while n < sealed {
                let seg = &state.segments[n];
                let expired =
                    max_age_ms.is_some_and(|age| seg.last_ms < now_ms.saturating_sub(age as i64));
                let oversize = max_bytes.is_some_and(|limit| total > limit);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.len;
                n += 1;
            }
            state.segments.drain(..n).collect()
        };
        for seg in &doomed {
            seg.delete()?;
        }
        Ok(doomed.len())
    }
}

impl Shard {
    /// Stops the shard: appends already queued are written and acknowledged, later ones are
    /// refused with [`Error::Closed`]. Returns once the writer has exited, so nothing touches the
    /// shard's files afterwards.
    pub(crate) fn close(&self) {
        self.queue.lock().expect("shard queue lock").take();
        let writer = self.writer.lock().expect("shard writer lock").take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.close();
    }
}

fn corrupt(path: &Path, offset: u64, why: batch::Invalid) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: why.to_string(),
    }
}

/// Opens a shard's segments: sealed ones from their index, the last one by recovery.
fn open_segments(dir: &Path, max_torn: u64) -> Result<Vec<Segment>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = segment::parse_segment_name(&name) {
            bases.push(base);
        } else if name.ends_with(".idx") || name.ends_with(".tmp") {
            // An index whose segment retention removed, or an unfinished write: both disposable.
            if !dir
                .join(name.replace(".idx.tmp", ".seg").replace(".idx", ".seg"))
                .exists()
                || name.ends_with(".tmp")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    bases.sort_unstable();
    let Some(&last) = bases.last() else {
        return Ok(vec![Segment::create(dir, 0)?]);
    };
    let mut segments = Vec::with_capacity(bases.len());
    for &base in &bases[..bases.len() - 1] {
        segments.push(Segment::open_sealed(
            segment::segment_path(dir, base),
            base,
        )?);
    }
    segments.push(Segment::recover_active(
        segment::segment_path(dir, last),
        last,
        max_torn,
    )?);
    for pair in segments.windows(2) {
        if pair[0].next_seq != pair[1].base_seq {
            return Err(Error::Corrupt {
                path: pair[1].path.clone(),
                offset: 0,
                reason: format!(
                    "segment starts at sequence number {} but the one before it ends at {}",
                    pair[1].base_seq, pair[0].next_seq
                ),
            });
        }
    }
    Ok(segments)
}

/// The writer thread's state: it alone appends to the active segment.
struct Writer {
    dir: PathBuf,
    state: Arc<RwLock<ShardState>>,
    committed: watch::Sender<u64>,
    segment_bytes: u64,
    segment_ms: i64,
    max_group_bytes: usize,
    clock: Clock,
    metrics: ShardMetrics,
    /// Set when the shard cannot be written safely any more (a failed write that could not be
    /// undone); appends are refused until the log is reopened and recovers.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Pending>) {
        // A batch that would have made the last group larger than the limit starts the next.
        let mut carried: Option<Pending> = None;
        while let Some(first) = carried.take().or_else(|| queue.recv().ok()) {
            let mut bytes = first.batch.byte_len();
            let mut group = vec![first];
            while let Ok(p) = queue.try_recv() {
                if bytes + p.batch.byte_len() > self.max_group_bytes {
                    carried = Some(p);
                    break;
                }
                bytes += p.batch.byte_len();
                group.push(p);
            }
            self.commit(group);
        }
    }

    fn commit(&mut self, mut group: Vec<Pending>) {
        let result = match &self.failed {
            Some(why) => Err(Error::Unavailable(why.clone())),
            None => self.write_group(&mut group),
        };
        match result {
            Ok(appended) => {
                for (p, a) in group.into_iter().zip(appended) {
                    let _ = p.ack.send(Ok(a));
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "append failed");
                for p in group {
                    let _ = p.ack.send(Err(e.clone()));
                }
            }
        }
    }

    /// Writes a group with one (vectored) write and one fsync; on failure the segment is put
    /// back as it was, so the shard's durable contents are exactly what was acknowledged.
    fn write_group(&mut self, group: &mut [Pending]) -> Result<Vec<Appended>> {
        self.roll_if_due()?;
        let (file, path, start_len, mut next_seq, last_ms) = {
            let state = self.state.read().expect("shard lock");
            let active = state.active();
            (
                active.file.clone(),
                active.path.clone(),
                active.len,
                active.next_seq,
                state.last_ms(),
            )
        };
        let append_ms = (self.clock)().max(last_ms);
        let mut appended = Vec::with_capacity(group.len());
        let mut headers = Vec::with_capacity(group.len());
        let mut pos = start_len;
        for p in group.iter_mut() {
            p.batch.stamp(next_seq, append_ms);
            appended.push(Appended::consecutive(next_seq, p.batch.count()));
            headers.push((pos, p.batch.header()));
            next_seq += u64::from(p.batch.count());
            pos += p.batch.byte_len() as u64;
        }
        let started = Instant::now();
        let written = write_all_vectored(&file, group).and_then(|()| sync(&file));
        if let Err(e) = written {
            if let Err(undo) = truncate(&file, start_len) {
                // The group's bytes may survive (valid, checksummed) and be recovered after a
                // restart: the producer must not be told to simply retry.
                let why = format!(
                    "{}: write failed ({e}) and could not be undone ({undo})",
                    path.display()
                );
                self.failed = Some(format!("{why}; restart to recover"));
                return Err(Error::Indeterminate(why));
            }
            return Err(Error::io(&path, e));
        }
        self.metrics.fsync_seconds.record(started.elapsed());
        self.metrics
            .group_records
            .record((next_seq - headers[0].1.base_seq) as f64);
        {
            let mut state = self.state.write().expect("shard lock");
            let active = state.segments.last_mut().expect("active segment");
            for (pos, header) in &headers {
                active.committed(header, *pos);
            }
        }
        self.committed.send_replace(next_seq);
        Ok(appended)
    }

    /// Seals the active segment and starts a new one when it is full or old enough.
    fn roll_if_due(&mut self) -> Result<()> {
        let now = (self.clock)();
        let (due, next_seq) = {
            let state = self.state.read().expect("shard lock");
            let active = state.active();
            let due = active.len > 0
                && (active.len >= self.segment_bytes
                    || now.saturating_sub(active.first_ms) >= self.segment_ms);
            (due, active.next_seq)
        };
        if !due {
            return Ok(());
        }
        let fresh = Segment::create(&self.dir, next_seq)?;
        let mut state = self.state.write().expect("shard lock");
        if let Err(e) = state.active().write_index() {
            tracing::warn!(error = %e, "could not write a segment index; it will be rebuilt on open");
        }
        state.segments.push(fresh);
        Ok(())
    }
}

// The writer's file operations carry fail points (the `fail` crate; no-ops unless its
// `failpoints` feature is on, as in this crate's tests) so that tests can inject the failures a
// disk produces: a full disk on write, an fsync error, an undo that fails too.

fn sync(file: &std::fs::File) -> std::io::Result<()> {
    fail::fail_point!("log::sync", |_| Err(std::io::Error::other(
        "injected fsync failure"
    )));
    file.sync_data()
}

/// Cuts a segment back to `len` bytes, durably.
fn truncate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    fail::fail_point!("log::undo", |_| Err(std::io::Error::other(
        "injected truncate failure"
    )));
    file.set_len(len).and_then(|()| file.sync_data())
}

/// Writes every batch of the group, in order, from the batches' own buffers.
fn write_all_vectored(file: &std::fs::File, group: &[Pending]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    fail::fail_point!("log::write", |_| Err(std::io::Error::from_raw_os_error(28))); // ENOSPC
    let mut slices: Vec<IoSlice<'_>> = group.iter().map(|p| IoSlice::new(&p.batch.bytes)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match (&mut &*file).write_vectored(remaining) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut remaining, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
