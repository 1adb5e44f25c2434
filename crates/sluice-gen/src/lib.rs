//! Deterministic generators of the canonical workloads (`shared/bench/WORKLOADS.md`), as NDJSON.
//!
//! They draw from the same distributions as the reference `gen.py` (not the same bytes): the
//! same seed gives the same bytes here, on any machine (Xoshiro256++ seeded with
//! `seed_from_u64`, no platform-dependent code path).
//!
//! - Event time (both): event `i` has base time `start + floor(i * 1000 / rate)` ms and is made
//!   late by a lag of U{0..19} ms (p = 0.95) or U{0..2000} ms; `ts = max(start, base - lag)`,
//!   written as RFC 3339 with milliseconds and 'Z'.
//! - W1 `ticks`: 500 tickers T0000..T0499, uniform; per-ticker multiplicative random walk
//!   (start U[10, 500), factor 1 + U(-0.001, 0.001)), 4 decimals; volume = 100 * U{1..100}.
//! - W2 `clicks`: users Zipf(s = 1.1) over 100,000 (u000000 the heaviest); a user's session
//!   ("s%07d", global counter) is renewed with p = 0.05 per event; event_type page_view / click /
//!   add_to_cart / purchase 70/20/7/3 %; page_view pages 80 % product, 10 % "/", 10 % category,
//!   other events a product, products Zipf(1.0) over 1000, categories U{0..49}; device mobile /
//!   desktop / tablet 60/35/5 %; 30 countries Zipf(1.0); event_id 128 random bits in hex.
//!   Anomalies, exclusive, drawn first: 0.5 % invalid JSON (line cut short), 1 % non-timestamp
//!   `ts`, 2 % `"user_id":null`.

mod clicks;
mod text;
mod ticks;
mod time;

#[cfg(test)]
mod tests;

use std::str::FromStr;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::time::EventClock;

/// The canonical workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// W1: market data, `{"ticker","price","volume","ts"}`.
    Ticks,
    /// W2: clickstream with invalid records, `{"event_id","user_id","session_id","event_type",
    /// "page","device","country","ts"}`.
    Clicks,
}

impl Workload {
    /// Every workload, W1 first.
    pub const ALL: [Workload; 2] = [Workload::Ticks, Workload::Clicks];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Ticks => "ticks",
            Workload::Clicks => "clicks",
        }
    }

    /// Events per second of event time: 10,000 ticks (WORKLOADS.md); 200 clicks, so that 10 M
    /// clicks span two dates and ~15 hours (as `gen.py`).
    pub fn default_rate(self) -> u64 {
        match self {
            Workload::Ticks => 10_000,
            Workload::Clicks => 200,
        }
    }

    /// The field producers should use as the partition key: "ticker", "user_id".
    pub fn key_field(self) -> &'static str {
        match self {
            Workload::Ticks => "ticker",
            Workload::Clicks => "user_id",
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|workload| workload.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!(
                    "unknown workload {s:?}, expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// 2026-01-05T14:30:00Z in ms since the epoch: where the event time of the canonical runs starts.
pub const CANONICAL_START_MS: i64 = 1_767_623_400_000;

/// What a generated stream depends on besides its workload.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Same workload, seed and rate: same bytes.
    pub seed: u64,
    /// Events per second of event time; at least 1.
    pub rate: u64,
    /// Base time of the first event, in ms since the epoch. Timestamps are kept within the years
    /// 0000..=9999 that RFC 3339 can write.
    pub start_ms: i64,
}

impl GenOptions {
    /// Seed 42, the workload's default rate, starting at [`CANONICAL_START_MS`].
    pub fn canonical(workload: Workload) -> Self {
        GenOptions {
            seed: 42,
            rate: workload.default_rate(),
            start_ms: CANONICAL_START_MS,
        }
    }
}

/// An endless, deterministic stream of one workload's events.
pub struct Generator {
    rng: Xoshiro256PlusPlus,
    clock: EventClock,
    state: WorkloadState,
    generated: u64,
}

/// What a workload remembers between events.
enum WorkloadState {
    Ticks(ticks::Ticks),
    Clicks(clicks::Clicks),
}

impl Generator {
    /// # Panics
    ///
    /// If `options.rate` is 0: event time could not advance.
    pub fn new(workload: Workload, options: GenOptions) -> Self {
        assert!(
            options.rate > 0,
            "GenOptions::rate must be at least 1 event per second"
        );
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed);
        let state = match workload {
            Workload::Ticks => WorkloadState::Ticks(ticks::Ticks::new(&mut rng)),
            Workload::Clicks => WorkloadState::Clicks(clicks::Clicks::new()),
        };
        Generator {
            rng,
            clock: EventClock::new(options.start_ms, options.rate),
            state,
            generated: 0,
        }
    }

    /// Appends the next `n` events to `out`, one JSON object per line, each line ending in '\n'.
    pub fn write_events(&mut self, n: usize, out: &mut Vec<u8>) {
        match &mut self.state {
            WorkloadState::Ticks(ticks) => {
                ticks.write_events(&mut self.rng, &mut self.clock, n, out)
            }
            WorkloadState::Clicks(clicks) => {
                clicks.write_events(&mut self.rng, &mut self.clock, n, out)
            }
        }
        self.generated += n as u64;
    }

    /// Events generated so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }
}
