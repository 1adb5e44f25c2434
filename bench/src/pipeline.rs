//! `pipeline`: the raw-table pipeline in-process on W2 (`clicks`), without a server.
//!
//! ```text
//!  sluice-gen clicks ──append, keyed by user_id──► log (4 shards)     not timed
//!  RawPipeline (default RawConfig) ──► clicks + clicks_errors        timed
//! ```
//!
//! A fresh log and lake in a temporary folder; stream `clicks` as its `CREATE STREAM` declares
//! it; N W2 events (seed 42, with their invalid JSON, bad timestamps and null users) appended
//! straight to the log in requests of `--batch` events, each record to the shard of its
//! `user_id` as HTTP ingest with `?key=user_id` would put it. Then the clock runs from the start
//! of the pipeline, as the server runs it, until both tables' last commits record every shard's
//! end. The rows are counted from the tables' add actions (their `numRecords` statistics) and
//! must add up to N: the pipeline drops nothing, null users are rows of a nullable column.
//!
//! The log was just written, so the pipeline reads it from the page cache, as a server keeping
//! up with its producers does.

use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_gen::Workload;
use sluice_lake::{Lake, LakeTable};
use sluice_log::{Log, LogConfig};
use sluice_pipeline::runtime::run_one;
use sluice_pipeline::source::StreamSource;
use sluice_pipeline::{RawConfig, RawPipeline, errors_table};
use tokio::sync::watch;

use crate::preload::{self, positions};

const STREAM: &str = "clicks";
/// The W2 fields (shared/bench/WORKLOADS.md). `user_id` is nullable: a W2 job drops null users
/// downstream; the raw table keeps them.
const COLUMNS: &str = "event_id TEXT NOT NULL, user_id TEXT, session_id TEXT, event_type TEXT, \
                       page TEXT, device TEXT, country TEXT, ts TIMESTAMP NOT NULL";
/// How long the tables may take no record before the bench gives up: a failed round is only
/// logged by the pipeline, then retried.
const STALL: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);

#[derive(clap::Args)]
pub struct Options {
    /// Events appended to the log before the pipeline starts
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Events per append (one HTTP ingest request's worth)
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Shards of the stream
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// The stream's partition_by option, e.g. "date(ts), hour(ts), event_type"; none without
    #[arg(long)]
    partition_by: Option<String>,
    /// Where the temporary log and lake go (the system's temporary folder without)
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs the scenario; returns its figures.
pub async fn run(options: Options) -> anyhow::Result<Value> {
    // The pipeline logs a failed round and retries it: show why, on stderr (stdout is the figures).
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let parent = options.dir.unwrap_or_else(std::env::temp_dir);
    // Declared first, so dropped (deleted) last.
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-pipeline-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let log = std::sync::Arc::new(Log::open(dir.path().join("log"), LogConfig::default())?);
    let mut with = format!("shards = {}, event_time = 'ts'", options.shards);
    if let Some(partition_by) = &options.partition_by {
        with.push_str(&format!(", partition_by = '{partition_by}'"));
    }
    let stream = preload::create_stream(
        &log,
        &format!("CREATE STREAM {STREAM} ({COLUMNS}) WITH ({with})"),
    )?;
    preload::append(&stream, Workload::Clicks, options.events, options.batch).await?;
    let ends: Vec<u64> = stream.shards().iter().map(|s| s.bounds().1).collect();
    let appended: u64 = ends.iter().sum();
    if appended != options.events as u64 {
        bail!(
            "the log holds {appended} records, {} were appended",
            options.events
        );
    }
    let lake = Lake::local(dir.path().join("lake"))?;

    let started = Instant::now();
    let config = RawConfig::default();
    let pipeline =
        RawPipeline::open(StreamSource::open(&log, STREAM)?, &lake, config.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_one(Box::new(pipeline), config.cadence(), stopped));
    // The pipeline created both tables when it opened.
    let mut rows = lake.open(STREAM).await?;
    let mut errors = lake.open(&errors_table(STREAM)).await?;
    let waited = wait_for_ends(&mut rows, &mut errors, &ends).await;
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await.context("the pipeline's task failed")??;
    waited?;

    rows.refresh().await?;
    errors.refresh().await?;
    let (good, bad) = (row_count(&rows)?, row_count(&errors)?);
    if good + bad != options.events as u64 {
        bail!(
            "{good} rows + {bad} error rows != {} events",
            options.events
        );
    }
    Ok(json!({
        "bench": "pipeline", "events": options.events, "shards": options.shards,
        "partition_by": options.partition_by, "seconds": seconds,
        "events_per_s": options.events as f64 / seconds,
        "rows": good, "error_rows": bad, "peak_rss_mib": preload::peak_rss_mib(),
    }))
}

/// Polls both tables until the positions their last commits recorded reach every shard's end.
async fn wait_for_ends(
    rows: &mut LakeTable,
    errors: &mut LakeTable,
    ends: &[u64],
) -> anyhow::Result<()> {
    let total: u64 = ends.iter().sum();
    let (mut best, mut since) = (0u64, Instant::now());
    loop {
        rows.refresh().await?;
        errors.refresh().await?;
        // Per shard, what both tables have taken: the lower of their positions.
        let row_positions = positions(rows, ends.len()).await?;
        let error_positions = positions(errors, ends.len()).await?;
        let taken: Vec<u64> = row_positions
            .iter()
            .zip(&error_positions)
            .map(|(r, e)| *r.min(e))
            .collect();
        if taken.iter().zip(ends).all(|(t, end)| t >= end) {
            return Ok(());
        }
        let sum: u64 = taken.iter().sum();
        if sum > best {
            (best, since) = (sum, Instant::now());
        } else if since.elapsed() > STALL {
            bail!(
                "the pipeline took nothing for {}s: its tables hold {sum} of {total} records \
                 (per shard {taken:?} of {ends:?})",
                STALL.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Rows in the table's current version, summed from its add actions' statistics.
fn row_count(table: &LakeTable) -> anyhow::Result<u64> {
    let snapshot = table.delta().snapshot()?;
    let files = snapshot.log_data();
    let mut rows = 0u64;
    for file in files.iter() {
        let n = file.num_records().map(|n| n as u64).or_else(|| {
            let stats: Value = serde_json::from_str(&file.stats()?).ok()?;
            stats.get("numRecords")?.as_u64()
        });
        rows += n.with_context(|| {
            format!(
                "table '{}': file {} has no row count in its statistics",
                table.name(),
                file.path()
            )
        })?;
    }
    Ok(rows)
}
