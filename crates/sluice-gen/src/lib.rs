//! Deterministic generators of the canonical workloads (`shared/bench/WORKLOADS.md`), as NDJSON.
//!
//! They draw from the same distributions as the reference `gen.py` (not the same bytes): the
//! same seed gives the same bytes here, on any machine (Xoshiro256++ seeded with
//! `seed_from_u64`, no platform-dependent code path).
//!
//! - Event time (all but nexmark): event `i` has base time `start + floor(i * 1000 / rate)` ms
//!   and is made late by a lag of U{0..19} ms (p = 0.95) or U{0..2000} ms;
//!   `ts = max(start, base - lag)`, written as RFC 3339 with milliseconds and 'Z'.
//! - W1 `ticks`: 500 tickers T0000..T0499, uniform; per-ticker multiplicative random walk
//!   (start U[10, 500), factor 1 + U(-0.001, 0.001)), 4 decimals; volume = 100 * U{1..100}.
//! - W2 `clicks`: users Zipf(s = 1.1) over 100,000 (u000000 the heaviest); a user's session
//!   ("s%07d", global counter) is renewed with p = 0.05 per event; event_type page_view / click /
//!   add_to_cart / purchase 70/20/7/3 %; page_view pages 80 % product, 10 % "/", 10 % category,
//!   other events a product, products Zipf(1.0) over 1000, categories U{0..49}; device mobile /
//!   desktop / tablet 60/35/5 %; 30 countries Zipf(1.0); event_id 128 random bits in hex.
//!   Anomalies, exclusive, drawn first: 0.5 % invalid JSON (line cut short), 1 % non-timestamp
//!   `ts`, 2 % `"user_id":null`.
//! - `payments`, `logs` and `sensors` (the other use cases of `sluice demo`, not benchmark
//!   workloads): their shapes and distributions are documented in their modules,
//!   `payments.rs`, `logs.rs` and `sensors.rs`.
//! - `nexmark`: the Nexmark benchmark's people, auctions and bids, by the rules of the reference
//!   generator (Beam's and Flink's `NexmarkGenerator`): event number `i` is a person, an auction
//!   or a bid by `i % 50` (1:3:46), at `start + floor(i * 1000 / rate)` ms without lag; bids and
//!   auctions refer only to people and auctions of earlier event numbers, so that the streams of
//!   each kind alone ([`Generator::nexmark`]) agree. Shapes and distributions: `nexmark.rs`.

mod clicks;
mod logs;
mod nexmark;
mod payments;
mod sensors;
mod text;
mod ticks;
mod time;
mod zipf;

#[cfg(test)]
mod tests;

use std::str::FromStr;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::time::EventClock;

/// The workloads: the canonical W1 and W2, and the other use cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// W1: market data, `{"ticker","price","volume","ts"}`.
    Ticks,
    /// W2: clickstream with invalid records, `{"event_id","user_id","session_id","event_type",
    /// "page","device","country","ts"}`.
    Clicks,
    /// Card payments: `{"payment_id","card_id","merchant_id","amount","currency","country","ts"}`.
    Payments,
    /// Service logs: `{"service","level","status","latency_ms","message","ts"}`.
    Logs,
    /// IoT readings: `{"device_id","temperature","humidity","battery","ts"}`.
    Sensors,
    /// The Nexmark benchmark's people, auctions and bids, one stream of three shapes (see
    /// [`NexmarkKind`]), or of one ([`Generator::nexmark`]).
    Nexmark,
}

impl Workload {
    /// Every workload, W1 first.
    pub const ALL: [Workload; 6] = [
        Workload::Ticks,
        Workload::Clicks,
        Workload::Payments,
        Workload::Logs,
        Workload::Sensors,
        Workload::Nexmark,
    ];

    /// The workload's name, as the command line spells it (`sluice gen ticks`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Ticks => "ticks",
            Workload::Clicks => "clicks",
            Workload::Payments => "payments",
            Workload::Logs => "logs",
            Workload::Sensors => "sensors",
            Workload::Nexmark => "nexmark",
        }
    }

    /// Events per second of event time: 10,000 ticks (WORKLOADS.md); 200 clicks, so that 10 M
    /// clicks span two dates and ~15 hours (as `gen.py`); 1,000 payments, log lines and readings;
    /// 10,000 Nexmark events (its firstEventRate), all kinds together.
    pub fn default_rate(self) -> u64 {
        match self {
            Workload::Ticks | Workload::Nexmark => 10_000,
            Workload::Clicks => 200,
            Workload::Payments | Workload::Logs | Workload::Sensors => 1_000,
        }
    }

    /// The field producers should use as the partition key. For nexmark, people's and auctions'
    /// `id`: bids have none, [`NexmarkKind::key_field`] gives each kind's.
    pub fn key_field(self) -> &'static str {
        match self {
            Workload::Ticks => "ticker",
            Workload::Clicks => "user_id",
            Workload::Payments => "card_id",
            Workload::Logs => "service",
            Workload::Sensors => "device_id",
            Workload::Nexmark => "id",
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

/// The three kinds of Nexmark events, and their lines:
/// `{"id","name","email_address","credit_card","city","state","date_time","extra"}`,
/// `{"id","item_name","description","initial_bid","reserve","date_time","expires","seller",
/// "category","extra"}` and `{"auction","bidder","price","channel","url","date_time","extra"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkKind {
    /// A person, who sells and bids.
    Person,
    /// An auction: an item a person sells, open until it expires.
    Auction,
    /// A bid of a person on an auction.
    Bid,
}

impl NexmarkKind {
    /// Every kind, in the order of the event numbers of each 50.
    pub const ALL: [NexmarkKind; 3] = [NexmarkKind::Person, NexmarkKind::Auction, NexmarkKind::Bid];

    /// The kind's name, as the command line spells it (`sluice gen nexmark --only bids`).
    pub fn name(self) -> &'static str {
        match self {
            NexmarkKind::Person => "persons",
            NexmarkKind::Auction => "auctions",
            NexmarkKind::Bid => "bids",
        }
    }

    /// The field producers should use as the partition key: a person's or an auction's `id`, a
    /// bid's `auction` (so that an auction and its bids can share a partition).
    pub fn key_field(self) -> &'static str {
        match self {
            NexmarkKind::Person | NexmarkKind::Auction => "id",
            NexmarkKind::Bid => "auction",
        }
    }
}

impl FromStr for NexmarkKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        NexmarkKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                format!("unknown Nexmark kind {s:?}, expected persons, auctions or bids")
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
    Payments(payments::Payments),
    Logs(logs::Logs),
    Sensors(sensors::Sensors),
    Nexmark(nexmark::Nexmark),
}

impl Generator {
    /// For [`Workload::Nexmark`], its events of all three kinds.
    ///
    /// # Panics
    ///
    /// If `options.rate` is 0: event time could not advance.
    pub fn new(workload: Workload, options: GenOptions) -> Self {
        Generator::build(workload, None, options)
    }

    /// Nexmark's events of one kind only: the lines of that kind of the stream
    /// `Generator::new(Workload::Nexmark, options)` writes, the same bytes. Events are still
    /// counted by event number, all kinds together: `write_events(50, ..)` writes one person,
    /// three auctions or 46 bids.
    ///
    /// # Panics
    ///
    /// If `options.rate` is 0: event time could not advance.
    pub fn nexmark(only: NexmarkKind, options: GenOptions) -> Self {
        Generator::build(Workload::Nexmark, Some(only), options)
    }

    fn build(workload: Workload, only: Option<NexmarkKind>, options: GenOptions) -> Self {
        assert!(
            options.rate > 0,
            "GenOptions::rate must be at least 1 event per second"
        );
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed);
        let state = match workload {
            Workload::Ticks => WorkloadState::Ticks(ticks::Ticks::new(&mut rng)),
            Workload::Clicks => WorkloadState::Clicks(clicks::Clicks::new()),
            Workload::Payments => WorkloadState::Payments(payments::Payments::new(&mut rng)),
            Workload::Logs => WorkloadState::Logs(logs::Logs::new(options.rate)),
            Workload::Sensors => WorkloadState::Sensors(sensors::Sensors::new(&mut rng)),
            Workload::Nexmark => {
                WorkloadState::Nexmark(nexmark::Nexmark::new(&mut rng, options.rate, only))
            }
        };
        Generator {
            rng,
            clock: EventClock::new(options.start_ms, options.rate),
            state,
            generated: 0,
        }
    }

    /// Appends the next `n` events to `out`, one JSON object per line, each line ending in '\n'.
    /// For [`Generator::nexmark`], the next `n` event numbers, whose events of the other kinds
    /// are not written.
    pub fn write_events(&mut self, n: usize, out: &mut Vec<u8>) {
        let (rng, clock) = (&mut self.rng, &mut self.clock);
        for _ in 0..n {
            match &mut self.state {
                WorkloadState::Ticks(ticks) => ticks.write_event(rng, clock, out),
                WorkloadState::Clicks(clicks) => clicks.write_event(rng, clock, out),
                WorkloadState::Payments(payments) => payments.write_event(rng, clock, out),
                WorkloadState::Logs(logs) => logs.write_event(rng, clock, out),
                WorkloadState::Sensors(sensors) => sensors.write_event(rng, clock, out),
                WorkloadState::Nexmark(nexmark) => nexmark.write_event(clock, out),
            }
        }
        self.generated += n as u64;
    }

    /// Events generated so far: for nexmark, event numbers, whether written or not.
    pub fn generated(&self) -> u64 {
        self.generated
    }
}
