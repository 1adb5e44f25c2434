//! Event time: each event's base time, the lateness added to it, and its RFC 3339 text.

use rand::Rng;

use crate::text::fill_decimal;

/// Probability that an event is only a little late (lag below [`SMALL_LAG_BOUND_MS`]).
const SMALL_LAG_P: f64 = 0.95;
/// Exclusive bound of the common, small lag.
const SMALL_LAG_BOUND_MS: u64 = 20;
/// Inclusive bound of the rare, large lag: no event is more than this late.
pub(crate) const MAX_LAG_MS: u64 = 2000;

/// RFC 3339 has four-digit years only: event times are kept within 0000-01-01T00:00:00.000Z
/// ..= 9999-12-31T23:59:59.999Z (in ms since the epoch) so that every line stays parseable.
const FIRST_MS: i64 = -62_167_219_200_000;
const LAST_MS: i64 = 253_402_300_799_999;

/// Length of "YYYY-MM-DDTHH:MM:SS".
const PREFIX_LEN: usize = 19;

/// The event-time model shared by the workloads: event `i` has base time
/// `start + floor(i * 1000 / rate)` ms and is then made late by a random lag, never before `start`.
pub(crate) struct EventClock {
    start_ms: i64,
    rate: u64,
    /// `floor(1000 / rate)` and `1000 % rate`: the base time advances by `1000 / rate` ms per
    /// event, tracked as whole ms plus a remainder in units of `1 / rate` ms, so no product
    /// `i * 1000` is ever formed (it would overflow for huge `i`) and no event pays a division.
    step_ms: u64,
    step_remainder: u64,
    /// Whole seconds of event time before the next event: `i / rate`.
    elapsed_seconds: u64,
    /// Events of the current second already generated: `i % rate`.
    into_second: u64,
    /// `floor(into_second * 1000 / rate)` and `(into_second * 1000) % rate`.
    ms_into_second: u64,
    remainder: u64,
    prefixes: SecondPrefixes,
}

impl EventClock {
    /// `rate` is events per second of event time and must be at least 1 (checked by the caller).
    pub(crate) fn new(start_ms: i64, rate: u64) -> Self {
        EventClock {
            start_ms,
            rate,
            step_ms: 1000 / rate,
            step_remainder: 1000 % rate,
            elapsed_seconds: 0,
            into_second: 0,
            ms_into_second: 0,
            remainder: 0,
            prefixes: SecondPrefixes::new(start_ms.clamp(FIRST_MS, LAST_MS).div_euclid(1000)),
        }
    }

    /// The next event's base time as ms after the start, advancing to the event after it.
    pub(crate) fn next_base_offset(&mut self) -> u64 {
        let offset = self
            .elapsed_seconds
            .saturating_mul(1000)
            .saturating_add(self.ms_into_second);
        self.into_second += 1;
        if self.into_second == self.rate {
            self.elapsed_seconds += 1;
            self.into_second = 0;
            self.ms_into_second = 0;
            self.remainder = 0;
        } else {
            self.ms_into_second += self.step_ms;
            // remainder + step_remainder < 2 * rate, so at most one carry; compared this way
            // round so that the sum is never formed (no overflow even for a rate near u64::MAX).
            if self.remainder >= self.rate - self.step_remainder {
                self.remainder -= self.rate - self.step_remainder;
                self.ms_into_second += 1;
            } else {
                self.remainder += self.step_remainder;
            }
        }
        offset
    }

    /// The next event's base time in ms since the epoch, without lag (Nexmark's events are in
    /// order).
    pub(crate) fn next_base_ms(&mut self) -> i64 {
        let base = self.next_base_offset();
        self.start_ms.saturating_add_unsigned(base)
    }

    /// The next event's time in ms since the epoch: its base time made late by a random lag
    /// (p = 0.95: U{0..19} ms, otherwise U{0..2000} ms), never before the start.
    pub(crate) fn next_event_ms<R: Rng>(&mut self, rng: &mut R) -> i64 {
        let base = self.next_base_offset();
        let lag = if rng.random_bool(SMALL_LAG_P) {
            rng.random_range(0..SMALL_LAG_BOUND_MS)
        } else {
            rng.random_range(0..=MAX_LAG_MS)
        };
        self.start_ms
            .saturating_add_unsigned(base.saturating_sub(lag))
    }

    /// Appends `ms` (since the epoch) as RFC 3339 with milliseconds and 'Z', without quotes:
    /// `2026-01-05T14:30:00.123Z`.
    pub(crate) fn push_timestamp(&mut self, out: &mut Vec<u8>, ms: i64) {
        let ms = ms.clamp(FIRST_MS, LAST_MS);
        out.extend_from_slice(self.prefixes.get(ms.div_euclid(1000)));
        let mut millis = *b".000Z";
        fill_decimal(&mut millis[1..4], ms.rem_euclid(1000).unsigned_abs());
        out.extend_from_slice(&millis);
    }
}

/// "YYYY-MM-DDTHH:MM:SS" of the seconds in use. Events are at most 2 s late, so at any moment
/// they fall in at most three consecutive seconds: four slots indexed by `second % 4` hold them
/// all, and each second is formatted once rather than once per event. (A Nexmark auction's
/// `expires`, later, takes a slot for a moment: a formatting per auction.)
struct SecondPrefixes {
    slots: [(i64, [u8; PREFIX_LEN]); 4],
}

impl SecondPrefixes {
    fn new(first_second: i64) -> Self {
        let mut slots = [(0, [0; PREFIX_LEN]); 4];
        for second in first_second..first_second + 4 {
            slots[slot_of(second)] = (second, format_second(second));
        }
        SecondPrefixes { slots }
    }

    fn get(&mut self, second: i64) -> &[u8; PREFIX_LEN] {
        let slot = &mut self.slots[slot_of(second)];
        if slot.0 != second {
            *slot = (second, format_second(second));
        }
        &slot.1
    }
}

fn slot_of(second: i64) -> usize {
    // rem_euclid(4) is in 0..4, so the cast is exact.
    second.rem_euclid(4) as usize
}

/// "YYYY-MM-DDTHH:MM:SS" of `second` since the epoch, which must lie in years 0000..=9999.
/// Called once per second of event time (the prefixes are cached), so chrono's cost is nothing.
pub(crate) fn format_second(second: i64) -> [u8; PREFIX_LEN] {
    let mut text = *b"0000-01-01T00:00:00";
    if let Some(time) = chrono::DateTime::from_timestamp(second, 0) {
        let formatted = time.format("%Y-%m-%dT%H:%M:%S").to_string();
        if formatted.len() == PREFIX_LEN {
            text.copy_from_slice(formatted.as_bytes());
        }
    }
    text
}
