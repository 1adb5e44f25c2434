//! `sluice replay FILES… --stream S`: historical events into a stream, as a live feed would
//! have sent them.
//!
//! ```text
//!  Parquet · CSV · NDJSON, local or s3:// (globs) ──► DataFusion: every file, one table,
//!      sorted by --event-time ──► rows as NDJSON ──► chunks due at their Schedule's time
//!      ──► produce's Delivery (one request at a time: the order is kept)
//! ```
//!
//! The pace is the [`Schedule`]'s: `--speed 10x` sends each event when a tenth of its event-time
//! distance from the first has passed; `--rate N` sends N events a second; neither sends as fast
//! as the server takes them. A schedule is a pure function of the events, so tests check pacing
//! without a clock; the replay only sleeps until each chunk is due. A replay that falls behind
//! (the server's backpressure) goes on from where it is, not in a burst. A paced replay ends by
//! saying how long it took beside how long its pace asked (the pacing error).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{
    CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext, col,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::produce::{Delivery, records_url};

#[derive(Args)]
pub struct ReplayArgs {
    /// Parquet, CSV (with a header) or NDJSON files, by extension: paths, globs, or s3:// URLs
    #[arg(required = true)]
    files: Vec<String>,
    /// The stream to send to
    #[arg(long)]
    stream: String,
    /// The Sluice server
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    server: String,
    /// The events' time column: they are sent in its order
    #[arg(long)]
    event_time: Option<String>,
    /// Send at this many times event-time speed (`10x`, `0.5`); needs --event-time
    #[arg(long, value_parser = speed, requires = "event_time", conflicts_with = "rate")]
    speed: Option<f64>,
    /// Send this many events a second [default: as fast as the server takes them]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Take each event's partition key from this field (else round-robin)
    #[arg(long)]
    key: Option<String>,
    /// No progress on stderr
    #[arg(long)]
    quiet: bool,
}

/// `10x`, `10` or `0.5` as a speed factor.
fn speed(text: &str) -> Result<f64, String> {
    let factor: f64 = text
        .trim_end_matches(['x', 'X'])
        .parse()
        .map_err(|_| format!("{text:?} is not a speed: say 10x, 1x or 0.5x"))?;
    match factor.is_finite() && factor > 0.0 {
        true => Ok(factor),
        false => Err(format!("a speed is above 0, not {text}")),
    }
}

/// Events sent at once, at most.
const CHUNK_EVENTS: usize = 10_000;
/// A pace's resolution: events due within this of each other are sent together.
const STEP: Duration = Duration::from_millis(50);

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let frame = read(&args.files, args.event_time.as_deref()).await?;
    let pace = match (args.speed, args.rate) {
        (Some(speed), _) => Pace::Speed(speed),
        (None, Some(rate)) => Pace::Rate(rate),
        (None, None) => Pace::Unpaced,
    };
    let reached = Arc::new(AtomicI64::new(i64::MIN));
    let delivery = Delivery {
        url: records_url(&args.server, &args.stream, args.key.as_deref())?,
        concurrency: 1,
        quiet: args.quiet,
        reached: args.event_time.is_some().then(|| reached.clone()),
    };
    let (chunks_tx, chunks) = mpsc::channel::<Bytes>(2);
    let sending = tokio::spawn(delivery.deliver(chunks));
    let feeding = feed(frame, args.event_time.as_deref(), pace, &reached, chunks_tx).await;
    let sent = sending.await.context("the sender failed")?;
    sent?;
    let paced = feeding?;
    if let (Some(started), false, false) = (paced.started, paced.asked.is_zero(), args.quiet) {
        let took = started.elapsed().as_secs_f64();
        let asked = paced.asked.as_secs_f64();
        eprintln!(
            "replayed in {took:.3} s what the pace asks {asked:.3} s for: {:+.2} %",
            (took - asked) / asked * 100.0
        );
    }
    Ok(())
}

/// How a replay kept its pace: when its first chunk went, and when its last was due after it
/// (time lost behind the server's backpressure makes the replay longer than asked).
struct Paced {
    started: Option<Instant>,
    asked: Duration,
}

/// Every file of `patterns` as one table (columns by name), in `event_time`'s order if given.
async fn read(patterns: &[String], event_time: Option<&str>) -> anyhow::Result<DataFrame> {
    let ctx = SessionContext::new();
    let mut frame: Option<DataFrame> = None;
    for pattern in patterns {
        let paths = match pattern.strip_prefix("s3://") {
            Some(rest) => s3_files(&ctx, rest).await?,
            None => vec![pattern.clone()],
        };
        let name = pattern.to_ascii_lowercase();
        let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
        let read = match extension {
            "parquet" => ctx.read_parquet(paths, ParquetReadOptions::default()).await,
            "csv" => ctx.read_csv(paths, CsvReadOptions::new()).await,
            "json" | "ndjson" | "jsonl" => {
                let options = JsonReadOptions::default()
                    .file_extension(&name[name.len() - extension.len() - 1..]);
                ctx.read_json(paths, options).await
            }
            _ => bail!("{pattern}: replay reads .parquet, .csv, .json, .ndjson and .jsonl files"),
        };
        let read = read.with_context(|| format!("cannot read {pattern}"))?;
        frame = Some(match frame {
            None => read,
            Some(frame) => frame
                .union_by_name(read)
                .context("the files' columns differ")?,
        });
    }
    let frame = frame.context("no files to replay")?;
    match event_time {
        None => Ok(frame),
        Some(column) => {
            if frame.schema().field_with_unqualified_name(column).is_err() {
                bail!("the files have no column {column:?} (--event-time)");
            }
            Ok(frame.sort(vec![col(format!("\"{column}\"")).sort(true, false)])?)
        }
    }
}

/// The files `s3://{rest}` names, the bucket's store registered in `ctx`: a glob (`*`, `?`,
/// `[…]`) is expanded by listing the bucket, since DataFusion expands globs in local paths only.
async fn s3_files(ctx: &SessionContext, rest: &str) -> anyhow::Result<Vec<String>> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let url = url::Url::parse(&format!("s3://{bucket}/"))
        .with_context(|| format!("s3://{rest} is not an s3:// URL"))?;
    let store = sluice_lake::Lake::store_for(&url)?;
    ctx.register_object_store(&url, store.clone());
    let Some(glob_at) = key.find(['*', '?', '[']) else {
        return Ok(vec![format!("s3://{rest}")]);
    };
    let pattern = glob::Pattern::new(key).with_context(|| format!("s3://{rest}: not a glob"))?;
    let folder = key[..glob_at]
        .rsplit_once('/')
        .map_or("", |(folder, _)| folder);
    let mut listed = store.list(Some(&folder.into()));
    let mut files = vec![];
    while let Some(object) = listed.next().await {
        let object = object.with_context(|| format!("cannot list s3://{bucket}/{folder}"))?;
        if pattern.matches(object.location.as_ref()) {
            files.push(format!("s3://{bucket}/{}", object.location));
        }
    }
    if files.is_empty() {
        bail!("no files match s3://{rest}");
    }
    files.sort();
    Ok(files)
}

/// Sends `frame`'s rows as NDJSON, each chunk when `pace` has it due.
async fn feed(
    frame: DataFrame,
    event_time: Option<&str>,
    pace: Pace,
    reached: &AtomicI64,
    chunks: mpsc::Sender<Bytes>,
) -> anyhow::Result<Paced> {
    let mut batches = frame.execute_stream().await?;
    let mut schedule = Schedule::new(pace);
    let mut start: Option<Instant> = None;
    let mut paced = Paced {
        started: None,
        asked: Duration::ZERO,
    };
    while let Some(batch) = batches.next().await {
        let batch = batch.context("cannot read the files")?;
        let times = match event_time {
            Some(column) => Some(millis(&batch, column)?),
            None => None,
        };
        let mut from = 0;
        while from < batch.num_rows() {
            // The rows due by the end of this step, at most CHUNK_EVENTS.
            let due = schedule.next(times.as_ref().map(|t| t[from]));
            let mut to = from + 1;
            while to < batch.num_rows()
                && to - from < CHUNK_EVENTS
                && schedule.peek(times.as_ref().map(|t| t[to])) < due + STEP
            {
                schedule.next(times.as_ref().map(|t| t[to]));
                to += 1;
            }
            // The pace starts with the first chunk (reading and sorting the files come before).
            let now = Instant::now();
            paced.started.get_or_insert(now);
            let start = start.get_or_insert(now);
            if now > *start + due + STEP * 20 {
                // A second behind (backpressure): go on at the pace from here.
                *start = now - due;
            }
            tokio::time::sleep_until(*start + due).await;
            let chunk = ndjson(&batch.slice(from, to - from))?;
            paced.asked = due;
            if chunks.send(chunk).await.is_err() {
                return Ok(paced); // the sender stopped: its error says why
            }
            if let Some(times) = &times {
                reached.store(times[to - 1], Ordering::Relaxed);
            }
            from = to;
        }
    }
    Ok(paced)
}

/// `column` of `batch` as milliseconds since the epoch (a timestamp, a date, or a number of
/// milliseconds); a row without one takes the time of the row before it.
fn millis(batch: &RecordBatch, column: &str) -> anyhow::Result<Vec<i64>> {
    let values = batch
        .column_by_name(column)
        .with_context(|| format!("no column {column:?}"))?;
    let as_millis =
        cast(values, &DataType::Timestamp(TimeUnit::Millisecond, None)).with_context(|| {
            format!(
                "--event-time {column:?} is {}, not a time",
                values.data_type()
            )
        })?;
    let as_millis = as_millis.as_primitive::<TimestampMillisecondType>();
    let mut last = None;
    Ok((0..as_millis.len())
        .map(|i| {
            let at = as_millis
                .is_valid(i)
                .then(|| as_millis.value(i))
                .or(last)
                .unwrap_or(0);
            last = Some(at);
            at
        })
        .collect())
}

/// `batch`'s rows as NDJSON.
fn ndjson(batch: &RecordBatch) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    let mut writer = LineDelimitedWriter::new(&mut out);
    writer.write(batch)?;
    writer.finish()?;
    Ok(Bytes::from(out))
}

/// How fast events are sent.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as the server takes them.
    Unpaced,
    /// At this many times event-time speed.
    Speed(f64),
    /// This many a second.
    Rate(u64),
}

/// When each event is due, from the start of the replay.
struct Schedule {
    pace: Pace,
    /// Events scheduled so far.
    count: u64,
    /// The first event's time (ms), for `Speed`.
    first: Option<i64>,
}

impl Schedule {
    fn new(pace: Pace) -> Schedule {
        Schedule {
            pace,
            count: 0,
            first: None,
        }
    }

    /// When the next event, at event time `at` (ms), is due; it is then scheduled.
    fn next(&mut self, at: Option<i64>) -> Duration {
        let due = self.peek(at);
        self.count += 1;
        if self.first.is_none() {
            self.first = at;
        }
        due
    }

    /// When the next event, at event time `at`, would be due.
    fn peek(&self, at: Option<i64>) -> Duration {
        match self.pace {
            Pace::Unpaced => Duration::ZERO,
            Pace::Rate(rate) => Duration::from_secs_f64(self.count as f64 / rate as f64),
            Pace::Speed(speed) => {
                let since = at
                    .zip(self.first.or(at))
                    .map_or(0, |(at, first)| at - first);
                Duration::from_secs_f64(since.max(0) as f64 / 1000.0 / speed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(pace: Pace, times: &[i64]) -> Vec<u128> {
        let mut schedule = Schedule::new(pace);
        times
            .iter()
            .map(|&t| schedule.next(Some(t)).as_millis())
            .collect()
    }

    #[test]
    fn events_are_due_at_their_event_time_distance_over_the_speed() {
        // Events 0, 1, 1, 10 and 60 s after the first, at 10× speed.
        let times = [1_000_000, 1_001_000, 1_001_000, 1_010_000, 1_060_000];
        assert_eq!(
            schedule(Pace::Speed(10.0), &times),
            [0, 100, 100, 1_000, 6_000]
        );
        assert_eq!(schedule(Pace::Speed(0.5), &times[..2]), [0, 2_000]);
        // Out of order (no --event-time sort): an event before the first is due at once.
        assert_eq!(schedule(Pace::Speed(1.0), &[5_000, 4_000]), [0, 0]);
    }

    #[test]
    fn a_rate_spreads_events_evenly_and_unpaced_sends_at_once() {
        assert_eq!(
            schedule(Pace::Rate(4), &[0, 0, 0, 0, 0]),
            [0, 250, 500, 750, 1_000]
        );
        assert_eq!(schedule(Pace::Unpaced, &[0, 9_999_999]), [0, 0]);
    }

    #[test]
    fn speeds_are_read_as_people_write_them() {
        assert_eq!(speed("10x"), Ok(10.0));
        assert_eq!(speed("0.5"), Ok(0.5));
        assert!(speed("0x").is_err() && speed("fast").is_err() && speed("-2").is_err());
    }
}
