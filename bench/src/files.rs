//! `view-files`: materialized views in-process over streams loaded from NDJSON files, without a
//! server (Nexmark's queries: `bench/nexmark.sh` gives each query's streams and views).
//!
//! ```text
//!  FILE ──append, round-robin over the stream's shards──► log          not timed
//!  the views, each its pipeline, all at once ──► their tables            timed
//! ```
//!
//! The clock runs from opening the views (planning included) until every view's table records
//! the end of every shard of every stream it reads: the views' rows for all the events are
//! committed. Each view reads streams (a view over a view is not timed here).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Stream};
use sluice_pipeline::runtime::run_one;
use sluice_pipeline::source::joined::SECOND_SIDE;
use sluice_pipeline::view::input::Input;
use sluice_pipeline::view::plan::ViewPlan;
use sluice_pipeline::view::{Placement, SystemClock, ViewConfig, ViewPipeline};
use tokio::sync::watch;

use crate::preload;

/// Lines a stream takes an append.
const BATCH: usize = 10_000;
/// How long the views may take no record before the bench gives up.
const STALL: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

#[derive(clap::Args)]
pub struct Options {
    /// A CREATE STREAM, then the NDJSON file its records come from (repeat for each stream)
    #[arg(long = "stream", num_args = 2, value_names = ["CREATE", "FILE"], required = true)]
    streams: Vec<String>,
    /// A CREATE MATERIALIZED VIEW over the streams (repeat: the views run together)
    #[arg(long = "view", required = true)]
    views: Vec<String>,
    /// Where the temporary log and lake go (the system's temporary folder without)
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(options: Options) -> anyhow::Result<Value> {
    let parent = options.dir.unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-files-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default())?);
    let lake = Lake::local(dir.path().join("lake"))?;
    let mut streams = BTreeMap::new();
    for pair in options.streams.chunks(2) {
        let stream = preload::create_stream(&log, &pair[0])?;
        load(&stream, &PathBuf::from(&pair[1])).await?;
        streams.insert(stream.name().to_string(), stream);
    }
    let mut definitions = Vec::new();
    for sql in &options.views {
        let sluice_sql::Statement::CreateView(create) = sluice_sql::parse(sql)?.remove(0) else {
            bail!("not a CREATE MATERIALIZED VIEW: {sql}");
        };
        definitions.push(create.definition);
    }

    let started = Instant::now();
    let cpu = preload::cpu_seconds();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut ends = Vec::new();
    let mut events = 0;
    for (id, definition) in definitions.iter().enumerate() {
        let plan = ViewPlan::new(definition, &log, &lake).await?;
        // Per partition of the view's input (a join's second stream numbered apart), its end.
        let mut end = BTreeMap::new();
        for (side, input) in plan.inputs().into_iter().enumerate() {
            let Input::Stream(name) = input else {
                bail!("view '{}' reads a view: not timed here", definition.name);
            };
            let stream = streams
                .get(name)
                .with_context(|| format!("stream '{name}' was not loaded"))?;
            for (p, shard) in stream.shards().iter().enumerate() {
                let partition = if side == 0 { 0 } else { SECOND_SIDE } + p as u32;
                end.insert(partition, shard.bounds().1);
                events += shard.bounds().1;
            }
        }
        ends.push((definition.name.clone(), end));
        let pipeline = ViewPipeline::open(
            definition.clone(),
            id as u64 + 1,
            log.clone(),
            lake.clone(),
            Placement::local(dir.path().join("state").join(&definition.name)),
            ViewConfig::default(),
            Arc::new(SystemClock),
        )
        .await?;
        let cadence = ViewConfig::default().cadence();
        tasks.push(tokio::spawn(run_one(
            Box::new(pipeline),
            cadence,
            stopped.clone(),
        )));
    }
    caught_up(&lake, &ends).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cores_busy = preload::cpu_seconds()
        .zip(cpu)
        .map(|(after, before)| (after - before) / seconds);
    let _ = stop.send(true);
    for task in tasks {
        task.await.context("a view's task failed")??;
    }
    Ok(json!({
        "bench": "view-files",
        "views": definitions.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        "events": events, "seconds": seconds, "events_per_s": events as f64 / seconds,
        "cores_busy": cores_busy, "peak_rss_mib": preload::peak_rss_mib(),
    }))
}

/// Appends the lines of `file` to `stream`, round-robin over its shards (as `sluice produce`
/// without `--key`), `BATCH` lines an append.
async fn load(stream: &Arc<Stream>, file: &PathBuf) -> anyhow::Result<()> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let shards = stream.shards().len();
    let mut batches = stream.batches();
    let (mut n, mut in_batch) = (0usize, 0usize);
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        batches.push((n % shards) as u32, b"", &line)?;
        (n, in_batch) = (n + 1, in_batch + 1);
        if in_batch == BATCH {
            append(stream, std::mem::replace(&mut batches, stream.batches())).await?;
            in_batch = 0;
        }
    }
    append(stream, batches).await
}

async fn append(stream: &Stream, batches: sluice_log::ShardBatches) -> anyhow::Result<()> {
    for part in stream.append(batches).await? {
        let shard = part.shard;
        part.result
            .with_context(|| format!("cannot append to shard {shard}"))?;
    }
    Ok(())
}

/// Waits until each view's table records, for every partition of its input, its end.
async fn caught_up(lake: &Lake, ends: &[(String, BTreeMap<u32, u64>)]) -> anyhow::Result<()> {
    let (mut best, mut since) = (0u64, Instant::now());
    loop {
        let mut done = true;
        let mut taken_all = 0;
        for (name, end) in ends {
            let Ok(table) = lake.open(name).await else {
                done = false;
                continue;
            };
            let taken =
                sluice_pipeline::exactly_once::committed(&table, end.keys().copied()).await?;
            taken_all += taken.values().sum::<u64>();
            done &= end
                .iter()
                .all(|(p, e)| taken.get(p).is_some_and(|t| t >= e));
        }
        if done {
            return Ok(());
        }
        if taken_all > best {
            (best, since) = (taken_all, Instant::now());
        }
        if since.elapsed() > STALL {
            bail!(
                "the views took nothing for {}s ({best} records so far)",
                STALL.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
