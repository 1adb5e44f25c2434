//! What every reader of records elsewhere (a Kafka topic, a Kinesis stream) keeps alike: one
//! client a stream, shared by every reader of the stream ([`ByStream`]); a buffer a partition
//! of what was fetched ([`Buffer`]); the readers' positions, which decide what the buffers keep
//! ([`Readers`]); the client's last error, which fails the reads that find nothing while it
//! lasts ([`LastError`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::Result;
use crate::exactly_once::Positions;

/// How long a read waits for records when none is buffered past its positions but the source
/// holds more.
pub(crate) const READ_WAIT: Duration = Duration::from_millis(100);
/// A reader that has not read for this long no longer holds records in the buffers (a
/// pipeline failing in a loop must not stall the others).
const IDLE_READER: Duration = Duration::from_secs(60);
/// How long a client's error fails the reads that find nothing: clients repeat their errors
/// while they last (an unreachable broker, every reconnect).
const ERROR_LASTS: Duration = Duration::from_secs(15);

/// The clients of the streams read now, by stream id: every reader of a stream shares one,
/// and it goes with the last of them.
pub(crate) struct ByStream<T>(OnceLock<Mutex<HashMap<u64, Weak<T>>>>);

impl<T> ByStream<T> {
    pub(crate) const fn new() -> ByStream<T> {
        ByStream(OnceLock::new())
    }

    /// Stream `stream_id`'s client: the running one, else the one `start` makes.
    pub(crate) fn get(&self, stream_id: u64, start: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut clients = self
            .0
            .get_or_init(Mutex::default)
            .lock()
            .expect("clients lock");
        if let Some(running) = clients.get(&stream_id).and_then(Weak::upgrade) {
            return Ok(running);
        }
        let started = Arc::new(start()?);
        clients.retain(|_, c| c.strong_count() > 0);
        clients.insert(stream_id, Arc::downgrade(&started));
        Ok(started)
    }
}

/// The live readers of a stream, each with where it last read from and when.
#[derive(Debug, Default)]
pub(crate) struct Readers(HashMap<u64, (Positions, Instant)>);

impl Readers {
    /// Reader `reader` reads from `positions` now.
    pub(crate) fn reads_from(&mut self, reader: u64, positions: Positions) {
        self.0.insert(reader, (positions, Instant::now()));
    }

    /// Reader `reader` is gone.
    pub(crate) fn remove(&mut self, reader: u64) {
        self.0.remove(&reader);
    }

    /// Per partition, the lowest position a live reader (other than `except`) read from.
    pub(crate) fn lowest(&self, except: Option<u64>) -> Positions {
        let mut lowest = Positions::new();
        for (id, (positions, at)) in &self.0 {
            if Some(*id) == except || at.elapsed() > IDLE_READER {
                continue;
            }
            for (&p, &position) in positions {
                let low = lowest.entry(p).or_insert(position);
                *low = (*low).min(position);
            }
        }
        lowest
    }
}

/// A client's last error and when it came, until it reads again.
#[derive(Debug, Default)]
pub(crate) struct LastError(Option<(String, Instant)>);

impl LastError {
    pub(crate) fn set(&mut self, error: String) {
        self.0 = Some((error, Instant::now()));
    }

    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// The error, while it lasts.
    pub(crate) fn recent(&self) -> Option<&str> {
        (self.0.as_ref())
            .filter(|(_, at)| at.elapsed() < ERROR_LASTS)
            .map(|(error, _)| error.as_str())
    }
}

/// A record of a partition elsewhere: its position, and the bytes it holds in memory (its
/// data and what it keeps beside: small records take more beside their data than in it).
pub(crate) trait Positioned {
    fn position(&self) -> u64;
    fn size(&self) -> usize;
}

/// A partition's fetched records, a run of positions from `start` to `next`, of which every
/// reader takes copies at its own position. Positions only grow in it.
#[derive(Debug)]
pub(crate) struct Buffer<R> {
    start: u64,
    next: u64,
    records: VecDeque<Arc<R>>,
    bytes: usize,
}

impl<R> Default for Buffer<R> {
    fn default() -> Self {
        Buffer {
            start: 0,
            next: 0,
            records: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<R: Positioned> Buffer<R> {
    /// The position after the newest record fetched.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// The bytes its records hold.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a reader at `at` reads from it: at or past its start, at most its end.
    pub(crate) fn holds(&self, at: u64) -> bool {
        self.start <= at && at <= self.next
    }

    /// Empties it, to be filled from `at`.
    pub(crate) fn reset(&mut self, at: u64) {
        self.start = at;
        self.next = at;
        self.records.clear();
        self.bytes = 0;
    }

    /// Appends a record fetched past the others.
    pub(crate) fn push(&mut self, record: R) {
        self.next = record.position() + 1;
        self.bytes += record.size();
        self.records.push_back(Arc::new(record));
    }

    /// Drops the records before `position`.
    pub(crate) fn trim(&mut self, position: u64) {
        while let Some(first) = self.records.front() {
            if first.position() >= position {
                break;
            }
            self.bytes -= first.size();
            self.records.pop_front();
        }
        self.start = self.start.max(position.min(self.next));
    }

    /// Whether a fetch into it serves a reader at `at` where it is: `at` is in it, or past its
    /// end while another reader (the lowest of the others at `others`) still needs what lies
    /// between, so that the buffer gets there. Else the fetch is to be moved to `at`.
    pub(crate) fn serves(&self, at: u64, others: Option<u64>) -> bool {
        self.holds(at) || (at > self.next && others.is_some_and(|o| o <= self.next))
    }

    /// What a reader at `at` takes (at most `limit` records, none when `readable` is false or
    /// `at` is not in the buffer), having asked from `asked` (positions before `at` it asked for
    /// are lost to it): more is buffered past them, or `behind` says the source holds more past
    /// the position after them.
    pub(crate) fn read(
        &self,
        asked: Option<u64>,
        at: u64,
        limit: usize,
        readable: bool,
        behind: impl FnOnce(u64) -> bool,
    ) -> super::Fetched<R> {
        let (records, buffered) = match readable && self.holds(at) {
            true => self.take(at, limit),
            false => (Vec::new(), false),
        };
        let next = records.last().map_or(at, |last| last.position() + 1);
        super::Fetched {
            more: buffered || behind(next),
            lost: asked
                .filter(|&asked| asked < at)
                .map(|asked| (asked, at - 1)),
            records,
            next,
        }
    }

    /// From `at`, at most `limit` records, and whether more is buffered past them.
    fn take(&self, at: u64, limit: usize) -> (Vec<Arc<R>>, bool) {
        let first = self.records.partition_point(|r| r.position() < at);
        let records: Vec<Arc<R>> = (self.records.iter().skip(first).take(limit))
            .cloned()
            .collect();
        let more = self.records.len() > first + records.len();
        (records, more)
    }

    /// The newest record.
    pub(crate) fn newest(&self) -> Option<&R> {
        self.records.back().map(Arc::as_ref)
    }

    /// The oldest record at or past `at`, and the newest.
    pub(crate) fn span(&self, at: u64) -> Option<(&R, &R)> {
        let first = self.records.partition_point(|r| r.position() < at);
        Some((self.records.get(first)?, self.records.back()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Positioned for (u64, usize) {
        fn position(&self) -> u64 {
            self.0
        }

        fn size(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn a_buffer_gives_each_reader_its_own_run_and_forgets_what_none_needs() {
        let mut buffer = Buffer::default();
        buffer.reset(10);
        for position in 10..20 {
            buffer.push((position, 100));
        }
        assert_eq!((buffer.next(), buffer.bytes()), (20, 1000));
        assert!(buffer.holds(10) && buffer.holds(20) && !buffer.holds(9) && !buffer.holds(21));
        let (records, more) = buffer.take(12, 3);
        assert_eq!(
            records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [12, 13, 14]
        );
        assert!(more);
        let (records, more) = buffer.take(18, 5);
        assert_eq!((records.len(), more), (2, false));
        assert_eq!(buffer.span(15).map(|(a, b)| (a.0, b.0)), Some((15, 19)));
        // A reader past the end is served while another reader still needs the buffer to grow.
        assert!(buffer.serves(20, None) && buffer.serves(25, Some(18)));
        assert!(
            !buffer.serves(25, None) && !buffer.serves(25, Some(21)) && !buffer.serves(5, None)
        );
        // A read says what it took, whether there is more, and what it asked for and lost.
        let read = buffer.read(Some(8), 12, 3, true, |_| false);
        assert_eq!(
            (read.records.len(), read.next, read.more, read.lost),
            (3, 15, true, Some((8, 11)))
        );
        let read = buffer.read(None, 18, 5, true, |next| next < 30);
        assert_eq!(
            (read.records.len(), read.next, read.more, read.lost),
            (2, 20, true, None)
        );
        let read = buffer.read(Some(12), 12, 5, false, |_| false);
        assert_eq!((read.records.len(), read.next, read.more), (0, 12, false));
        buffer.trim(15);
        assert_eq!(buffer.bytes(), 500);
        assert!(!buffer.holds(14) && buffer.holds(15));
        assert_eq!(buffer.span(20), None);
    }

    #[test]
    fn the_lowest_position_is_of_live_readers_other_than_the_one_asking() {
        let mut readers = Readers::default();
        readers.reads_from(1, Positions::from([(0, 10), (1, 5)]));
        readers.reads_from(2, Positions::from([(0, 7)]));
        assert_eq!(readers.lowest(None), Positions::from([(0, 7), (1, 5)]));
        assert_eq!(readers.lowest(Some(2)), Positions::from([(0, 10), (1, 5)]));
        readers.remove(1);
        assert_eq!(readers.lowest(None), Positions::from([(0, 7)]));
    }
}
