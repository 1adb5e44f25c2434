//! The HTTP API's routes, and what every route shares.
//!
//! ```text
//!  POST /v1/streams/{s}/records ──► sluice-ingest (Sluice's own ingest API)
//!  POST / (Kinesis API) ───────────► sluice-ingest's Kinesis door (its own routes and errors)
//!  POST /v1/sql ───────────────────► sql::answer, one statement after another
//!  GET  /v1/streams, /v1/views, /v1/tables, /v1/streams/{s}/recent ──► status
//!  GET  / and /v1/live/…, /v1/dashboards ─► the dashboard, saved dashboards
//!  GET  /metrics ──────────────────► Prometheus
//! ```
//!
//! Every route is behind the caller's authentication (see [`auth`]); every refusal, axum's
//! own included, has the API's JSON error body (see [`HttpError`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use sluice_ingest::Ingest;
use sluice_log::Log;
use tokio::sync::watch;

use crate::error::{HttpError, ServerError};
use crate::{Limits, auth, dashboard, output, sql, status};

/// What every route shares.
#[derive(Clone)]
pub struct AppState {
    /// The log: streams to create, drop, describe and read.
    pub log: Arc<Log>,
    /// The engine that runs queries over the lake.
    pub query: sluice_query::QueryEngine,
    /// Every pipeline: the streams' raw tables and the views.
    pub pipelines: Arc<sluice_pipeline::Pipelines>,
    /// The lake: the tables of streams, views and users.
    pub lake: sluice_lake::Lake,
    /// Each stream's recent ingest rates, sampled by the upkeep task.
    pub rates: Arc<status::StreamRates>,
    /// The lake tables' statistics, read again at most every few seconds.
    pub tables: Arc<status::TablesCache>,
    /// Turns true when the server stops: what runs without end (the dashboard's live feeds)
    /// ends then, so that shutdown does not wait on it.
    pub stopping: watch::Receiver<bool>,
    /// Renders the Prometheus metrics for `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// Who may call; `None`: anyone (see [`auth`]).
    pub users: Option<Arc<sluice_auth::Users>>,
    /// Connections, query time and answer size.
    pub limits: Limits,
    /// Held while a saved dashboard is changed: one change at a time, each checked against
    /// what it replaces (see [`dashboard::saved`]).
    pub dashboard_edits: Arc<tokio::sync::Mutex<()>>,
    /// The PostgreSQL sources, each read into its tables' change streams.
    #[cfg(feature = "postgres")]
    pub sources: Arc<sluice_ingest::postgres::Sources>,
    /// The cluster this server is a worker of, if any.
    pub cluster: Option<crate::cluster::Cluster>,
}

/// The whole HTTP API; `ingest` is the doors' (its limits and request memory).
pub fn router(state: AppState, ingest: Ingest) -> Router {
    let users = state.users.clone();
    let doors = Router::new()
        .route("/v1/streams/{stream}/records", post(put_records))
        .merge(sluice_ingest::kinesis::routes())
        .with_state(ingest);
    Router::new()
        .route("/v1/sql", post(run_sql))
        .route("/v1/streams", get(status::list_streams))
        .route("/v1/streams/{stream}/recent", get(status::recent_records))
        .route("/v1/views", get(status::list_views))
        .route("/v1/tables", get(status::list_tables))
        .route("/v1/cluster", get(crate::cluster::status))
        .route("/metrics", get(render_metrics))
        .merge(dashboard::routes())
        .with_state(state)
        .merge(doors)
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            users,
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(json_errors))
}

/// Gives every refusal the API's JSON error body: axum's own (a malformed query string or path,
/// a body over the 2 MiB of `/v1/sql`) are plain text.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let message = match String::from_utf8_lossy(&body).trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_string(),
        text => text.to_string(),
    };
    HttpError::new(status, code, message).into_response()
}

#[derive(Debug, Deserialize)]
struct PutParams {
    key: Option<String>,
}

/// `POST /v1/streams/{stream}/records`: Sluice's own ingest API (see `sluice_ingest::http`).
async fn put_records(
    State(ingest): State<Ingest>,
    Path(stream): Path<String>,
    Query(params): Query<PutParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<sluice_ingest::http::Accepted>, HttpError> {
    sluice_ingest::http::put_records(&ingest, &stream, params.key.as_deref(), &headers, body)
        .await
        .map(Json)
        .map_err(|e| {
            let details = e.details();
            let error = HttpError::of(&e);
            match details {
                Some(details) => error.with_details(details),
                None => error,
            }
        })
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    /// Answer with at most this many rows (the dashboard's editor asks for a page); the JSON
    /// answer then says `"truncated": true`, CSV and Arrow in an `X-Sluice-Truncated` header.
    max_rows: Option<usize>,
}

/// `POST /v1/sql`: runs each statement in turn and answers with the last one's answer.
async fn run_sql(
    State(state): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let request: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| ServerError::InvalidRequest(format!("expected {{\"sql\": \"…\"}}: {e}")))?;
    let statements = sluice_sql::parse(&request.sql).map_err(ServerError::from)?;
    if statements.is_empty() {
        return Err(ServerError::InvalidRequest(
            "the request holds no SQL statement: send {\"sql\": \"SELECT …\"}".into(),
        )
        .into());
    }
    let mut answer = None;
    for statement in statements {
        answer = Some(sql::answer(&state, &caller, statement).await?);
    }
    let (schema, mut batches) =
        answer.ok_or_else(|| ServerError::Internal("no statement ran".into()))?;
    let truncated = request
        .max_rows
        .is_some_and(|max| output::truncate(&mut batches, max));
    output::respond(
        output::Format::from_accept(&headers),
        &schema,
        &batches,
        truncated,
    )
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
