//! Event-time progress: how far a windowed view's input has come, as a watermark.
//!
//! Each shard's watermark is the latest event time it has carried minus the stream's
//! `watermark` delay; the view's watermark is the lowest over the shards, because a shard that
//! is behind may still carry events for an open window. A shard that has carried nothing for
//! the idle timeout does not hold the watermark back (else one quiet shard would stall every
//! window forever); when every shard is idle the watermark is the highest of theirs. It never
//! goes back.
//!
//! A round's records are judged against the watermark as the previous round left it (as Spark
//! Structured Streaming does): an event older than that is late. So whether an event is late
//! depends only on the committed state and the event, not on how records fall into rounds,
//! which is what lets a round repeated after a crash decide exactly as the first attempt did.
//! Time (for idleness) comes from the caller: this module never reads a clock.

use serde::{Deserialize, Serialize};

/// Event time in microseconds since the epoch (UTC), as the raw tables store timestamps.
pub type Micros = i64;

/// The watermark of a view's input, per shard and overall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    delay: Micros,
    /// Per shard: the latest event time seen.
    latest: Vec<Option<Micros>>,
    /// Per shard: when (wall clock, ms) it last carried records. Not persisted: after a
    /// restart every shard counts as active from then.
    #[serde(skip)]
    active_at: Vec<u64>,
    watermark: Option<Micros>,
}

impl Watermarks {
    /// No event seen yet on any of `shards` shards; `now_ms` starts their idle clocks.
    pub fn new(shards: usize, delay: Micros, now_ms: u64) -> Self {
        Self {
            delay,
            latest: vec![None; shards],
            active_at: vec![now_ms; shards],
            watermark: None,
        }
    }

    /// The watermark: every event older than it has been seen (or is late). `None` before the
    /// first event.
    pub fn current(&self) -> Option<Micros> {
        self.watermark
    }

    /// Notes that `shard` carried records at `now_ms`, the latest of them at event time
    /// `latest` (none when all its records lacked an event time). A shard not seen before (its
    /// source's partitions grew) joins the others.
    pub fn observe(&mut self, shard: usize, latest: Option<Micros>, now_ms: u64) {
        if shard >= self.latest.len() {
            self.latest.resize(shard + 1, None);
            self.active_at.resize(shard + 1, now_ms);
        }
        self.active_at[shard] = now_ms;
        if let Some(t) = latest {
            self.latest[shard] = Some(self.latest[shard].map_or(t, |seen| seen.max(t)));
        }
    }

    /// Moves the watermark on as far as the shards allow at `now_ms`, shards idle for
    /// `idle_ms` or more not holding it back. Returns it.
    pub fn advance(&mut self, now_ms: u64, idle_ms: u64) -> Option<Micros> {
        let shard_marks = self
            .latest
            .iter()
            .zip(&self.active_at)
            .map(|(latest, &at)| {
                (
                    latest.map(|t| t - self.delay),
                    now_ms.saturating_sub(at) >= idle_ms,
                )
            });
        let (mut lowest_active, mut highest) = (None::<Option<Micros>>, None::<Micros>);
        for (mark, idle) in shard_marks {
            if let Some(m) = mark {
                highest = Some(highest.map_or(m, |h| h.max(m)));
            }
            if !idle {
                // An active shard without events yet holds the watermark at nothing.
                lowest_active = Some(match (lowest_active, mark) {
                    (None, mark) => mark,
                    (Some(low), mark) => low.zip(mark).map(|(a, b)| a.min(b)),
                });
            }
        }
        let candidate = match lowest_active {
            Some(low) => low,
            None => highest,
        };
        if let Some(c) = candidate {
            self.watermark = Some(self.watermark.map_or(c, |w| w.max(c)));
        }
        self.watermark
    }

    /// Whether every shard has carried nothing for `idle_ms` at `now_ms`.
    pub fn idle(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.active_at
            .iter()
            .all(|&at| now_ms.saturating_sub(at) >= idle_ms)
    }

    /// Raises the watermark to `to`, if it is behind: an input idle as a whole follows the
    /// other input of a join (as an idle shard does not hold back the others).
    pub fn raise(&mut self, to: Micros) {
        self.watermark = Some(self.watermark.map_or(to, |w| w.max(to)));
    }

    /// Restores the idle clocks after a restart (they are not persisted).
    pub fn restarted(mut self, shards: usize, now_ms: u64) -> Self {
        self.latest.resize(shards, None);
        self.active_at = vec![now_ms; shards];
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    #[test]
    fn the_slowest_active_shard_holds_the_watermark_back() {
        let mut w = Watermarks::new(2, 5 * S, 0);
        assert_eq!(w.advance(0, 10_000), None);
        w.observe(0, Some(100 * S), 0);
        // Shard 1 has seen nothing and is not idle yet: nothing is known to be complete.
        assert_eq!(w.advance(0, 10_000), None);
        w.observe(1, Some(60 * S), 0);
        assert_eq!(w.advance(0, 10_000), Some(55 * S));
        w.observe(1, Some(200 * S), 1);
        assert_eq!(w.advance(1, 10_000), Some(95 * S));
    }

    #[test]
    fn an_idle_shard_stops_holding_it_back_and_it_never_goes_back() {
        let mut w = Watermarks::new(2, 0, 0);
        w.observe(0, Some(100 * S), 0);
        w.observe(1, Some(10 * S), 0);
        assert_eq!(w.advance(0, 1_000), Some(10 * S));
        // Shard 1 falls quiet; shard 0 goes on.
        w.observe(0, Some(150 * S), 1_500);
        assert_eq!(w.advance(1_500, 1_000), Some(150 * S));
        // Shard 1 wakes with old events: the watermark stays (those events are late).
        w.observe(1, Some(20 * S), 1_600);
        assert_eq!(w.advance(1_600, 1_000), Some(150 * S));
    }

    #[test]
    fn when_every_shard_is_idle_the_highest_wins() {
        let mut w = Watermarks::new(3, 0, 0);
        w.observe(0, Some(7 * S), 0);
        w.observe(1, Some(9 * S), 0);
        assert_eq!(w.advance(0, 1_000), None);
        assert_eq!(w.advance(5_000, 1_000), Some(9 * S));
    }
}
