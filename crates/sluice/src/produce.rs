//! `sluice produce STREAM`: NDJSON from stdin to a stream, in pipelined batches.
//!
//! Stdin is cut into requests of about `--batch-bytes` at line ends; `--concurrency` requests
//! are in flight at once (so requests may overtake each other: use `--concurrency 1` where the
//! order across requests matters). A 503 (the server's backpressure) is retried after its
//! `Retry-After`, for as long as it takes; a refused request (4xx) stops the run with the
//! server's message. Progress goes to stderr every second. That sending is [`Delivery`]'s,
//! which `sluice replay` shares.
//!
//! `--rate N` replays stdin (a historical file, say) at N events a second, sent in steps of
//! 50 ms; `--loop` starts over at its end, without end (stdin is then held in memory).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Args)]
pub struct ProduceArgs {
    /// The stream to send to
    stream: String,
    /// The Sluice server
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    server: String,
    /// Take each event's partition key from this top-level field (else round-robin)
    #[arg(long)]
    key: Option<String>,
    /// About how many bytes each request carries
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Requests in flight at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Send this many events a second [default: as fast as the server takes them]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// At the end of stdin, start over (needs --rate)
    #[arg(long = "loop", requires = "rate")]
    repeat: bool,
    /// No progress on stderr
    #[arg(long)]
    quiet: bool,
}

/// Attempts at a request that fails to connect, before the run gives up.
const CONNECT_ATTEMPTS: u32 = 10;

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let url = records_url(&args.server, &args.stream, args.key.as_deref())?;
    let (chunks_tx, chunks) = mpsc::channel::<Bytes>(usize::from(args.concurrency));
    let batch_bytes = args.batch_bytes.max(1);
    let (rate, repeat) = (args.rate, args.repeat);
    let reader = std::thread::spawn(move || match rate {
        Some(rate) => read_paced(rate, repeat, batch_bytes, chunks_tx),
        None => read_chunks(batch_bytes, chunks_tx),
    });
    let delivery = Delivery {
        url,
        concurrency: args.concurrency,
        quiet: args.quiet,
        reached: None,
    };
    let delivered = delivery.deliver(chunks).await;
    let read = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdin reader panicked"))?;
    delivered?;
    read
}

/// The ingest URL of `stream` on `server`, with the partition key field, if any.
pub fn records_url(server: &str, stream: &str, key: Option<&str>) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(server)
        .with_context(|| format!("--server {server:?} is not a URL"))?
        .join(&format!("v1/streams/{stream}/records"))
        .context("cannot build the ingest URL")?;
    if let Some(key) = key {
        url.query_pairs_mut().append_pair("key", key);
    }
    Ok(url)
}

/// How chunks of NDJSON are sent to a stream.
pub struct Delivery {
    /// The stream's ingest URL ([`records_url`]).
    pub url: reqwest::Url,
    /// Requests in flight at once (1 keeps the chunks' order).
    pub concurrency: u16,
    /// No progress on stderr.
    pub quiet: bool,
    /// The event time the chunks sent so far reach (ms since the epoch), for the progress line.
    pub reached: Option<Arc<AtomicI64>>,
}

impl Delivery {
    /// Sends every chunk `chunks` hands on, reporting progress each second; fails at the first
    /// request the server refuses (and stops taking chunks, so their sender sees it).
    pub async fn deliver(self, mut chunks: mpsc::Receiver<Bytes>) -> anyhow::Result<()> {
        let client = crate::client()?;
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let progress = (!self.quiet)
            .then(|| tokio::spawn(report_progress(sent.clone(), self.reached.clone(), started)));
        let mut in_flight = JoinSet::new();
        let mut outcome = Ok(());
        while let Some(chunk) = chunks.recv().await {
            while in_flight.len() >= usize::from(self.concurrency) {
                if let Some(done) = in_flight.join_next().await {
                    outcome = outcome.and(done.context("a request task failed")?);
                }
            }
            if outcome.is_err() {
                break;
            }
            let (client, url, sent) = (client.clone(), self.url.clone(), sent.clone());
            in_flight.spawn(async move {
                let accepted = send(&client, &url, chunk).await?;
                sent.fetch_add(accepted, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(done) = in_flight.join_next().await {
            outcome = outcome.and(done.context("a request task failed")?);
        }
        if let Some(progress) = progress {
            progress.abort();
        }
        outcome?;
        let total = sent.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        if !self.quiet {
            eprintln!(
                "\rsent {total} events in {secs:.1} s ({:.0} events/s)          ",
                total as f64 / secs.max(1e-9)
            );
        }
        Ok(())
    }
}

/// Reads stdin into chunks of whole lines of about `batch_bytes`.
fn read_chunks(batch_bytes: usize, chunks: mpsc::Sender<Bytes>) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut pending: Vec<u8> = Vec::with_capacity(batch_bytes * 2);
    loop {
        let start = pending.len();
        pending.resize(start.max(batch_bytes).max(start + 64 * 1024), 0);
        let n = stdin
            .read(&mut pending[start..])
            .context("cannot read stdin")?;
        pending.truncate(start + n);
        let at_end = n == 0;
        if pending.len() >= batch_bytes || at_end {
            let cut = if at_end {
                pending.len()
            } else {
                match memchr::memrchr(b'\n', &pending) {
                    Some(i) => i + 1,
                    None => continue, // one line longer than a batch: read on
                }
            };
            let rest = pending.split_off(cut);
            let chunk = std::mem::replace(&mut pending, rest);
            if chunk.iter().any(|b| !b.is_ascii_whitespace())
                && chunks.blocking_send(Bytes::from(chunk)).is_err()
            {
                return Ok(()); // the sender stopped (a request failed)
            }
        }
        if at_end {
            return Ok(());
        }
    }
}

/// Paced steps a second.
const STEPS_PER_SECOND: u64 = 20;

/// Reads stdin line by line and hands on `rate` lines a second, in steps of 1/20 s (or of
/// `batch_bytes`, if smaller); with `repeat`, starts over at its end.
fn read_paced(
    rate: u64,
    repeat: bool,
    batch_bytes: usize,
    chunks: mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut lines = if repeat {
        let mut all = Vec::new();
        stdin.read_to_end(&mut all).context("cannot read stdin")?;
        if all.iter().all(u8::is_ascii_whitespace) {
            all.clear(); // nothing to repeat
        }
        Lines::Again { all, at: 0 }
    } else {
        Lines::Once(stdin)
    };
    let step = (rate / STEPS_PER_SECOND).max(1);
    let mut started = Instant::now();
    let mut sent = 0u64;
    loop {
        let mut chunk = Vec::new();
        let mut in_chunk = 0;
        while in_chunk < step && chunk.len() < batch_bytes && lines.next_into(&mut chunk)? {
            in_chunk += 1;
        }
        if in_chunk == 0 {
            return Ok(()); // the end of stdin (or nothing to repeat)
        }
        if chunks.blocking_send(Bytes::from(chunk)).is_err() {
            return Ok(()); // the sender stopped (a request failed)
        }
        sent += in_chunk;
        let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
        let now = Instant::now();
        if now > due + Duration::from_secs(1) / STEPS_PER_SECOND as u32 {
            // Behind (a slow server, backpressure): go on at the rate from here, not in a burst.
            (started, sent) = (now, 0);
        }
        std::thread::sleep(due.saturating_duration_since(now));
    }
}

/// Where paced lines come from: stdin once, or all of it held and read again and again.
enum Lines<'a> {
    Once(std::io::StdinLock<'a>),
    /// `all` is empty if stdin held only blank lines.
    Again {
        all: Vec<u8>,
        at: usize,
    },
}

impl Lines<'_> {
    /// Appends the next line that is not blank, with its '\n'; false at the end.
    fn next_into(&mut self, out: &mut Vec<u8>) -> anyhow::Result<bool> {
        use std::io::BufRead;
        loop {
            let start = out.len();
            match self {
                Lines::Once(stdin) => {
                    if stdin.read_until(b'\n', out).context("cannot read stdin")? == 0 {
                        return Ok(false);
                    }
                }
                Lines::Again { all, at } => {
                    if all.is_empty() {
                        return Ok(false);
                    }
                    if *at == all.len() {
                        *at = 0;
                    }
                    let end = memchr::memchr(b'\n', &all[*at..]).map_or(all.len(), |i| *at + i + 1);
                    out.extend_from_slice(&all[*at..end]);
                    *at = end;
                }
            }
            if out[start..].iter().all(u8::is_ascii_whitespace) {
                out.truncate(start);
                continue;
            }
            if out.last() != Some(&b'\n') {
                out.push(b'\n');
            }
            return Ok(true);
        }
    }
}

/// Sends one chunk until it is accepted; returns how many events the server accepted.
async fn send(client: &reqwest::Client, url: &reqwest::Url, chunk: Bytes) -> anyhow::Result<u64> {
    let mut connect_failures = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        let response = client
            .post(url.clone())
            .header("content-type", "application/x-ndjson")
            .body(chunk.clone())
            .send()
            .await;
        match response {
            Err(e) => {
                connect_failures += 1;
                if connect_failures >= CONNECT_ATTEMPTS {
                    bail!("cannot reach {url}: {e}");
                }
            }
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.context("the server's answer was cut off")?;
                let body: serde_json::Value =
                    serde_json::from_slice(&body).context("the server's answer is not JSON")?;
                return Ok(body["accepted"].as_u64().unwrap_or(0));
            }
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                if let Some(secs) = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    backoff = Duration::from_secs_f64(secs.clamp(0.01, 30.0));
                }
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                bail!("the server refused a request ({status}): {text}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn report_progress(sent: Arc<AtomicU64>, reached: Option<Arc<AtomicI64>>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (0u64, Instant::now());
    loop {
        tick.tick().await;
        let now = Instant::now();
        let total = sent.load(Ordering::Relaxed);
        let rate = (total - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-9);
        last = (total, now);
        let position = reached
            .as_ref()
            .map(|ms| ms.load(Ordering::Relaxed))
            .filter(|&ms| ms != i64::MIN)
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|at| format!(", event time {}", at.format("%Y-%m-%d %H:%M:%S")))
            .unwrap_or_default();
        eprint!(
            "\r{total} events, {rate:.0} events/s{position}, {:.0} s          ",
            now.duration_since(started).as_secs_f64()
        );
    }
}
