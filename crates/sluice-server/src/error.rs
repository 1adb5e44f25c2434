//! The server's errors, and how its HTTP API says every error: the status and `Retry-After`
//! its class gives (`sluice-error`, the one mapping), and a JSON body naming what is wrong.
//! The PostgreSQL door says the same errors by their SQLSTATE (see `pg::errors`), the Kinesis
//! door in Kinesis' shapes; all three from the same classes.

use std::net::SocketAddr;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_error::{Class, Classify, Position};

/// Why the server could not start, or a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The log refused (an unknown stream, backpressure, a disk that failed).
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    /// A statement that does not parse.
    #[error(transparent)]
    Sql(#[from] sluice_sql::SqlError),
    /// The lake refused (a table that is not there, a store out of reach).
    #[error(transparent)]
    Lake(#[from] sluice_lake::Error),
    /// A view that cannot be made or dropped, or a pipeline that cannot start.
    #[error(transparent)]
    Pipeline(#[from] sluice_pipeline::PipelineError),
    /// A query the engine refused or could not run.
    #[error(transparent)]
    Query(#[from] sluice_query::QueryError),
    /// A read-only caller's statement that writes.
    #[error("{0}")]
    Forbidden(String),
    /// A query that ran past the query timeout.
    #[error(
        "the query ran longer than the query timeout of {0:?} (limits.query_timeout) and was cancelled"
    )]
    Timeout(std::time::Duration),
    /// A statement this door does not run (or may not run here).
    #[error("{0}")]
    Unsupported(String),
    /// A request that is not one: not the JSON expected, no statement in it.
    #[error("{0}")]
    InvalidRequest(String),
    /// A setting or a config file's statement that cannot be applied.
    #[error("{0}")]
    Config(String),
    /// A stream's raw table would take the name of a lake table made otherwise.
    #[error("table '{0}' exists in the lake: drop it (DROP TABLE) or name the stream otherwise")]
    TableExists(String),
    /// A saved dashboard's panel that cannot be: its number (from 1), its title, and why.
    #[error("panel {number} ({title:?}): {source}")]
    Panel {
        /// Where it is on the dashboard, from 1.
        number: usize,
        /// Its title.
        title: String,
        /// Why it cannot be.
        source: Box<ServerError>,
    },
    /// No saved dashboard of this name.
    #[error("dashboard '{0}' does not exist")]
    DashboardNotFound(String),
    /// A dashboard of this name exists already (and the request asked to create one).
    #[error("dashboard '{0}' exists already")]
    DashboardExists(String),
    /// An edit of a dashboard that changed since the version it was made from.
    #[error(
        "dashboard '{name}' changed since (it is at version {version} now): open it again and \
         make the change there"
    )]
    DashboardChanged {
        /// The dashboard.
        name: String,
        /// Its version now.
        version: u64,
    },
    /// A change, through the API, of a dashboard the config file declares.
    #[error("dashboard '{0}' is declared in the config file: change it there")]
    DashboardDeclared(String),
    /// A port could not be bound (taken, or not ours to take).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A PostgreSQL source cannot be created, dropped or read.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Source(#[from] sluice_ingest::postgres::SourceError),
    /// A bug in Sluice (a task that panicked, a state that cannot be).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for ServerError {
    fn class(&self) -> Class {
        match self {
            ServerError::Log(e) => e.class(),
            ServerError::Sql(e) => e.class(),
            ServerError::Lake(e) => e.class(),
            ServerError::Pipeline(e) => e.class(),
            ServerError::Query(e) => e.class(),
            ServerError::Forbidden(_) => Class::Forbidden,
            ServerError::Timeout(_) => Class::Timeout,
            ServerError::Unsupported(_) => Class::Unsupported,
            ServerError::InvalidRequest(_) => Class::InvalidData,
            ServerError::Config(_) => Class::InvalidValue,
            ServerError::TableExists(_) => Class::Exists,
            ServerError::Panel { source, .. } => source.class(),
            ServerError::DashboardNotFound(_) => Class::UndefinedTable,
            ServerError::DashboardExists(_) | ServerError::DashboardChanged { .. } => Class::Exists,
            ServerError::DashboardDeclared(_) => Class::Forbidden,
            ServerError::Bind { .. } => Class::Unavailable,
            #[cfg(feature = "postgres")]
            ServerError::Source(e) => e.class(),
            ServerError::Internal(_) => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ServerError::Log(e) => e.code(),
            ServerError::Sql(e) => e.code(),
            ServerError::Lake(e) => e.code(),
            ServerError::Pipeline(e) => e.code(),
            ServerError::Query(e) => e.code(),
            ServerError::Forbidden(_) => "forbidden",
            ServerError::Timeout(_) => "query_timeout",
            ServerError::Unsupported(_) => "unsupported_statement",
            ServerError::InvalidRequest(_) => "invalid_request",
            ServerError::Config(_) => "invalid_statement",
            ServerError::TableExists(_) => "table_exists",
            ServerError::Panel { source, .. } => source.code(),
            ServerError::DashboardNotFound(_) => "dashboard_not_found",
            ServerError::DashboardExists(_) => "dashboard_exists",
            ServerError::DashboardChanged { .. } => "dashboard_changed",
            ServerError::DashboardDeclared(_) => "dashboard_declared",
            ServerError::Bind { .. } => "cannot_listen",
            #[cfg(feature = "postgres")]
            ServerError::Source(e) => e.code(),
            ServerError::Internal(_) => "internal",
        }
    }

    fn position(&self) -> Option<Position> {
        match self {
            ServerError::Sql(e) => e.position(),
            ServerError::Pipeline(e) => e.position(),
            ServerError::Query(e) => e.position(),
            ServerError::Panel { source, .. } => source.position(),
            _ => None,
        }
    }
}

/// An error of Sluice's own HTTP API: a status and a JSON body
/// `{"error": message, "code": code[, "line": l, "column": c]}`, with `Retry-After` when
/// waiting is what helps.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The HTTP status, from the error's class.
    pub status: StatusCode,
    /// The machine-readable code (`stream_not_found`), stable for clients to match on.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// Extra fields of the body (the position of a SQL error, what a partial write stored).
    pub details: Option<serde_json::Value>,
    /// Seconds to wait before retrying.
    pub retry_after: Option<u32>,
}

impl HttpError {
    /// `e` as the API says it: the status its class gives, its code, its position.
    pub fn of(e: &(impl Classify + ?Sized)) -> Self {
        let class = e.class();
        let mut error = Self::of_class(class, e.code(), e.to_string());
        if let Some(Position { line, column }) = e.position() {
            error.details = Some(serde_json::json!({"line": line, "column": column}));
        }
        error
    }

    /// An error of `class`, named `code`.
    pub fn of_class(class: Class, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(class.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            details: None,
            retry_after: class.retry_after(),
        }
    }

    /// An error with a status of its own: what HTTP itself refuses (no such route, a method
    /// the route does not take).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// The caller's request is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::of_class(Class::InvalidValue, code, message)
    }

    /// The same error, with `details` added to its body.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl<E: Classify> From<E> for HttpError {
    fn from(e: E) -> Self {
        HttpError::of(&e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.message, "code": self.code});
        if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(map)) =
            (self.details, &mut body)
        {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
