//! What the in-process benchmarks share: a stream made as `CREATE STREAM` makes it, loaded
//! with a canonical workload before the clock starts, and the process's peak memory.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::value::RawValue;
use sluice_gen::{GenOptions, Generator, Workload};
use sluice_log::{Log, Retention, ShardAppend, Stream, StreamOptions};
use tokio::task::{JoinError, JoinSet};

/// Appends in flight while the log is loaded: enough for group commit to share the fsyncs.
const APPENDS_IN_FLIGHT: usize = 4;

/// Creates the stream `create` declares (same parse, same options for the log as the server's).
pub fn create_stream(log: &Log, create: &str) -> anyhow::Result<Arc<Stream>> {
    let Some(sluice_sql::Statement::CreateStream(create)) = sluice_sql::parse(create)
        .with_context(|| format!("cannot parse {create}"))?
        .into_iter()
        .next()
    else {
        bail!("not a CREATE STREAM: {create}");
    };
    let options = StreamOptions {
        shards: create.shards,
        retention: Retention {
            max_age_ms: create.retention_ms,
            max_bytes_per_shard: create.retention_bytes_per_shard,
        },
        definition: create.definition.to_log(),
        elsewhere: None,
    };
    Ok(log.create_stream(&create.name, options)?)
}

/// Appends `events` events of `workload` (seed 42, canonical event times), `batch` an append,
/// each to the shard of its partition key as HTTP ingest with `?key=` would put it (W1 by
/// `ticker`, W2 by `user_id`).
pub async fn append(
    stream: &Arc<Stream>,
    workload: Workload,
    events: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let before: u64 = stream.shards().iter().map(|s| s.bounds().1).sum();
    let key = match workload {
        Workload::Ticks => "ticker",
        _ => "user_id",
    };
    let batch = batch.max(1);
    let mut generator = Generator::new(workload, GenOptions::canonical(workload));
    let mut appends: JoinSet<sluice_log::Result<Vec<ShardAppend>>> = JoinSet::new();
    let mut lines = Vec::new();
    let mut left = events;
    while left > 0 {
        let n = left.min(batch);
        left -= n;
        lines.clear();
        generator.write_events(n, &mut lines);
        let mut batches = stream.batches();
        // Every generated line ends in '\n' and none is empty: n lines, n records.
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let key = field(line, key);
            batches.push(stream.shard_for_key(key), key, line)?;
        }
        while appends.len() >= APPENDS_IN_FLIGHT {
            let Some(done) = appends.join_next().await else {
                break;
            };
            appended(done)?;
        }
        let stream = stream.clone();
        appends.spawn(async move { stream.append(batches).await });
    }
    while let Some(done) = appends.join_next().await {
        appended(done)?;
    }
    let appended = stream.shards().iter().map(|s| s.bounds().1).sum::<u64>() - before;
    if appended != events as u64 {
        bail!("the log took {appended} records, {events} were appended");
    }
    Ok(())
}

/// Fails unless every shard of an append stored its part.
fn appended(done: Result<sluice_log::Result<Vec<ShardAppend>>, JoinError>) -> anyhow::Result<()> {
    for part in done?? {
        let shard = part.shard;
        part.result
            .with_context(|| format!("cannot append to shard {shard}"))?;
    }
    Ok(())
}

/// A top-level text field of a JSON record, as HTTP ingest's `?key=` takes it: nothing for a
/// missing, null or escaped field and for a record that is not JSON.
fn field<'a>(line: &'a [u8], name: &str) -> &'a [u8] {
    let Ok(fields) = serde_json::from_slice::<HashMap<&str, &RawValue>>(line) else {
        return b"";
    };
    match fields.get(name).map(|v| v.get()) {
        Some(v) if v.len() >= 2 && v.starts_with('"') && !v.contains('\\') => {
            &v.as_bytes()[1..v.len() - 1]
        }
        _ => b"",
    }
}

/// The process's peak resident set (VmHWM), in MiB, where /proc tells it.
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// CPU time this process has used (user and system), in seconds, where /proc tells it.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which is in parentheses and may hold spaces): utime is the
    // 12th, stime the 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Per shard, the next sequence number `table`'s last commit recorded (0 for a shard it has not).
pub async fn positions(table: &sluice_lake::LakeTable, shards: usize) -> anyhow::Result<Vec<u64>> {
    let committed =
        sluice_pipeline::exactly_once::committed(table, (0..shards).map(|s| s as u32)).await?;
    Ok((0..shards as u32)
        .map(|s| committed.get(&s).copied().unwrap_or(0))
        .collect())
}
