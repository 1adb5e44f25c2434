//! What is running and how it is doing: `GET /v1/streams` (with each stream's live rate),
//! `/v1/views`, `/v1/tables` and `/v1/streams/{s}/recent`, the overview the dashboard watches.
//!
//! Stream rates come from [`StreamRates`], sampled once a second by the server's upkeep from
//! the shards' end positions (which only grow, whatever retention deletes). Table statistics
//! come from the tables' Delta logs, never their data files, and are kept for
//! [`TABLES_MAX_AGE`] so that many watchers cost one look.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::HttpError;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_log::{Log, Stream};

use crate::{AppState, ServerError, sql};

/// Seconds of rate history kept per stream (the dashboard's sparklines).
pub const RATE_HISTORY: usize = 60;
const MIN_SAMPLE_GAP: Duration = Duration::from_millis(500);

/// Events per second of every stream over the last [`RATE_HISTORY`] seconds.
#[derive(Default)]
pub struct StreamRates {
    streams: Mutex<HashMap<String, Sampled>>,
}

struct Sampled {
    /// The stream's incarnation: one created again under the name starts afresh.
    id: u64,
    at: Instant,
    /// Records ever appended: the sum of the shards' end positions.
    appended: u64,
    /// Oldest first.
    rates: VecDeque<f64>,
}

impl StreamRates {
    /// Takes a sample of every stream; forgets the dropped ones.
    pub fn sample(&self, log: &Log) {
        let now = Instant::now();
        let mut sampled = self.streams.lock().expect("rates lock");
        let streams = log.streams();
        sampled.retain(|name, s| streams.iter().any(|t| t.name() == name && t.id() == s.id));
        for stream in streams {
            let appended: u64 = stream.shards().iter().map(|s| s.bounds().1).sum();
            let id = stream.id();
            match sampled.get_mut(stream.name()) {
                // Too soon after the last sample to say anything of a rate.
                Some(s) if now.duration_since(s.at) < MIN_SAMPLE_GAP => {}
                Some(s) => {
                    let secs = now.duration_since(s.at).as_secs_f64();
                    s.rates
                        .push_back(appended.saturating_sub(s.appended) as f64 / secs);
                    if s.rates.len() > RATE_HISTORY {
                        s.rates.pop_front();
                    }
                    (s.at, s.appended) = (now, appended);
                }
                None => {
                    let first = Sampled {
                        id,
                        at: now,
                        appended,
                        rates: VecDeque::new(),
                    };
                    sampled.insert(stream.name().to_string(), first);
                }
            }
        }
    }

    /// The stream's rates, oldest first (empty before its second sample).
    pub fn rates(&self, stream: &str) -> Vec<f64> {
        let sampled = self.streams.lock().expect("rates lock");
        sampled
            .get(stream)
            .map(|s| s.rates.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// `GET /v1/streams`: every stream, its shards, definition, size and rates.
pub async fn list_streams(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "streams": streams(&state) }))
}

fn streams(state: &AppState) -> Vec<Value> {
    state
        .log
        .streams()
        .iter()
        .map(|s| stream_status(state, s))
        .collect()
}

fn stream_status(state: &AppState, s: &Stream) -> Value {
    let meta = s.meta();
    let (records, bytes) = sql::stream_size(s);
    let shards: Vec<_> = s
        .shards()
        .iter()
        .map(|shard| {
            let (start, end) = shard.bounds();
            let (bytes, segments) = shard.size();
            json!({"shard": shard.id(), "start_seq": start, "end_seq": end, "bytes": bytes, "segments": segments})
        })
        .collect();
    let rates = state.rates.rates(&meta.name);
    let pipeline = state.pipelines.stream_status(&meta.name);
    json!({
        "name": meta.name,
        "shards": meta.shards,
        "records": records,
        "bytes": bytes,
        "rate": rates.last().copied().unwrap_or(0.0),
        "rates": rates,
        "created_ms": meta.created_ms,
        "retention_ms": meta.retention.max_age_ms,
        "definition": meta.definition,
        // Where its records come from when not from Sluice's doors (a Kafka topic): then its
        // shards hold nothing, and its pipeline's lag is the topic's.
        "reads_from": meta.elsewhere,
        "shard_status": shards,
        // Its raw tables' pipeline, in the shape every pipeline's status has.
        "pipeline": pipeline.as_ref().map(|p| pipeline_json(p, now_ms())),
        // Why its raw tables are not being written (a full disk, an unreachable lake), while so.
        "pipeline_error": pipeline.and_then(|p| p.last_error),
    })
}

/// The wall clock, in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A pipeline's status as the API shows it: its fields, and how long ago it last committed.
fn pipeline_json(status: &sluice_pipeline::PipelineStatus, now_ms: u64) -> Value {
    let since_commit = status.last_commit_ms.map(|at| now_ms.saturating_sub(at));
    let mut json = serde_json::to_value(status).unwrap_or_default();
    json["since_commit_ms"] = json!(since_commit);
    json
}

/// `GET /v1/views`: every view and its pipeline's status.
pub async fn list_views(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "views": views(&state) }))
}

fn views(state: &AppState) -> Vec<Value> {
    let now = now_ms();
    state
        .pipelines
        .view_statuses()
        .iter()
        .map(|status| pipeline_json(status, now))
        .collect()
}

/// How long table statistics are kept before they are read again.
pub const TABLES_MAX_AGE: Duration = Duration::from_secs(3);

/// The statistics of every table of the lake, as last read.
#[derive(Default)]
pub struct TablesCache {
    read: tokio::sync::Mutex<Option<(Instant, Vec<Value>)>>,
}

/// `GET /v1/tables`: every lake table and its statistics.
pub async fn list_tables(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "tables": tables(&state).await }))
}

async fn tables(state: &AppState) -> Vec<Value> {
    let mut read = state.tables.read.lock().await;
    if let Some((at, tables)) = &*read
        && at.elapsed() < TABLES_MAX_AGE
    {
        return tables.clone();
    }
    let views: Vec<String> = state
        .pipelines
        .views()
        .into_iter()
        .map(|v| v.definition.name)
        .collect();
    let mut tables = Vec::new();
    for name in state.lake.table_names() {
        let kind = table_kind(&state.log, &views, &name);
        let stats = match state.lake.open(&name).await.and_then(|t| t.stats()) {
            Ok(stats) => serde_json::to_value(stats).unwrap_or_default(),
            // Dropped since it was listed, or unreadable: said, and the others still shown.
            Err(e) => json!({ "error": e.to_string() }),
        };
        let mut table = json!({ "name": name, "kind": kind });
        if let (Some(table), Value::Object(stats)) = (table.as_object_mut(), stats) {
            table.extend(stats);
        }
        tables.push(table);
    }
    *read = Some((Instant::now(), tables.clone()));
    tables
}

/// `stream`, `view`, `errors` (a stream's or a view's) or `table` (made by SQL).
fn table_kind(log: &Log, views: &[String], name: &str) -> &'static str {
    let owner = |name: &str| log.stream(name).is_ok() || views.iter().any(|v| v == name);
    if log.stream(name).is_ok() {
        "stream"
    } else if views.iter().any(|v| v == name) {
        "view"
    } else if name.strip_suffix("_errors").is_some_and(owner) {
        "errors"
    } else {
        "table"
    }
}

/// Streams, views and tables at once: what the dashboard's overview shows.
pub async fn overview(state: &AppState) -> Result<Value, ServerError> {
    Ok(json!({
        "streams": streams(state),
        "views": views(state),
        "tables": tables(state).await,
    }))
}

/// The query of `GET /v1/streams/{s}/recent`.
#[derive(Deserialize)]
pub struct RecentParams {
    limit: Option<usize>,
}

/// Most records `GET /v1/streams/{s}/recent` answers with.
pub const MAX_RECENT: usize = 1000;

/// `GET /v1/streams/{s}/recent?limit=N`: the stream's last N records (50 by default), newest
/// first, as they were sent, read from the log's tail.
pub async fn recent_records(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<RecentParams>,
) -> Result<Json<Value>, HttpError> {
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_RECENT {
        return Err(HttpError::bad_request(
            "invalid_request",
            format!("limit must be within 1..={MAX_RECENT}"),
        ));
    }
    let stream = state.log.stream(&name)?;
    let records = tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        for shard in stream.shards() {
            let (start, end) = shard.bounds();
            // A read stops at about 4 MiB: read on to the end, keeping the last `limit`.
            let mut newest = VecDeque::with_capacity(limit);
            let mut from = end.saturating_sub(limit as u64).max(start);
            while from < end {
                let read = shard.read(from, limit, 4 << 20)?;
                if read.records.is_empty() {
                    break;
                }
                from = read.next_seq;
                for record in read.records {
                    if newest.len() == limit {
                        newest.pop_front();
                    }
                    newest.push_back((shard.id(), record));
                }
            }
            records.extend(newest);
        }
        records.sort_by_key(|(shard, r)| std::cmp::Reverse((r.append_ms, r.seq, *shard)));
        records.truncate(limit);
        Ok::<_, sluice_log::Error>(records)
    })
    .await
    .map_err(|e| ServerError::Internal(e.to_string()))??;
    let records: Vec<Value> = records
        .into_iter()
        .map(|(shard, r)| {
            json!({
                "shard": shard,
                "seq": r.seq,
                "appended_ms": r.append_ms,
                "data": String::from_utf8_lossy(&r.data),
            })
        })
        .collect();
    Ok(Json(json!({ "records": records })))
}
