//! Saved dashboards: named pages of panels, each a query drawn as a line, bar or area chart, a
//! single number or a table, and run again every few seconds while someone watches.
//!
//! - `GET /v1/dashboards`: every dashboard, in short; `GET /v1/dashboards/{name}`: one, with its
//!   [`Stored::etag`] as `ETag`.
//! - `PUT /v1/dashboards/{name}`: creates or replaces one; `If-None-Match: *` only creates,
//!   `If-Match: <etag>` only replaces what that tag names (the page sends it, so that of two
//!   edits of one version made through one server the second is refused, 409
//!   `dashboard_changed`, rather than lost; through two servers at the same instant, the last
//!   write wins). `DELETE /v1/dashboards/{name}` drops one.
//! - `GET /v1/live/dashboards/{name}`: server-sent events — `dashboard` (the definition, again
//!   whenever it changes), `panel` (a panel's answer or error, again whenever it changes),
//!   `failure` (the dashboard is not there).
//!
//! Invariants:
//!
//! - Dashboards live in the lake (`.sluice/dashboards/<name>.json`, see
//!   [`sluice_lake::Documents`]), read from it at every request and refresh, so that every
//!   process sharing the lake shows the same ones and sees another's edit within a refresh.
//! - What is stored was checked: a valid name, bounded sizes, and panels whose SQL is one
//!   query that plans, naming columns the query has. Panels run as a read-only caller
//!   ([`super::reader`]), whoever watches, so a panel can never change anything.
//! - Editing is a writing user's; a read-only one opens and watches. A dashboard declared in the
//!   config file is written there at each start ([`declare`]) and only there: the HTTP API
//!   refuses to change or drop it (403 `dashboard_declared`). One the file no longer declares
//!   is released at the next start (an ordinary dashboard again, editable and deletable): a
//!   start never deletes what someone may still watch.
//! - A stored document this version cannot read (one written by a newer Sluice) is left alone
//!   and left out of the list, with a warning in the log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_sql::Statement;

use crate::auth::Caller;
use crate::status::now_ms;
use crate::{AppState, HttpError, ServerError};

/// A dashboard as written: in the config file (`[[dashboards]]`) or by the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Its name, in its URL (`#/dashboards/<name>`): a table's rules.
    #[serde(default)]
    pub name: String,
    /// What the page shows as its heading (the name if empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// How often the panels run again while someone watches, in seconds.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u32,
    /// The panels, in the page's order.
    #[serde(default)]
    pub panels: Vec<Panel>,
}

/// One query on a dashboard, and how it is drawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// Its heading.
    pub title: String,
    /// One query (`SELECT`, `WITH`, `VALUES`).
    pub sql: String,
    /// How it is drawn.
    #[serde(default)]
    pub chart: Chart,
    /// Charts: the column along the x axis (the first timestamp column, else the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Charts and numbers: the columns drawn (every numeric one but x).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub y: Vec<String>,
    /// Charts: the column whose values are the lines (or bars, or areas) of the first y.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// How a panel is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chart {
    /// Lines along x.
    Line,
    /// Bars along x.
    Bar,
    /// Lines along x, filled below.
    Area,
    /// The first row's first y, large.
    Number,
    /// The rows as they come.
    #[default]
    Table,
}

fn default_refresh() -> u32 {
    2
}

/// Most panels on one dashboard.
pub const MAX_PANELS: usize = 24;
/// Longest title, of a dashboard or a panel, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest panel query, in bytes.
pub const MAX_PANEL_SQL: usize = 64 << 10;
/// Most rows of a panel's answer sent to the page.
pub const MAX_PANEL_ROWS: usize = 2000;
/// Slowest refresh, in seconds.
pub const MAX_REFRESH: u32 = 3600;

/// A dashboard as the lake keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// What was written.
    pub dashboard: Dashboard,
    /// 1 when created, one more at each change.
    pub version: u64,
    /// Declared in the config file: changed there only.
    pub declared: bool,
    /// When it last changed (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Who changed it last (a user's name, or `config file`).
    pub updated_by: String,
}

impl Stored {
    /// What an edit names to replace this version (`If-Match`): its version and when it was
    /// written, so that a dashboard dropped and made again under its name never has the tag of
    /// the one before.
    pub fn etag(&self) -> String {
        format!("\"{}.{}\"", self.version, self.updated_ms)
    }

    /// As the API answers: the stored fields, its `etag`, whether `caller` may change it
    /// (`editable`), and whether they may make dashboards (`writer`: a declared one can be
    /// copied).
    fn to_json(&self, caller: &Caller) -> Value {
        let mut value = json!(self);
        value["etag"] = json!(self.etag());
        value["editable"] = json!(caller.role.may_write() && !self.declared);
        value["writer"] = json!(caller.role.may_write());
        value
    }
}

/// What a write expects to find (from `If-None-Match: *` and `If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Anything,
    Nothing,
    Tag(String),
}

impl Expect {
    fn of(headers: &HeaderMap) -> Result<Expect, ServerError> {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        if header(header::IF_NONE_MATCH).is_some_and(|v| v.trim() == "*") {
            return Ok(Expect::Nothing);
        }
        Ok(match header(header::IF_MATCH) {
            Some(tag) => Expect::Tag(tag.trim().trim_start_matches("W/").to_string()),
            None => Expect::Anything,
        })
    }
}

fn store(state: &AppState) -> sluice_lake::Documents {
    state.lake.documents("dashboards")
}

fn decode(name: &str, bytes: &[u8]) -> Result<Stored, ServerError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ServerError::Internal(format!("the stored dashboard '{name}' cannot be read: {e}"))
    })
}

/// Dashboard `name` as stored, if there is one.
pub async fn load(state: &AppState, name: &str) -> Result<Option<Stored>, ServerError> {
    match store(state).get(name).await? {
        Some(bytes) => decode(name, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Every dashboard this version can read, by name (see the module's invariants).
pub async fn list(state: &AppState) -> Result<Vec<Stored>, ServerError> {
    let listed = store(state).list().await?;
    Ok(listed
        .iter()
        .filter_map(|(name, bytes)| {
            decode(name, bytes)
                .inspect_err(|e| tracing::warn!(error = %e, "a saved dashboard is left out"))
                .ok()
        })
        .collect())
}

/// Checks `dashboard` (see the module's invariants): its errors name the panel at fault.
pub async fn check(state: &AppState, dashboard: &Dashboard) -> Result<(), ServerError> {
    let invalid = |message: String| Err(ServerError::InvalidRequest(message));
    if !sluice_lake::valid_table_name(&dashboard.name) {
        return invalid(format!(
            "invalid dashboard name {:?}: 1 to {} letters, digits, '_', '-' or '.', not \
             starting with '.'",
            dashboard.name,
            sluice_lake::MAX_TABLE_NAME
        ));
    }
    if dashboard.title.chars().count() > MAX_TITLE {
        return invalid(format!(
            "a dashboard's title has at most {MAX_TITLE} characters"
        ));
    }
    if !(1..=MAX_REFRESH).contains(&dashboard.refresh_seconds) {
        return invalid(format!(
            "refresh_seconds {} is not within 1..={MAX_REFRESH}",
            dashboard.refresh_seconds
        ));
    }
    if dashboard.panels.len() > MAX_PANELS {
        return invalid(format!(
            "a dashboard has at most {MAX_PANELS} panels, not {}",
            dashboard.panels.len()
        ));
    }
    for (index, panel) in dashboard.panels.iter().enumerate() {
        check_panel(state, panel)
            .await
            .map_err(|source| ServerError::Panel {
                number: index + 1,
                title: panel.title.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

async fn check_panel(state: &AppState, panel: &Panel) -> Result<(), ServerError> {
    if panel.title.chars().count() > MAX_TITLE {
        return Err(ServerError::InvalidRequest(format!(
            "a panel's title has at most {MAX_TITLE} characters"
        )));
    }
    if panel.sql.len() > MAX_PANEL_SQL {
        return Err(ServerError::InvalidRequest(format!(
            "a panel's query has at most {MAX_PANEL_SQL} bytes"
        )));
    }
    let query = panel_query(&panel.sql)?;
    let ctx = state.query.session()?;
    let plan = state.query.plan(&ctx, query).await?;
    let columns: Vec<&String> = plan.schema().fields().iter().map(|f| f.name()).collect();
    let named = panel.x.iter().chain(&panel.y).chain(&panel.by);
    if let Some(missing) = named.into_iter().find(|c| !columns.contains(c)) {
        return Err(ServerError::InvalidRequest(format!(
            "the query has no column {missing:?}: its columns are {columns:?}"
        )));
    }
    Ok(())
}

/// A panel's SQL as the one query it must be.
fn panel_query(sql: &str) -> Result<datafusion::sql::sqlparser::ast::Statement, ServerError> {
    let mut statements = sluice_sql::parse(sql)?;
    match (statements.pop(), statements.is_empty()) {
        (Some(Statement::Sql(query)), true)
            if matches!(*query, datafusion::sql::sqlparser::ast::Statement::Query(_)) =>
        {
            Ok(*query)
        }
        _ => Err(ServerError::InvalidRequest(
            "a panel shows one query (SELECT, WITH or VALUES), and only that".into(),
        )),
    }
}

/// Stores `dashboard` for `caller` as `expect` allows; what is stored now.
async fn save(
    state: &AppState,
    caller: &Caller,
    dashboard: Dashboard,
    expect: Expect,
) -> Result<(Stored, bool), ServerError> {
    caller.may_write("edit dashboards")?;
    check(state, &dashboard).await?;
    let _edit = state.dashboard_edits.lock().await;
    let name = dashboard.name.clone();
    let current = load(state, &name).await?;
    match (&current, expect) {
        (Some(found), _) if found.declared => return Err(ServerError::DashboardDeclared(name)),
        (Some(_), Expect::Nothing) => return Err(ServerError::DashboardExists(name)),
        (Some(found), Expect::Tag(tag)) if found.etag() != tag => {
            return Err(ServerError::DashboardChanged {
                name,
                version: found.version,
            });
        }
        (None, Expect::Tag(_)) => return Err(ServerError::DashboardNotFound(name)),
        _ => {}
    }
    let stored = Stored {
        dashboard,
        version: current.as_ref().map_or(1, |c| c.version + 1),
        declared: false,
        updated_ms: now_ms(),
        updated_by: caller.name.clone(),
    };
    write(state, &stored, current.is_none()).await?;
    Ok((stored, current.is_none()))
}

/// Writes `stored`; `create`: only if there is none (another process may have been first).
async fn write(state: &AppState, stored: &Stored, create: bool) -> Result<(), ServerError> {
    let name = &stored.dashboard.name;
    let bytes = serde_json::to_vec_pretty(stored)
        .map_err(|e| ServerError::Internal(format!("cannot write the dashboard '{name}': {e}")))?;
    if store(state).put(name, bytes, create).await? {
        Ok(())
    } else {
        Err(ServerError::DashboardExists(name.clone()))
    }
}

/// Makes the lake's declared dashboards those of the config file: each checked (a start with
/// one that is not valid fails, naming it), written when new or changed, and those declared
/// before but no longer released. A dashboard made in the page with a declared one's name
/// becomes the declared one.
pub async fn declare(state: &AppState, dashboards: &[Dashboard]) -> Result<(), ServerError> {
    let _edit = state.dashboard_edits.lock().await;
    for (index, dashboard) in dashboards.iter().enumerate() {
        if dashboards[..index].iter().any(|d| d.name == dashboard.name) {
            return Err(ServerError::Config(format!(
                "the config file declares dashboard '{}' twice",
                dashboard.name
            )));
        }
        check(state, dashboard).await.map_err(|e| {
            ServerError::Config(format!(
                "the config file's dashboard '{}': {e}",
                dashboard.name
            ))
        })?;
    }
    let mut stored: HashMap<String, Stored> = list(state)
        .await?
        .into_iter()
        .map(|s| (s.dashboard.name.clone(), s))
        .collect();
    for dashboard in dashboards {
        let current = stored.remove(&dashboard.name);
        if current
            .as_ref()
            .is_some_and(|c| c.declared && c.dashboard == *dashboard)
        {
            continue;
        }
        let declared = Stored {
            dashboard: dashboard.clone(),
            version: current.as_ref().map_or(1, |c| c.version + 1),
            declared: true,
            updated_ms: now_ms(),
            updated_by: "config file".into(),
        };
        write(state, &declared, current.is_none()).await?;
    }
    for gone in stored.into_values().filter(|s| s.declared) {
        let released = Stored {
            version: gone.version + 1,
            declared: false,
            updated_ms: now_ms(),
            updated_by: "config file (no longer declared)".into(),
            ..gone
        };
        write(state, &released, false).await?;
    }
    Ok(())
}

/// `GET /v1/dashboards`.
pub async fn list_dashboards(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, HttpError> {
    let dashboards: Vec<Value> = list(&state)
        .await?
        .iter()
        .map(|s| {
            json!({
                "name": s.dashboard.name,
                "title": s.dashboard.title,
                "panels": s.dashboard.panels.len(),
                "version": s.version,
                "declared": s.declared,
                "updated_ms": s.updated_ms,
                "updated_by": s.updated_by,
                "editable": caller.role.may_write() && !s.declared,
            })
        })
        .collect();
    Ok(Json(
        json!({"dashboards": dashboards, "may_create": caller.role.may_write()}),
    ))
}

fn with_etag(status: StatusCode, stored: &Stored, caller: &Caller) -> Response {
    let tag = HeaderValue::from_str(&stored.etag()).expect("numbers are a header value");
    (status, [(header::ETAG, tag)], Json(stored.to_json(caller))).into_response()
}

/// `GET /v1/dashboards/{name}`.
pub async fn get_dashboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    let stored = load(&state, &name)
        .await?
        .ok_or(ServerError::DashboardNotFound(name))?;
    Ok(with_etag(StatusCode::OK, &stored, &caller))
}

/// `PUT /v1/dashboards/{name}`: 201 when created, 200 when replaced.
pub async fn put_dashboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let mut dashboard: Dashboard = serde_json::from_slice(&body).map_err(|e| {
        ServerError::InvalidRequest(format!(
            "expected a dashboard {{\"title\", \"refresh_seconds\", \"panels\": [{{\"title\", \
             \"sql\", \"chart\", \"x\", \"y\", \"by\"}}]}}: {e}"
        ))
    })?;
    if dashboard.name.is_empty() {
        dashboard.name.clone_from(&name);
    } else if dashboard.name != name {
        return Err(ServerError::InvalidRequest(format!(
            "the body names dashboard {:?}, the URL {name:?}",
            dashboard.name
        ))
        .into());
    }
    let (stored, created) = save(&state, &caller, dashboard, Expect::of(&headers)?).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, &stored, &caller))
}

/// `DELETE /v1/dashboards/{name}`: 204.
pub async fn delete_dashboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    caller
        .may_write("edit dashboards")
        .map_err(HttpError::from)?;
    let _edit = state.dashboard_edits.lock().await;
    match load(&state, &name).await? {
        None => Err(ServerError::DashboardNotFound(name).into()),
        Some(found) if found.declared => Err(ServerError::DashboardDeclared(name).into()),
        Some(_) => {
            store(&state).delete(&name).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// A panel's answer as the page draws it: `columns`, `rows` (at most [`MAX_PANEL_ROWS`]),
/// `truncated`; or its `error`.
async fn panel_answer(state: &AppState, panel: &Panel) -> Value {
    let answer = match panel_query(&panel.sql) {
        Ok(query) => super::answer(state, Statement::Sql(Box::new(query)), MAX_PANEL_ROWS)
            .await
            .map_err(|e| HttpError::from(e).message),
        Err(e) => Err(e.to_string()),
    };
    answer.unwrap_or_else(|message| json!({"error": message}))
}

/// `GET /v1/live/dashboards/{name}` (see the module docs): one task per watcher, which ends
/// when the watcher goes or the server stops.
pub async fn live_dashboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events, mut received) = tokio::sync::mpsc::channel::<Event>(MAX_PANELS + 2);
    let watching = state.clone();
    tokio::spawn(async move {
        let (state, mut shown, mut sent) = (watching, None, HashMap::<usize, String>::new());
        let (mut gone_said, mut stopping) = (false, state.stopping.clone());
        loop {
            let refresh = match load(&state, &name).await {
                Ok(Some(stored)) => {
                    gone_said = false;
                    if shown.as_ref() != Some(&stored.etag()) {
                        shown = Some(stored.etag());
                        sent.clear();
                        let event = super::event("dashboard", &stored.to_json(&caller));
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    for (index, panel) in stored.dashboard.panels.iter().enumerate() {
                        let mut answer = panel_answer(&state, panel).await;
                        answer["panel"] = json!(index);
                        answer["etag"] = json!(stored.etag());
                        let text = answer.to_string();
                        if sent.get(&index) != Some(&text) {
                            sent.insert(index, text);
                            if events.send(super::event("panel", &answer)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Duration::from_secs(stored.dashboard.refresh_seconds.max(1).into())
                }
                result => {
                    // Gone (or out of reach): said once, and watched for until it is back.
                    shown = None;
                    let message = match result {
                        Err(e) => HttpError::from(e).message,
                        _ => ServerError::DashboardNotFound(name.clone()).to_string(),
                    };
                    if !gone_said {
                        gone_said = true;
                        if events
                            .send(super::event("failure", &json!(message)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Duration::from_secs(default_refresh().into())
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(refresh) => {}
                _ = events.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
    let events = futures::stream::poll_fn(move |cx| received.poll_recv(cx).map(|e| e.map(Ok)));
    Sse::new(super::until_stopped(&state, events)).keep_alive(KeepAlive::default())
}
