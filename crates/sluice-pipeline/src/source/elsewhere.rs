//! What every reader of records elsewhere (a Kafka topic, a Kinesis stream) keeps alike: one
//! client a stream, shared by every reader of the stream ([`ByStream`]); the readers' positions,
//! which decide what the buffers keep ([`Readers`]); the client's last error, which fails the
//! reads that find nothing while it lasts ([`LastError`]).

use std::collections::HashMap;
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
