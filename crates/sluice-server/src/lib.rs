//! The Sluice server: the log, the ingest doors and the SQL and status API behind one HTTP port,
//! and queries over the PostgreSQL protocol on another.
//!
//! ```text
//!  HTTP 127.0.0.1:7878 ─┬─ POST /v1/streams/{s}/records ─┐
//!                       ├─ POST / (Kinesis API) ──────────┴─► sluice-ingest ─► sluice-log
//!                       ├─ POST /v1/sql ──► sluice-sql ─┬─► stream statements on the log
//!                       │                               └─► queries: sluice-query
//!                       ├─ GET  /v1/streams, /v1/views, /v1/tables (status, see [`status`])
//!                       ├─ GET  / and /v1/live/… (the dashboard, see [`dashboard`])
//!                       └─ GET  /metrics (Prometheus)
//!  PostgreSQL 127.0.0.1:7879 ──► queries: sluice-query (see [`pg`])
//! ```
//!
//! [`Server::start`] opens the log (recovering it), applies the config file's statements, binds
//! the port and serves until [`Server::shutdown`]: in-flight requests finish, queued appends are
//! written, then the log closes.

pub mod auth;
pub mod dashboard;
pub mod listen;
pub mod metrics;
mod output;
pub mod pg;
pub mod pipelines;
pub mod sql;
pub mod status;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use sluice_ingest::{HttpError, Ingest, IngestConfig};
use sluice_log::{Log, LogConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the server could not start or a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    #[error(transparent)]
    Sql(#[from] sluice_sql::SqlError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Config(String),
    #[error("table '{0}' exists in the lake: drop it (DROP TABLE) or name the stream otherwise")]
    TableExists(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lake(#[from] sluice_lake::Error),
    #[error(transparent)]
    Pipeline(#[from] sluice_pipeline::PipelineError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Refuses a lake folder that holds the data directory or lies in it (but for the default,
/// `<data_dir>/lake`): dropping a table there could delete the log.
fn keep_apart(lake: &sluice_lake::Lake, data_dir: &std::path::Path) -> Result<(), ServerError> {
    let (Ok(lake), Ok(data_dir)) = (lake.url().to_file_path(), data_dir.canonicalize()) else {
        return Ok(());
    };
    if lake != data_dir.join("lake") && (lake.starts_with(&data_dir) || data_dir.starts_with(&lake))
    {
        return Err(ServerError::Config(format!(
            "the lake {} and the data directory {} overlap: keep them apart (or leave the lake \
             in the data directory's lake folder)",
            lake.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

impl From<ServerError> for HttpError {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Log(e) => e.into(),
            ServerError::Sql(e) => {
                let details = json!({"line": e.line, "column": e.column});
                HttpError::bad_request("sql_parse_error", e.message).with_details(details)
            }
            ServerError::Unsupported(m) => HttpError::bad_request("unsupported_statement", m),
            ServerError::Config(m) => HttpError::bad_request("invalid_statement", m),
            e @ ServerError::TableExists(_) => {
                HttpError::new(StatusCode::CONFLICT, "table_exists", e.to_string())
            }
            ServerError::Pipeline(e) => {
                use sluice_pipeline::PipelineError as P;
                match e {
                    P::Unsupported(m) => HttpError::bad_request("unsupported_view", m),
                    P::Sql(e) => ServerError::Sql(e).into(),
                    e @ P::ViewExists(_) => {
                        HttpError::new(StatusCode::CONFLICT, "view_exists", e.to_string())
                    }
                    e @ P::ViewNotFound(_) => {
                        HttpError::new(StatusCode::NOT_FOUND, "view_not_found", e.to_string())
                    }
                    e => {
                        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    }
                }
            }
            e @ (ServerError::Bind { .. } | ServerError::Lake(_) | ServerError::Internal(_)) => {
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    /// The PostgreSQL protocol's address.
    pub pg: SocketAddr,
    /// SQL statements to apply at start-up (the config file's).
    pub statements: Option<String>,
    pub log: LogConfig,
    pub ingest: IngestConfig,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How the raw tables are kept.
    pub raw: sluice_pipeline::RawConfig,
    /// How the materialized views run.
    pub views: sluice_pipeline::view::ViewConfig,
    /// Where the lake is (`s3://bucket/prefix` or a folder); `<data_dir>/lake` if `None`.
    pub lake: Option<String>,
    /// Who may connect; `None`: anyone, which only loopback addresses allow.
    pub users: Option<sluice_auth::Users>,
    pub limits: Limits,
    /// TLS on both ports, when given.
    pub tls: Option<TlsFiles>,
}

/// Limits of the server beyond the ingest doors' ([`IngestConfig`]); each is answered with a
/// clear error when exceeded.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, on each port; one more is refused (HTTP 503
    /// `too_many_connections`, PostgreSQL 53300).
    pub max_connections: usize,
    /// How long a query may run: over HTTP the whole answer, over the PostgreSQL protocol each
    /// connection's default `statement_timeout` (which it may `SET` otherwise). Past it the
    /// query is cancelled (HTTP 503 `query_timeout`, SQLSTATE 57014).
    pub query_timeout: Duration,
    /// Largest answer of a query over HTTP (Arrow bytes); past it the query stops and the
    /// answer is refused (`result_too_large`): aggregate, or add a LIMIT.
    pub max_result_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            query_timeout: Duration::from_secs(300),
            max_result_bytes: 256 << 20,
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, http: SocketAddr, pg: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            http,
            pg,
            statements: None,
            log: LogConfig::default(),
            ingest: IngestConfig::default(),
            retention_interval: Duration::from_secs(30),
            raw: sluice_pipeline::RawConfig::default(),
            views: sluice_pipeline::view::ViewConfig::default(),
            lake: None,
            users: None,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// What every route shares.
#[derive(Clone)]
pub struct AppState {
    pub log: Arc<Log>,
    pub query: sluice_query::QueryEngine,
    pub pipelines: Arc<pipelines::Pipelines>,
    pub views: Arc<views::Views>,
    pub lake: sluice_lake::Lake,
    pub rates: Arc<status::StreamRates>,
    pub tables: Arc<status::TablesCache>,
    /// Turns true when the server stops: what runs without end (the dashboard's live feeds)
    /// ends then, so that shutdown does not wait on it.
    pub stopping: watch::Receiver<bool>,
    pub metrics: PrometheusHandle,
    /// Who may call; `None`: anyone (see [`auth`]).
    pub users: Option<Arc<sluice_auth::Users>>,
    pub limits: Limits,
}

/// The whole HTTP API.
pub fn router(state: AppState, ingest: IngestConfig) -> Router {
    let users = state.users.clone();
    let ingest = Ingest::new(state.log.clone(), ingest, users.clone());
    let doors = sluice_ingest::http::routes()
        .merge(sluice_ingest::kinesis::routes())
        .with_state(ingest);
    Router::new()
        .route("/v1/sql", post(run_sql))
        .route("/v1/streams", get(status::list_streams))
        .route("/v1/streams/{stream}/recent", get(status::recent_records))
        .route("/v1/views", get(status::list_views))
        .route("/v1/tables", get(status::list_tables))
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

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    /// Answer with at most this many rows (the dashboard's editor asks for a page); the JSON
    /// answer then says `"truncated": true`, CSV and Arrow in an `X-Sluice-Truncated` header.
    max_rows: Option<usize>,
}

async fn run_sql(
    State(state): State<AppState>,
    Extension(caller): Extension<auth::Caller>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, HttpError> {
    let request: SqlRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(
            "invalid_request",
            format!("expected {{\"sql\": \"…\"}}: {e}"),
        )
    })?;
    let statements = sluice_sql::parse(&request.sql).map_err(ServerError::from)?;
    let mut answer = sql::QueryResult::default().to_arrow()?;
    for statement in statements {
        answer = sql::answer(&state, &caller, statement).await?;
    }
    let (schema, mut batches) = answer;
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

impl From<sql::StatementError> for HttpError {
    fn from(e: sql::StatementError) -> Self {
        use sluice_query::QueryError;
        match e {
            sql::StatementError::Server(e) => e.into(),
            e @ sql::StatementError::Forbidden(_) => {
                HttpError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            e @ sql::StatementError::Timeout(_) => HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_timeout",
                e.to_string(),
            ),
            sql::StatementError::Query(QueryError::Refused(m)) => {
                HttpError::bad_request("statement_refused", m)
            }
            sql::StatementError::Query(QueryError::Plan(m) | QueryError::Execution(m)) => {
                HttpError::bad_request("query_error", m)
            }
            sql::StatementError::Query(QueryError::ResultTooLarge(m)) => {
                HttpError::bad_request("result_too_large", m)
            }
        }
    }
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

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub pg_addr: SocketAddr,
    pub log: Arc<Log>,
    pipelines: Arc<pipelines::Pipelines>,
    views: Arc<views::Views>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<()>,
    pg: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl Server {
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        if config.users.is_none()
            && let Some(addr) = [config.http, config.pg]
                .into_iter()
                .find(|a| !a.ip().is_loopback())
        {
            return Err(ServerError::Config(format!(
                "refusing to listen on {addr} without authentication: anyone who reaches it \
                 could read and change everything. Give users their secrets first, e.g. \
                 SLUICE_ADMIN_SECRET=$(openssl rand -hex 24) (user admin) and, for a read-only \
                 user, SLUICE_READER_SECRET (user reader), or [[users]] in the config file; or \
                 listen on 127.0.0.1 (the default)"
            )));
        }
        let metrics = metrics::install();
        let data_dir = config.data_dir.clone();
        let log_config = config.log.clone();
        let statements = config.statements.clone();
        let (log, config_views) = tokio::task::spawn_blocking(move || {
            let log = Log::open(&data_dir, log_config)?;
            let views = match statements {
                Some(sql) => sql::apply_config(&log, &sql)?,
                None => Vec::new(),
            };
            Ok::<_, ServerError>((Arc::new(log), views))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;

        let listener =
            TcpListener::bind(config.http)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.http,
                    source,
                })?;
        let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.http,
            source,
        })?;
        let lake = match &config.lake {
            Some(location) => sluice_lake::Lake::open_location(location).await?,
            None => sluice_lake::Lake::local(config.data_dir.join("lake"))?,
        };
        keep_apart(&lake, &config.data_dir)?;
        let query = sluice_query::QueryEngine::new(lake.clone(), log.clone())
            .with_max_result_bytes(config.limits.max_result_bytes);
        let dashboard_lake = lake.clone();
        let pipelines = Arc::new(pipelines::Pipelines::new(
            log.clone(),
            lake.clone(),
            config.raw.clone(),
        ));
        let catalog = sluice_pipeline::view::Catalog::open(config.data_dir.join("views"))?;
        let views = Arc::new(views::Views::open(
            log.clone(),
            lake,
            catalog,
            config.views.clone(),
        ));
        let (stop, stopped) = watch::channel(false);
        let state = AppState {
            log: log.clone(),
            query,
            pipelines: pipelines.clone(),
            views: views.clone(),
            lake: dashboard_lake,
            rates: Arc::default(),
            tables: Arc::default(),
            stopping: stopped.clone(),
            metrics: metrics.clone(),
            users: config.users.clone().map(Arc::new),
            limits: config.limits.clone(),
        };
        let rates = state.rates.clone();
        let tls = |alpn: &[&[u8]]| {
            config
                .tls
                .as_ref()
                .map(|files| listen::tls_acceptor(&files.cert, &files.key, alpn))
                .transpose()
        };
        let (http_tls, pg_tls) = (tls(&[b"http/1.1"])?, tls(&[b"postgresql"])?);
        let max_connections = config.limits.max_connections;
        let (pg_addr, pg) = pg::serve(
            config.pg,
            state.clone(),
            pg_tls,
            listen::Connections::new(max_connections),
            stopped.clone(),
        )
        .await?;
        let app = router(state, config.ingest.clone());
        let serving = tokio::spawn(listen::serve_http(
            listener,
            app,
            http_tls,
            listen::Connections::new(max_connections),
            stopped,
        ));
        pipelines.reconcile().await;
        views.reconcile().await;
        for create in config_views {
            views.create(create, sql::Existing::SameDefinition).await?;
        }
        let upkeep = tokio::spawn(upkeep(
            log.clone(),
            pipelines.clone(),
            views.clone(),
            rates,
            metrics,
            config.retention_interval,
        ));
        Ok(Server {
            http_addr,
            pg_addr,
            log,
            pipelines,
            views,
            stop,
            serving,
            pg,
            upkeep,
        })
    }

    /// Stops accepting, lets in-flight requests finish (for at most [`SHUTDOWN_GRACE`]), and
    /// closes the log once every queued append is written.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        self.upkeep.abort();
        let _ = self.upkeep.await;
        let _ = self.pg.await;
        let mut serving = self.serving;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut serving).await {
            Ok(joined) => joined.map_err(|e| ServerError::Internal(e.to_string()))?,
            Err(_) => {
                // A client that never finishes its request must not hold the process forever.
                // Whatever was acknowledged is durable already; requests cut here were not.
                tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}: closing them");
                serving.abort();
                let _ = serving.await;
            }
        }
        self.views.stop_all().await;
        self.pipelines.stop_all().await;
        drop(self.views);
        drop(self.pipelines);
        // The last handle: dropping it stops the shard writers once their queues are empty.
        let log = self.log;
        tokio::task::spawn_blocking(move || drop(log))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))
    }
}

/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Background upkeep: a raw-table pipeline for every stream, every view running, retention,
/// the streams' rates, and draining the metrics recorder.
async fn upkeep(
    log: Arc<Log>,
    pipelines: Arc<pipelines::Pipelines>,
    views: Arc<views::Views>,
    rates: Arc<status::StreamRates>,
    metrics: PrometheusHandle,
    retention_interval: Duration,
) {
    let mut retention = tokio::time::interval(retention_interval);
    let mut rates_tick = tokio::time::interval(Duration::from_secs(1));
    // A sample late (behind a slow reconcile) is taken late, not twice in a row.
    rates_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(5));
    let mut streams_tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = streams_tick.tick() => {
                pipelines.reconcile().await;
                views.reconcile().await;
            }
            _ = retention.tick() => {
                let log = log.clone();
                match tokio::task::spawn_blocking(move || log.enforce_retention()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(segments = n, "retention deleted segments"),
                    Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                    Err(e) => tracing::error!(error = %e, "retention task failed"),
                }
            }
            _ = rates_tick.tick() => rates.sample(&log),
            _ = metrics_tick.tick() => metrics.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests;
