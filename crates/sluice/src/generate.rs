//! `sluice gen`: NDJSON events of a canonical workload on stdout.
//!
//! Without `--rate`, events come as fast as possible, with the workload's canonical event-time
//! rate (10,000/s for ticks) from its canonical start (2026-01-05T14:30:00Z): the benchmark data.
//! With `--rate N`, N events a second of wall time, and event time advancing at the same pace:
//! a live feed. `--event-rate N` sets how fast event time advances on its own (10,000 events
//! over 10 s of event time at `--event-rate 1000`, written as fast as possible).
//!
//! `sluice gen nexmark --only persons|auctions|bids` writes the Nexmark events of one kind:
//! `--events` counts event numbers, all kinds together (50 are one person, three auctions and 46
//! bids), and `--rate` paces them, so that three runs with the same `--seed` and `--events` write
//! three streams that agree (every auction's seller, every bid's auction and bidder, come earlier).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sluice_gen::{GenOptions, Generator, NexmarkKind, Workload};

#[derive(Args)]
pub struct GenArgs {
    /// ticks, clicks, payments, logs, sensors or nexmark
    workload: Workload,
    /// How many events [default: without end]; for nexmark, event numbers of all three kinds
    #[arg(long)]
    events: Option<u64>,
    /// For nexmark, and required by it: persons, auctions or bids, the kind of events written
    #[arg(long, value_name = "KIND")]
    only: Option<NexmarkKind>,
    /// Events per second of wall time (and of event time) [default: as fast as possible]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Events per second of event time, however fast they are written [default: --rate, else
    /// the workload's canonical rate]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    event_rate: Option<u64>,
    /// Seed of the generator: the same seed gives the same events
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first event: RFC 3339, or `now` [default: 2026-01-05T14:30:00Z]
    #[arg(long)]
    start: Option<String>,
}

/// Events written per write to stdout (and per pacing step).
const BLOCK: u64 = 10_000;

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    let mut options = GenOptions::canonical(args.workload);
    options.seed = args.seed;
    if let Some(rate) = args.event_rate.or(args.rate) {
        options.rate = rate;
    }
    if let Some(start) = &args.start {
        options.start_ms = parse_start(start)?;
    }
    let mut generator = match (args.workload, args.only) {
        (Workload::Nexmark, Some(kind)) => Generator::nexmark(kind, options),
        (Workload::Nexmark, None) => anyhow::bail!(
            "sluice gen nexmark needs --only persons, auctions or bids: each kind is a stream of \
             its own (runs with the same --seed and --events agree on ids)"
        ),
        (workload, Some(_)) => anyhow::bail!(
            "--only is for nexmark: {} has one kind of event",
            workload.name()
        ),
        (workload, None) => Generator::new(workload, options),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::with_capacity(4 << 20);
    let started = Instant::now();
    let total = args.events.unwrap_or(u64::MAX);
    while generator.generated() < total {
        // Paced output goes in small steps so that it flows evenly.
        let step = args.rate.map_or(BLOCK, |rate| (rate / 20).clamp(1, BLOCK));
        let n = step.min(total - generator.generated());
        buf.clear();
        generator.write_events(n as usize, &mut buf);
        if let Err(e) = out.write_all(&buf) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(()); // the reader went away (`| head`): done
            }
            return Err(e).context("cannot write to stdout");
        }
        if let Some(rate) = args.rate {
            out.flush().context("cannot write to stdout")?;
            let due = started + Duration::from_secs_f64(generator.generated() as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    out.flush().context("cannot write to stdout")
}

fn parse_start(text: &str) -> anyhow::Result<i64> {
    if text == "now" {
        return Ok(chrono::Utc::now().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .with_context(|| format!("--start {text:?} is neither `now` nor an RFC 3339 time"))
}
