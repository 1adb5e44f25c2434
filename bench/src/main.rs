//! Load generators for the ingest benchmarks, and the in-process pipeline benchmark. Each run
//! prints one JSON line of figures; `bench/ingest.sh` starts a fresh server per run and reports
//! medians, `bench/pipeline.sh` the same for `pipeline`.
//!
//! - `http`: P producers post W1 events as NDJSON (`?key=ticker`), as fast as acknowledged.
//! - `kinesis-put`: P producers call PutRecords with 500 W1 events each.
//! - `kinesis-get`: reads a stream back with GetShardIterator / GetRecords, one task a shard.
//! - `latency`: W1 events at a steady rate in small requests; request → acknowledgement
//!   percentiles as the client sees them (an upper bound of the server's own).
//! - `freshness` (W4): W1 events at a steady rate; for sampled requests, acknowledgement → the
//!   end of the first `SELECT count(*)` of the raw table that includes them.
//! - `pipeline` (W2, in-process, no server): a log loaded with `clicks` events, then the time the
//!   raw-table pipeline takes to commit them all to `clicks` and `clicks_errors`; see its module.
//! - `view` (W1 or W2, in-process): a log loaded with the workload, then the time a materialized
//!   view takes to commit it all, and its restart after a crash; see its module.
//! - `view-files` (in-process): streams loaded from NDJSON files, then the time views over them
//!   take to commit it all (Nexmark's queries); see its module.
//! - `window-freshness` (W4's windows): a closed 1-second window until it is visible in its
//!   view; see its module.
//! - `kafka-fetch`: a Kafka broker's fetch ceiling through a bare librdkafka consumer; see its
//!   module.
//!
//! Events are generated before the clock starts, so the figures are the server's, not the
//! generator's.

mod files;
mod kafka;
mod pipeline;
mod preload;
mod views;
mod windows;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use sluice_gen::{GenOptions, Generator, Workload};

/// The server's allocator (see the `sluice` binary): `pipeline` runs the server's code in this
/// process, and its peak RSS depends on the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    /// The Sluice server
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    server: String,
    /// The stream (created by the caller)
    #[arg(long, default_value = "ticks")]
    stream: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Http {
        #[arg(long, default_value_t = 4)]
        producers: usize,
        #[arg(long, default_value_t = 4_000_000)]
        events: usize,
        /// Events per request
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Also wait until the stream's raw table holds every event, and time that too
        #[arg(long)]
        lake: bool,
    },
    KinesisPut {
        #[arg(long, default_value_t = 4)]
        producers: usize,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    KinesisGet,
    Latency {
        #[arg(long, default_value_t = 50_000)]
        rate: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Events per request
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    Freshness {
        #[arg(long, default_value_t = 20_000)]
        rate: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Events per request
        #[arg(long, default_value_t = 200)]
        batch: usize,
        /// Probe every n-th request
        #[arg(long, default_value_t = 10)]
        sample: usize,
    },
    /// W2 through the raw-table pipeline, in-process (--server and --stream do not apply)
    Pipeline(pipeline::Options),
    /// W1 through ticks_1m or W2 through the ETL view, in-process, then a restart
    View(views::Options),
    /// Views over streams loaded from NDJSON files, in-process
    ViewFiles(files::Options),
    /// A topic read from its start by a bare librdkafka consumer (--server and --stream do not
    /// apply)
    KafkaFetch {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// Records to read
        #[arg(long)]
        records: u64,
    },
    /// W4's windows: closed 1-second windows of view ticks_1s until visible
    WindowFreshness {
        #[arg(long, default_value_t = 20_000)]
        rate: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Events per request
        #[arg(long, default_value_t = 200)]
        batch: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = reqwest::Client::new();
    let server = cli.server.trim_end_matches('/').to_string();
    let figures = match cli.command {
        Command::Http {
            producers,
            events,
            batch,
            lake,
        } => {
            let url = format!("{server}/v1/streams/{}/records?key=ticker", cli.stream);
            let bodies = ndjson_bodies(events, batch);
            let started = Instant::now();
            let send = {
                let client = client.clone();
                move |body| {
                    let (client, url) = (client.clone(), url.clone());
                    async move { post(&client, &url, "application/x-ndjson", body).await }
                }
            };
            run_producers(producers, bodies, send).await?;
            let secs = started.elapsed().as_secs_f64();
            let mut figures = json!({"bench": "http", "producers": producers, "events": events, "seconds": secs, "events_per_s": events as f64 / secs});
            if lake {
                wait_for_rows(&client, &server, &cli.stream, events).await?;
                let lake_secs = started.elapsed().as_secs_f64();
                figures["lake_seconds"] = json!(lake_secs);
                figures["lake_events_per_s"] = json!(events as f64 / lake_secs);
            }
            figures
        }
        Command::KinesisPut { producers, events } => {
            let bodies = put_records_bodies(&cli.stream, events);
            let started = Instant::now();
            let send = move |body| {
                let (client, server) = (client.clone(), server.clone());
                async move { kinesis(&client, &server, "PutRecords", body).await }
            };
            run_producers(producers, bodies, send).await?;
            let secs = started.elapsed().as_secs_f64();
            json!({"bench": "kinesis-put", "producers": producers, "events": events, "seconds": secs, "events_per_s": events as f64 / secs})
        }
        Command::KinesisGet => {
            let started = Instant::now();
            let events = get_all(&client, &server, &cli.stream).await?;
            let secs = started.elapsed().as_secs_f64();
            json!({"bench": "kinesis-get", "events": events, "seconds": secs, "events_per_s": events as f64 / secs})
        }
        Command::Latency {
            rate,
            seconds,
            batch,
        } => latency(&client, &server, &cli.stream, rate, seconds, batch).await?,
        Command::Freshness {
            rate,
            seconds,
            batch,
            sample,
        } => freshness(&client, &server, &cli.stream, rate, seconds, batch, sample).await?,
        Command::Pipeline(options) => pipeline::run(options).await?,
        Command::View(options) => views::run(options).await?,
        Command::ViewFiles(options) => files::run(options).await?,
        Command::KafkaFetch {
            brokers,
            topic,
            records,
        } => tokio::task::spawn_blocking(move || kafka::run(&brokers, &topic, records)).await??,
        Command::WindowFreshness {
            rate,
            seconds,
            batch,
        } => windows::run(&client, &server, &cli.stream, rate, seconds, batch).await?,
    };
    println!("{figures}");
    Ok(())
}

fn events(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 82);
    Generator::new(Workload::Ticks, GenOptions::canonical(Workload::Ticks))
        .write_events(n, &mut out);
    out
}

/// NDJSON request bodies of `batch` events each.
fn ndjson_bodies(n: usize, batch: usize) -> Vec<Bytes> {
    let all = events(n);
    let lines: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
    lines
        .chunks(batch.max(1))
        .map(|c| Bytes::from(c.concat()))
        .collect()
}

/// PutRecords bodies of 500 events each, keyed by ticker.
fn put_records_bodies(stream: &str, n: usize) -> Vec<Bytes> {
    let all = events(n);
    let lines: Vec<&[u8]> = all
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .chunks(500)
        .map(|chunk| {
            let records: Vec<Value> = chunk
                .iter()
                .map(|line| json!({"Data": STANDARD.encode(line), "PartitionKey": std::str::from_utf8(&line[11..16]).unwrap_or("")}))
                .collect();
            Bytes::from(json!({"StreamName": stream, "Records": records}).to_string())
        })
        .collect()
}

/// Sends every body, `producers` at a time, each producer waiting for its answer.
async fn run_producers<F, Fut>(producers: usize, bodies: Vec<Bytes>, send: F) -> anyhow::Result<()>
where
    F: Fn(Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Value>> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (queue, send) = (queue.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").next();
                let Some(body) = next else {
                    return Ok::<_, anyhow::Error>(());
                };
                send(body).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Bytes,
) -> anyhow::Result<Value> {
    loop {
        let r = client
            .post(url)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await?;
        let status = r.status();
        let text = r.bytes().await?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&text));
        }
        return serde_json::from_slice(&text).context("answer is not JSON");
    }
}

async fn kinesis(
    client: &reqwest::Client,
    server: &str,
    operation: &str,
    body: Bytes,
) -> anyhow::Result<Value> {
    let r = client
        .post(format!("{server}/"))
        .header("x-amz-target", format!("Kinesis_20131202.{operation}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let text = r.bytes().await?;
    if !status.is_success() {
        bail!("{operation}: {status}: {}", String::from_utf8_lossy(&text));
    }
    let value: Value = serde_json::from_slice(&text).context("answer is not JSON")?;
    if value["FailedRecordCount"].as_u64().unwrap_or(0) > 0 {
        bail!("{operation}: some records failed: {}", value["Records"][0]);
    }
    Ok(value)
}

/// Reads every record of every shard from TRIM_HORIZON; returns how many.
async fn get_all(client: &reqwest::Client, server: &str, stream: &str) -> anyhow::Result<u64> {
    let description = kinesis(
        client,
        server,
        "DescribeStream",
        Bytes::from(json!({"StreamName": stream}).to_string()),
    )
    .await?;
    let shards: Vec<String> = description["StreamDescription"]["Shards"]
        .as_array()
        .context("no shards")?
        .iter()
        .filter_map(|s| s["ShardId"].as_str().map(String::from))
        .collect();
    let mut tasks = Vec::new();
    for shard in shards {
        let (client, server, stream) = (client.clone(), server.to_string(), stream.to_string());
        tasks.push(tokio::spawn(async move {
            let body = json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"});
            let mut iterator = kinesis(&client, &server, "GetShardIterator", Bytes::from(body.to_string())).await?["ShardIterator"]
                .as_str()
                .context("no iterator")?
                .to_string();
            let mut count = 0u64;
            loop {
                let body = json!({"ShardIterator": iterator, "Limit": 10000}).to_string();
                let r = client
                    .post(format!("{server}/"))
                    .header("x-amz-target", "Kinesis_20131202.GetRecords")
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("GetRecords: {}", r.status());
                }
                // Count the records without building them: the figure is the server's.
                let page: GetRecordsPage = serde_json::from_slice(&r.bytes().await?)?;
                count += page.records.len() as u64;
                if page.records.is_empty() && page.millis_behind_latest == 0 {
                    return Ok::<_, anyhow::Error>(count);
                }
                iterator = page.next_shard_iterator;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// Polls the stream's raw table until it holds `rows` rows.
async fn wait_for_rows(
    client: &reqwest::Client,
    server: &str,
    table: &str,
    rows: usize,
) -> anyhow::Result<()> {
    let sql = Bytes::from(json!({"sql": format!("SELECT count(*) FROM {table}")}).to_string());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let answer = post(
            client,
            &format!("{server}/v1/sql"),
            "application/json",
            sql.clone(),
        )
        .await?;
        if answer["rows"][0][0].as_u64() == Some(rows as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the raw table did not reach {rows} rows: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsPage {
    records: Vec<serde::de::IgnoredAny>,
    next_shard_iterator: String,
    millis_behind_latest: u64,
}

/// Steady load: a request of `batch` events every `batch / rate` seconds, each on its own task
/// so that a slow answer does not delay the next request.
async fn latency(
    client: &reqwest::Client,
    server: &str,
    stream: &str,
    rate: usize,
    seconds: u64,
    batch: usize,
) -> anyhow::Result<Value> {
    let url = format!("{server}/v1/streams/{stream}/records?key=ticker");
    let requests = rate * seconds as usize / batch;
    let bodies = ndjson_bodies(requests * batch, batch);
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for (i, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            post(&client, &url, "application/x-ndjson", body).await?;
            Ok::<_, anyhow::Error>(sent.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await??.as_secs_f64() * 1000.0);
    }
    let (p50, p99, max) = percentiles(latencies);
    Ok(json!({
        "bench": "latency", "rate": rate, "batch": batch, "requests": requests,
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
    }))
}

/// p50, p99 and max of `samples`.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (pct(0.50), pct(0.99), samples[samples.len() - 1])
}

/// W4: one producer sends a request of `batch` events every `batch / rate` seconds, each after
/// the previous one was acknowledged, so the acknowledged events are always a prefix of the
/// input and `count(*) >= n` means the first n are visible. After every `sample`-th
/// acknowledgement a probe queries the raw table until the count includes that request; the
/// figure is acknowledgement → end of that query.
async fn freshness(
    client: &reqwest::Client,
    server: &str,
    stream: &str,
    rate: usize,
    seconds: u64,
    batch: usize,
    sample: usize,
) -> anyhow::Result<Value> {
    let url = format!("{server}/v1/streams/{stream}/records?key=ticker");
    let requests = rate * seconds as usize / batch;
    let bodies = ndjson_bodies(requests * batch, batch);
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
    let sql = Bytes::from(json!({"sql": format!("SELECT count(*) FROM {stream}")}).to_string());
    let started = Instant::now();
    let mut probes = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        post(client, &url, "application/x-ndjson", body).await?;
        let acknowledged = Instant::now();
        if i % sample != 0 {
            continue;
        }
        let (client, sql_url, sql, expected) = (
            client.clone(),
            format!("{server}/v1/sql"),
            sql.clone(),
            ((i + 1) * batch) as u64,
        );
        probes.push(tokio::spawn(async move {
            loop {
                let answer = post(&client, &sql_url, "application/json", sql.clone()).await?;
                let count = answer["rows"][0][0]
                    .as_u64()
                    .context("count(*) answered no count")?;
                if count >= expected {
                    return Ok::<_, anyhow::Error>(acknowledged.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(probes.len());
    for p in probes {
        latencies.push(p.await??);
    }
    let (p50, p99, max) = percentiles(latencies);
    Ok(json!({
        "bench": "freshness", "rate": rate, "batch": batch, "samples": requests.div_ceil(sample),
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
    }))
}
