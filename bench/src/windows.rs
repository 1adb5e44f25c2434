//! `window-freshness` (W4, its second half): how soon a closed window's result is visible.
//!
//! The caller creates the stream (`event_time = 'ts'`, `watermark = '0 seconds'`) and a view of
//! 1-second tumbling windows over it, `ticks_1s`. One producer sends W1-shaped events stamped
//! with the wall clock, a request of `batch` every `batch / rate` seconds, each after the
//! previous was acknowledged; a poller asks `SELECT max(window_end) FROM ticks_1s` every 10 ms.
//!
//! A window `[e - 1 s, e)` closes when the watermark passes `e`: when every shard has an event
//! at or after `e`. Its close is taken as the acknowledgement of the first request whose events
//! are all at or after `e` (a request's 200 events cover every shard); it is visible at the end
//! of the first poll that shows a `window_end` at or after `e`. The figure is the difference.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{percentiles, post};

const VIEW: &str = "ticks_1s";

/// When something about a time was seen: a request's earliest event time and its
/// acknowledgement, or a window end and the end of the poll that showed it.
type Seen = Vec<(DateTime<Utc>, Instant)>;
const POLL: Duration = Duration::from_millis(10);

pub async fn run(
    client: &reqwest::Client,
    server: &str,
    stream: &str,
    rate: usize,
    seconds: u64,
    batch: usize,
) -> anyhow::Result<Value> {
    let url = format!("{server}/v1/streams/{stream}/records?key=ticker");
    let requests = rate * seconds as usize / batch;
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let polling = {
        let (client, seen) = (client.clone(), seen.clone());
        let sql = Bytes::from(
            json!({"sql": format!("SELECT max(window_end) AS e FROM {VIEW}")}).to_string(),
        );
        let sql_url = format!("{server}/v1/sql");
        tokio::spawn(async move {
            loop {
                let answer = post(&client, &sql_url, "application/json", sql.clone()).await?;
                if let Some(end) = answer["rows"][0][0].as_str() {
                    let end = DateTime::parse_from_rfc3339(end)
                        .with_context(|| format!("window_end {end:?}"))?
                        .with_timezone(&Utc);
                    seen.lock().expect("seen lock").push((end, Instant::now()));
                }
                tokio::time::sleep(POLL).await;
            }
            #[allow(unreachable_code)]
            Ok::<_, anyhow::Error>(())
        })
    };

    let mut sent: Seen = Vec::with_capacity(requests);
    let started = Instant::now();
    for i in 0..requests {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let first = Utc::now();
        let mut body = Vec::with_capacity(batch * 90);
        for j in 0..batch {
            let ts = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let event = json!({"ticker": format!("T{:03}", (i * batch + j) % 500), "price": 100.5, "volume": 100, "ts": ts.to_string()});
            serde_json::to_writer(&mut body, &event)?;
            body.push(b'\n');
        }
        post(client, &url, "application/x-ndjson", Bytes::from(body)).await?;
        sent.push((first, Instant::now()));
    }
    // The last windows close with the producer's last events: give them time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    polling.abort();

    let seen = seen.lock().expect("seen lock").clone();
    let first = sent.first().context("no request was sent")?.0;
    let last = sent.last().context("no request was sent")?.0;
    let mut latencies = Vec::new();
    let mut end = DateTime::from_timestamp(first.timestamp() + 2, 0).context("a time")?;
    while end < last {
        let closed = sent.iter().find(|(t, _)| *t >= end).map(|(_, at)| *at);
        let visible = seen.iter().find(|(e, _)| *e >= end).map(|(_, at)| *at);
        if let (Some(closed), Some(visible)) = (closed, visible) {
            latencies.push(visible.saturating_duration_since(closed).as_secs_f64() * 1000.0);
        }
        end += chrono::Duration::seconds(1);
    }
    anyhow::ensure!(!latencies.is_empty(), "no window was seen closing");
    let windows = latencies.len();
    let (p50, p99, max) = percentiles(latencies);
    Ok(json!({
        "bench": "window-freshness", "rate": rate, "batch": batch, "windows": windows,
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
    }))
}
