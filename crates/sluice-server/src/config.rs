//! How a server is set up: its folders and addresses, its pipelines, its limits, its users and
//! its TLS. The binary fills it from flags and the config file; each field's doc is the
//! reference of its knob.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_ingest::IngestConfig;
use sluice_log::LogConfig;

/// Everything a server is started with (see the module docs).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory: the log's streams, the views' catalog and state, and the lake's
    /// tables unless `lake` says otherwise.
    pub data_dir: PathBuf,
    /// The HTTP API's address: ingest, Kinesis, SQL, status, metrics and the dashboard.
    pub http: SocketAddr,
    /// The PostgreSQL protocol's address.
    pub pg: SocketAddr,
    /// SQL statements to apply at start-up (the config file's).
    pub statements: Option<String>,
    /// The config file's dashboards, made the lake's declared ones at start-up (see
    /// [`crate::dashboard::saved::declare`]).
    pub dashboards: Vec<crate::dashboard::saved::Dashboard>,
    /// How the log writes: segment sizes, group commit, the in-flight budget.
    pub log: LogConfig,
    /// The ingest doors' limits.
    pub ingest: IngestConfig,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How the raw tables are kept.
    pub raw: sluice_pipeline::RawConfig,
    /// How the materialized views run.
    pub views: sluice_pipeline::view::ViewConfig,
    /// Where the lake is (`s3://bucket/prefix` or a folder); `<data_dir>/lake` if `None`.
    pub lake: Option<String>,
    /// The cluster this server is a worker of, if any (see [`crate::cluster`]).
    pub cluster: Option<ClusterConfig>,
    /// Who may connect; `None`: anyone, which only loopback addresses allow.
    pub users: Option<sluice_auth::Users>,
    /// Connections, query time and answer size.
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
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
}

impl ServerConfig {
    /// A server on `data_dir` listening on `http` and `pg`, with every other knob at its
    /// default: no users, no TLS, the lake in `<data_dir>/lake`.
    pub fn new(data_dir: impl Into<PathBuf>, http: SocketAddr, pg: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            http,
            pg,
            statements: None,
            dashboards: Vec::new(),
            log: LogConfig::default(),
            ingest: IngestConfig::default(),
            retention_interval: Duration::from_secs(30),
            raw: sluice_pipeline::RawConfig::default(),
            views: sluice_pipeline::view::ViewConfig::default(),
            lake: None,
            cluster: None,
            users: None,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// A worker of a cluster: `sluice serve --cluster NAME --lake …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name: every worker of it is started with it and the same lake.
    pub name: String,
    /// This worker's name among them; `<host name>:<HTTP port>` if `None`.
    pub worker: Option<String>,
    /// The cluster's Kafka brokers, where a stream created without a connector gets a topic of
    /// its own; without them every stream must name its topic.
    pub kafka: Option<String>,
}
