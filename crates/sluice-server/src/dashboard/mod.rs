//! The dashboard: its page and assets, compiled into the binary, and what it watches.
//!
//! - `GET /` and `GET /assets/{file}`: a page of plain HTML, CSS and JavaScript (no build step)
//!   and the chart library it draws with, uPlot, vendored with its licence in `dashboard/vendor`.
//! - `GET /v1/live/overview`: server-sent events, the overview (streams with their rates,
//!   views, tables) once a second.
//! - `GET /v1/views/{v}/data` and, live, `GET /v1/live/views/{v}`: what a view page draws, sent
//!   again whenever the view commits something that changes it.
//!
//! - Saved dashboards, their API and live panels: see [`saved`].
//!
//! The server aggregates; the browser never receives a whole table. A windowed view comes as
//! series — the last `windows` window ends (60 by default) of one measure for the `top` keys
//! (10 by default, by the measure's sum over those windows) or the keys asked for. An updating
//! view comes as a page of its rows (100 by default), a stateless one as its newest rows.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use crate::HttpError;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_query::arrow::datatypes::{DataType, Schema};

use crate::{AppState, ServerError, output, sql, status};

pub mod saved;

/// The dashboard's routes: its page, its assets and its live feeds (see the module docs).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .route("/v1/live/overview", get(live_overview))
        .route("/v1/views/{name}/data", get(view_data))
        .route("/v1/live/views/{name}", get(live_view))
        .route("/v1/dashboards", get(saved::list_dashboards))
        .route(
            "/v1/dashboards/{name}",
            get(saved::get_dashboard)
                .put(saved::put_dashboard)
                .delete(saved::delete_dashboard),
        )
        .route("/v1/live/dashboards/{name}", get(saved::live_dashboard))
}

/// The dashboard's files: name, content type, content.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.LICENSE"),
    ),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Revalidated each time: a new binary serves its own dashboard at once.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the dashboard has no file {name:?}"),
        )
        .into_response(),
    }
}

/// How often the overview is pushed, how often a watched view is checked for a commit, and
/// how often at most its data is computed again (a view may commit several times a second).
const OVERVIEW_EVERY: Duration = Duration::from_secs(1);
const VIEW_CHECK_EVERY: Duration = Duration::from_millis(250);
const VIEW_REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Ends `events` when the server stops, so that shutdown does not wait on a watcher.
fn until_stopped<S: Stream>(state: &AppState, events: S) -> impl Stream<Item = S::Item> + use<S> {
    let mut stopping = state.stopping.clone();
    events.take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    })
}

/// An event whose data is `data` as JSON (a failure's message is a JSON string).
fn event(name: &'static str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

async fn live_overview(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold((state.clone(), true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(OVERVIEW_EVERY).await;
        }
        let event = match status::overview(&state).await {
            Ok(overview) => event("overview", &overview),
            Err(e) => event("failure", &json!(e.to_string())),
        };
        Some((Ok(event), (state, false)))
    });
    Sse::new(until_stopped(&state, events)).keep_alive(KeepAlive::default())
}

/// What a view page asks for; every column named must be the view's.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ViewQuery {
    /// Windowed: the column whose values are the lines (the first text column by default).
    key: Option<String>,
    /// Windowed: the column drawn (the first numeric one by default).
    measure: Option<String>,
    /// Windowed: the keys to draw, comma-separated (else the top ones).
    keys: Option<String>,
    /// Windowed: how many keys, at most [`MAX_TOP`].
    top: Option<usize>,
    /// Windowed: how many of the last window ends, at most [`MAX_WINDOWS`].
    windows: Option<usize>,
    /// Rows: the column to sort by (an updating view's first key by default), and the order.
    sort: Option<String>,
    desc: Option<bool>,
    /// Rows: how many, at most [`MAX_ROWS`].
    limit: Option<usize>,
}

/// Most keys a windowed view's chart draws: what the browser is sent stays small.
pub const MAX_TOP: usize = 50;
/// Most window ends a windowed view's chart draws.
pub const MAX_WINDOWS: usize = 1000;
/// Most rows of an updating or stateless view one page shows.
pub const MAX_ROWS: usize = 1000;

async fn view_data(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<axum::Json<Value>, HttpError> {
    Ok(axum::Json(data(&state, &name, &query).await?))
}

async fn live_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    /// What a watcher has seen: the view's last commit it computed the data for, when, and the
    /// last event it sent (nothing is sent twice in a row).
    struct Watch {
        state: AppState,
        name: String,
        query: ViewQuery,
        commit: Option<Option<u64>>,
        computed: Option<tokio::time::Instant>,
        sent: Option<(&'static str, String)>,
    }
    let watch = Watch {
        state: state.clone(),
        name,
        query,
        commit: None,
        computed: None,
        sent: None,
    };
    let events = futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(at) = watch.computed {
                tokio::time::sleep_until(at + VIEW_REFRESH_EVERY).await;
            }
            let views = watch.state.pipelines.view_statuses();
            let next = match views.into_iter().find(|v| v.name == watch.name) {
                None => {
                    // Watched again from scratch if it is created again.
                    watch.commit = None;
                    let gone = format!("materialized view '{}' does not exist", watch.name);
                    Some(("failure", json!(gone)))
                }
                Some(view) if watch.commit == Some(view.last_commit_ms) => None,
                Some(view) => {
                    watch.computed = Some(tokio::time::Instant::now());
                    match data(&watch.state, &watch.name, &watch.query).await {
                        Ok(data) => {
                            watch.commit = Some(view.last_commit_ms);
                            Some(("data", data))
                        }
                        // Tried again at the next check: the commit stays unseen.
                        Err(e) => Some(("failure", json!(e.message))),
                    }
                }
            };
            if let Some((name, data)) = next {
                let text = data.to_string();
                if watch.sent.as_ref() != Some(&(name, text.clone())) {
                    watch.sent = Some((name, text));
                    return Some((Ok(event(name, &data)), watch));
                }
            }
            tokio::time::sleep(VIEW_CHECK_EVERY).await;
        }
    });
    Sse::new(until_stopped(&state, events)).keep_alive(KeepAlive::default())
}

/// What the view's page shows: series for a windowed view, rows for the others.
pub async fn data(state: &AppState, name: &str, query: &ViewQuery) -> Result<Value, HttpError> {
    let view = state
        .pipelines
        .view_statuses()
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| {
            HttpError::of(&sluice_pipeline::PipelineError::ViewNotFound(
                name.to_string(),
            ))
        })?;
    let table = state.lake.open(name).await.map_err(ServerError::from)?;
    let schema = table.arrow_schema().map_err(ServerError::from)?;
    let columns = Columns::of(&schema);
    let windowed = view.kind == Some(sluice_pipeline::Kind::Windowed);
    if windowed && columns.has("window_end") && !columns.numbers.is_empty() {
        series(state, name, &columns, query).await
    } else {
        let total = table.stats().map_err(ServerError::from)?.rows;
        rows(state, name, &columns, &view.keys, total, query).await
    }
}

/// A view's columns, by what the page can do with them.
struct Columns {
    all: Vec<String>,
    /// Text columns: what can name a line.
    texts: Vec<String>,
    /// Numeric columns: what can be drawn.
    numbers: Vec<String>,
    /// Timestamp columns: what orders the newest rows.
    times: Vec<String>,
}

impl Columns {
    fn of(schema: &Schema) -> Columns {
        let named = |keep: fn(&DataType) -> bool| -> Vec<String> {
            schema
                .fields()
                .iter()
                .filter(|f| keep(f.data_type()))
                .map(|f| f.name().clone())
                .collect()
        };
        Columns {
            all: named(|_| true),
            texts: named(|t| match t {
                DataType::Dictionary(_, value) => value.is_string(),
                t => t.is_string(),
            }),
            numbers: named(|t| t.is_numeric()),
            times: named(|t| matches!(t, DataType::Timestamp(..))),
        }
    }

    fn has(&self, column: &str) -> bool {
        self.all.iter().any(|c| c == column)
    }

    /// `asked` if it is a column of `among`, else the first of `among` (`None` if it is empty).
    fn pick(
        &self,
        asked: &Option<String>,
        among: &[String],
        what: &str,
    ) -> Result<Option<String>, HttpError> {
        match asked {
            Some(column) if among.contains(column) => Ok(Some(column.clone())),
            Some(column) => Err(HttpError::bad_request(
                "invalid_request",
                format!("{what} {column:?} is not one of the view's columns {among:?}"),
            )),
            None => Ok(among.first().cloned()),
        }
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn bounded(
    asked: Option<usize>,
    default: usize,
    max: usize,
    what: &str,
) -> Result<usize, HttpError> {
    match asked.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(HttpError::bad_request(
            "invalid_request",
            format!("{what} {n} is not within 1..={max}"),
        )),
    }
}

/// Who the dashboard's queries run as, whoever watches: its own, and saved panels'. They only
/// read.
fn reader() -> crate::auth::Caller {
    crate::auth::Caller {
        name: "dashboard".into(),
        role: sluice_auth::Role::ReadOnly,
    }
}

/// Runs one query as [`reader`]: `{"columns", "rows", "truncated"}`, at most `max_rows` rows.
async fn answer(
    state: &AppState,
    statement: sluice_sql::Statement,
    max_rows: usize,
) -> Result<Value, ServerError> {
    let (schema, mut batches) = sql::answer(state, &reader(), statement).await?;
    let truncated = output::truncate(&mut batches, max_rows);
    let mut answer = output::json_answer(&schema, &batches)
        .map_err(|e| ServerError::Internal(format!("cannot write the answer: {e}")))?;
    answer["truncated"] = json!(truncated);
    Ok(answer)
}

/// Runs one query of the dashboard's making; the rows as JSON arrays.
async fn run(state: &AppState, text: &str) -> Result<(Vec<Value>, Vec<Value>), HttpError> {
    let mut statements = sluice_sql::parse(text).map_err(ServerError::from)?;
    let statement = statements
        .pop()
        .ok_or_else(|| HttpError::from(ServerError::Internal(format!("no statement in {text}"))))?;
    let answer = answer(state, statement, usize::MAX).await?;
    let take = |field: &str| answer[field].as_array().cloned().unwrap_or_default();
    Ok((take("columns"), take("rows")))
}

/// A windowed view as `{"x": [window end, in s], "series": [{"key", "values": [...]}]}`,
/// aligned on x (null where a key has no row), keys by their sum over the windows shown; a
/// key's rows of one window (other group columns) are summed.
async fn series(
    state: &AppState,
    name: &str,
    columns: &Columns,
    query: &ViewQuery,
) -> Result<Value, HttpError> {
    let key = columns.pick(&query.key, &columns.texts, "key")?;
    let measure = columns
        .pick(&query.measure, &columns.numbers, "measure")?
        .expect("a windowed view with numbers is drawn");
    let top = bounded(query.top, 10, MAX_TOP, "top")?;
    let windows = bounded(query.windows, 60, MAX_WINDOWS, "windows")?;
    let view = quote(name);
    let key_expr = key.as_ref().map_or("'all'".to_string(), |k| {
        format!("CAST({} AS VARCHAR)", quote(k))
    });
    let (picked, top) = match query.keys.as_deref().filter(|k| !k.is_empty()) {
        Some(keys) => {
            let keys: Vec<String> = keys.split(',').take(MAX_TOP).map(literal).collect();
            (
                format!("AND {key_expr} IN ({})", keys.join(", ")),
                keys.len(),
            )
        }
        None => (String::new(), top),
    };
    // Two scans: the window ends alone, then the windows shown, their files pruned by their
    // statistics; the top keys are picked here, from at most `windows` rows per key.
    let since = format!(
        "SELECT to_unixtime(min(e)) FROM \
         (SELECT DISTINCT window_end AS e FROM {view} ORDER BY e DESC LIMIT {windows})"
    );
    let (_, since) = run(state, &since).await?;
    let rows = match since.first().and_then(|r| r[0].as_i64()) {
        Some(since) => {
            let text = format!(
                "SELECT to_unixtime(window_end) AS t, {key_expr} AS k, \
                 sum(CAST({m} AS DOUBLE)) AS v FROM {view} \
                 WHERE window_end >= to_timestamp_seconds({since}) {picked} GROUP BY 1, 2",
                m = quote(&measure),
            );
            run(state, &text).await?.1
        }
        None => Vec::new(),
    };
    let mut x: Vec<i64> = rows.iter().filter_map(|r| r[0].as_i64()).collect();
    x.sort_unstable();
    x.dedup();
    let mut totals: HashMap<&str, f64> = HashMap::new();
    for row in &rows {
        let total = totals
            .entry(row[1].as_str().unwrap_or_default())
            .or_default();
        *total += row[2].as_f64().unwrap_or(0.0);
    }
    let mut keys: Vec<(&str, f64)> = totals.into_iter().collect();
    keys.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    keys.truncate(top);
    let series: Vec<Value> = keys
        .iter()
        .map(|&(key, _)| {
            let mut values = vec![Value::Null; x.len()];
            for row in rows.iter().filter(|r| r[1].as_str() == Some(key)) {
                if let Ok(i) = x.binary_search(&row[0].as_i64().unwrap_or_default()) {
                    values[i] = row[2].clone();
                }
            }
            json!({ "key": key, "values": values })
        })
        .collect();
    Ok(json!({
        "kind": "series",
        "key": key,
        "measure": measure,
        "keys": columns.texts,
        "measures": columns.numbers,
        "x": x,
        "series": series,
    }))
}

/// A page of an updating view's rows (by its keys unless `sort` says otherwise), or a view's
/// newest rows (by its first timestamp column); `total` is the table's row count.
async fn rows(
    state: &AppState,
    name: &str,
    columns: &Columns,
    keys: &[String],
    total: u64,
    query: &ViewQuery,
) -> Result<Value, HttpError> {
    let limit = bounded(query.limit, 100, MAX_ROWS, "limit")?;
    let default_sort = keys.first().or(columns.times.first()).cloned();
    let sort = match &query.sort {
        Some(_) => columns.pick(&query.sort, &columns.all, "sort")?,
        None => default_sort,
    };
    // Newest first unless the rows go by their key.
    let desc = query.desc.unwrap_or(keys.is_empty());
    let order = match &sort {
        Some(sort) => {
            let direction = if desc { "DESC" } else { "ASC" };
            let then: Vec<String> = keys.iter().map(|k| quote(k)).collect();
            let then = if then.is_empty() {
                String::new()
            } else {
                format!(", {}", then.join(", "))
            };
            format!("ORDER BY {} {direction} NULLS LAST{then}", quote(sort))
        }
        None => String::new(),
    };
    let view = quote(name);
    let (columns, rows) = run(
        state,
        &format!("SELECT * FROM {view} {order} LIMIT {limit}"),
    )
    .await?;
    Ok(json!({
        "kind": "rows",
        "columns": columns,
        "rows": rows,
        "keys": keys,
        "sort": sort,
        "desc": desc,
        "total": total,
    }))
}
