//! `view`: a materialized view in-process on a canonical workload, without a server.
//!
//! ```text
//!  sluice-gen ticks|clicks ──append, keyed──► log (4 shards)         not timed
//!  ViewPipeline (default ViewConfig) ──► the view's table             timed
//! ```
//!
//! W1 (`ticks`): `ticks_1m` as SPEC.md declares it. W2 (`clicks`): the clickstream ETL — null
//! users dropped, `date` and `hour` derived, partitioned by date, hour and event type. The clock
//! runs from opening the view (planning included) until its table's last commit records every
//! shard's end: throughput is events per second of wall time from first input to last output
//! committed, decoding included.
//!
//! Then the restart: the view is dropped as a crash leaves it (its last commit and state
//! snapshot on disk), `--restart-events` more events are appended, and the clock runs from
//! opening it again until it has taken them — the time to caught-up with the whole run's state
//! history behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_gen::Workload;
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Stream};
use sluice_pipeline::runtime::run_one;
use sluice_pipeline::view::{Placement, SystemClock, ViewConfig, ViewPipeline};
use tokio::sync::watch;

use crate::preload::{self, positions};

const TICKS: &str = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE NOT NULL, \
                     volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL) \
                     WITH (shards = 4, event_time = 'ts', watermark = '5 seconds')";
const TICKS_1M: &str = "CREATE MATERIALIZED VIEW ticks_1m PARTITIONED BY (trade_date) AS \
    SELECT ticker, window_start, window_end, CAST(window_start AS DATE) AS trade_date, \
    count(*) AS trades, avg(price) AS avg_price, min(price) AS min_price, \
    max(price) AS max_price, sum(volume) AS volume, last_value(price ORDER BY ts) AS close \
    FROM TUMBLE(ticks, ts, INTERVAL '1 minute') GROUP BY ticker, window_start, window_end";
const CLICKS: &str = "CREATE STREAM clicks (event_id TEXT NOT NULL, user_id TEXT, \
                      session_id TEXT, event_type TEXT, page TEXT, device TEXT, country TEXT, \
                      ts TIMESTAMP NOT NULL) WITH (shards = 4, event_time = 'ts')";
const CLICKS_CLEAN: &str = "CREATE MATERIALIZED VIEW clicks_clean \
    PARTITIONED BY (date, hour, event_type) AS \
    SELECT event_id, user_id, session_id, event_type, page, device, country, ts, \
    CAST(ts AS DATE) AS date, CAST(date_part('hour', ts) AS INT) AS hour \
    FROM clicks WHERE user_id IS NOT NULL";
/// How long the view may take no record before the bench gives up.
const STALL: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

#[derive(clap::Args)]
pub struct Options {
    /// `ticks` (W1 through ticks_1m) or `clicks` (W2 through the ETL view)
    #[arg(long, default_value = "ticks")]
    workload: String,
    /// Events appended to the log before the view starts
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Events appended after the simulated crash, before the restart
    #[arg(long, default_value_t = 100_000)]
    restart_events: usize,
    /// Events per append (one HTTP ingest request's worth)
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Where the temporary log and lake go (the system's temporary folder without)
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(options: Options) -> anyhow::Result<Value> {
    let (workload, stream_sql, view_sql) = match options.workload.as_str() {
        "ticks" => (Workload::Ticks, TICKS, TICKS_1M),
        "clicks" => (Workload::Clicks, CLICKS, CLICKS_CLEAN),
        other => bail!("--workload is ticks or clicks, not {other:?}"),
    };
    let parent = options.dir.unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-view-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default())?);
    let stream = preload::create_stream(&log, stream_sql)?;
    preload::append(&stream, workload, options.events, options.batch).await?;
    let lake = Lake::local(dir.path().join("lake"))?;
    let sluice_sql::Statement::CreateView(create) = sluice_sql::parse(view_sql)?.remove(0) else {
        bail!("not a CREATE MATERIALIZED VIEW: {view_sql}");
    };
    let definition = create.definition;
    let name = definition.name.clone();
    let open = || {
        ViewPipeline::open(
            definition.clone(),
            1,
            log.clone(),
            lake.clone(),
            Placement::local(dir.path().join("state")),
            ViewConfig::default(),
            Arc::new(SystemClock),
        )
    };

    let cadence = ViewConfig::default().cadence();
    let started = Instant::now();
    let cpu = preload::cpu_seconds();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_one(Box::new(open().await?), cadence, stopped));
    caught_up(&lake, &name, &stream).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cores_busy = preload::cpu_seconds()
        .zip(cpu)
        .map(|(after, before)| (after - before) / seconds);
    let _ = stop.send(true);
    task.await.context("the view's task failed")??;
    let rows = lake.open(&name).await?;
    let summary = summary(&lake, &name, workload).await?;
    let peak_rss_mib = preload::peak_rss_mib();

    // The crash: the pipeline is gone; its last commit and snapshot are what remains.
    preload::append(&stream, workload, options.restart_events, options.batch).await?;
    let restarted = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_one(Box::new(open().await?), cadence, stopped));
    caught_up(&lake, &name, &stream).await?;
    let restart_seconds = restarted.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await.context("the view's task failed")??;
    Ok(json!({
        "bench": "view", "view": name, "events": options.events, "seconds": seconds,
        "events_per_s": options.events as f64 / seconds, "cores_busy": cores_busy,
        "table_version": rows.version(),
        "summary": summary, "peak_rss_mib": peak_rss_mib,
        "restart_events": options.restart_events, "restart_seconds": restart_seconds,
    }))
}

/// Waits until the view's table records every shard's end as its position.
async fn caught_up(lake: &Lake, name: &str, stream: &Stream) -> anyhow::Result<()> {
    let ends: Vec<u64> = stream.shards().iter().map(|s| s.bounds().1).collect();
    let (mut best, mut since) = (0u64, Instant::now());
    loop {
        if let Ok(table) = lake.open(name).await {
            let taken = positions(&table, ends.len()).await?;
            if taken.iter().zip(&ends).all(|(t, end)| t >= end) {
                return Ok(());
            }
            let sum: u64 = taken.iter().sum();
            if sum > best {
                (best, since) = (sum, Instant::now());
            }
        }
        if since.elapsed() > STALL {
            bail!(
                "the view took nothing for {}s ({best} records so far)",
                STALL.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the view's table holds: for ticks_1m the windows emitted and the trades they count,
/// for the ETL its rows.
async fn summary(lake: &Lake, name: &str, workload: Workload) -> anyhow::Result<Value> {
    let table = lake.open(name).await?;
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("v", table.delta().table_provider().await?)?;
    let sql = match workload {
        Workload::Ticks => "SELECT count(*) AS windows, sum(trades) AS trades FROM v",
        _ => "SELECT count(*) AS rows FROM v",
    };
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut out);
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(serde_json::from_slice::<Vec<Value>>(&out)?
        .pop()
        .unwrap_or(Value::Null))
}
