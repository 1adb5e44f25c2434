//! `sluice demo`: the server on the embedded default with the five use cases running — the
//! streams and views of `demo.sql`, a dashboard for each (`dashboards.toml`), and a generator
//! feeding each stream at a modest rate.
//!
//! The generators write to the log in-process, as a producer would over HTTP (records keyed by
//! the workload's key field), and pace themselves by event time: at wall time `t` a feed has
//! written every event whose base time is before `t`. A stream that is empty when the demo
//! starts gets the last [`HISTORY`] of events at once, so the charts have windows to draw from
//! the first second; a stream that has data (the demo ran before) resumes from now, and its
//! views resume from their commits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_gen::{GenOptions, Generator, Workload};
use sluice_log::Log;
use tokio::sync::watch;

use crate::config;

/// The demo's streams and views.
pub const DEMO_SQL: &str = include_str!("demo.sql");
/// The demo's dashboards, one per use case.
pub const DEMO_DASHBOARDS: &str = include_str!("dashboards.toml");

/// Event time written at once into an empty stream.
const HISTORY: Duration = Duration::from_secs(600);
/// How often the feeds write.
const STEP: Duration = Duration::from_millis(100);
/// The demo's rhythm: its views take what arrived, and its raw tables commit, every 2 s —
/// results a little later than `serve`'s defaults (500 ms and 1 s), for a fraction of the work
/// of fourteen views: the demo is meant to sit in a corner of a laptop.
const VIEW_INTERVAL: Duration = Duration::from_secs(2);
const COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// One generator feeding one stream.
struct Feed {
    workload: Workload,
    stream: &'static str,
    /// Events per second.
    rate: u64,
}

/// The default rates: enough to move every chart, little enough to leave the machine alone.
const FEEDS: [Feed; 5] = [
    Feed {
        workload: Workload::Ticks,
        stream: "ticks",
        rate: 200,
    },
    Feed {
        workload: Workload::Clicks,
        stream: "clickstream",
        rate: 50,
    },
    Feed {
        workload: Workload::Payments,
        stream: "payments",
        rate: 20,
    },
    Feed {
        workload: Workload::Logs,
        stream: "logs",
        rate: 50,
    },
    Feed {
        workload: Workload::Sensors,
        stream: "sensors",
        rate: 40,
    },
];

pub async fn run(flags: config::Flags) -> anyhow::Result<()> {
    let mut config = config::resolve(None, flags)?;
    config.statements = Some(DEMO_SQL.to_string());
    config.dashboards = config::dashboards(DEMO_DASHBOARDS).context("the demo's dashboards")?;
    config.views.interval = VIEW_INTERVAL;
    config.raw.commit_interval = COMMIT_INTERVAL;
    let data_dir = config.data_dir.clone();
    let config_dashboards: Vec<String> = config.dashboards.iter().map(|d| d.name.clone()).collect();
    let server = sluice_server::Server::start(config).await?;
    let (stop, stopped) = watch::channel(false);
    let feeds: Vec<_> = FEEDS
        .iter()
        .map(|feed| {
            let (log, stopped) = (server.log.clone(), stopped.clone());
            tokio::spawn(async move {
                if let Err(e) = run_feed(log, feed, stopped).await {
                    tracing::error!(stream = feed.stream, error = %e, "a demo feed stopped");
                }
            })
        })
        .collect();

    let http = server.http_addr;
    let pg = server.pg_addr;
    println!("sluice: pg listening on {pg}");
    println!("sluice: http listening on {http}");
    println!();
    println!(
        "Sluice demo: five use cases running on {}",
        data_dir.display()
    );
    println!("  dashboard  http://{http}/");
    let boards: Vec<String> = config_dashboards
        .iter()
        .map(|name| format!("http://{http}/#/dashboards/{name}"))
        .collect();
    println!("  use cases  {}", boards.join("\n             "));
    println!(
        "  psql       psql -h {} -p {} -U sluice",
        pg.ip(),
        pg.port()
    );
    println!(
        "  sluice sql sluice sql --server http://{http} \"SELECT * FROM latest_price ORDER BY ticker LIMIT 5\""
    );
    let rates: Vec<String> = FEEDS
        .iter()
        .map(|f| format!("{} {}/s", f.stream, f.rate))
        .collect();
    println!("  streams    {}", rates.join(", "));
    println!("Ctrl-C stops; running `sluice demo` again resumes where it was.");
    crate::shutdown_signal().await;
    tracing::info!("stopping the demo");
    let _ = stop.send(true);
    for feed in feeds {
        if let Err(e) = feed.await {
            tracing::error!(error = %e, "a demo feed's task failed");
        }
    }
    server.shutdown().await?;
    Ok(())
}

/// Feeds `feed.stream` until `stop`: every [`STEP`], the events due by then.
async fn run_feed(
    log: Arc<Log>,
    feed: &'static Feed,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stream = log
        .stream(feed.stream)
        .with_context(|| format!("the demo's stream {} is missing", feed.stream))?;
    let empty = stream.shards().iter().all(|s| s.bounds().1 == 0);
    let now = now_ms();
    let start_ms = if empty {
        now - HISTORY.as_millis() as i64
    } else {
        now
    };
    let options = GenOptions {
        // A new seed each run: payment ids and sessions do not repeat an earlier run's.
        seed: now as u64 ^ feed.workload as u64,
        rate: feed.rate,
        start_ms,
    };
    let mut generator = Generator::new(feed.workload, options);
    let key = feed.workload.key_field();
    let mut tick = tokio::time::interval(STEP);
    let mut lines = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let due = ((now_ms() - start_ms).max(0) as u64).saturating_mul(feed.rate) / 1000;
        // At most a minute of events per append keeps each one small, history included.
        let n = due
            .saturating_sub(generator.generated())
            .min(feed.rate.max(1) * 60);
        if n == 0 {
            continue;
        }
        lines.clear();
        generator.write_events(n as usize, &mut lines);
        let mut batches = stream.batches();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let key = sluice_ingest::http::partition_key(line, key);
            batches.push(stream.shard_for_key(&key), &key, line)?;
        }
        // A refused append (backpressure, a full disk) loses generated events, not
        // acknowledged ones: the feed goes on with the next.
        match stream.append(batches).await {
            Ok(parts) => {
                if let Some(e) = parts.into_iter().find_map(|p| p.result.err()) {
                    tracing::warn!(stream = feed.stream, error = %e, "a demo append failed");
                }
            }
            Err(e) => tracing::warn!(stream = feed.stream, error = %e, "a demo append failed"),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
