//! The Sluice server: the log, the ingest doors and the SQL and status API behind one HTTP port,
//! and queries over the PostgreSQL protocol on another.
//!
//! ```text
//!  HTTP 127.0.0.1:7878 ─┬─ POST /v1/streams/{s}/records ─┐
//!                       ├─ POST / (Kinesis API) ──────────┴─► sluice-ingest ─► sluice-log
//!                       ├─ POST /v1/sql ──► sluice-sql ─┬─► stream and view statements (sql)
//!                       │                               └─► queries: sluice-query
//!                       ├─ GET  /v1/streams, /v1/views, /v1/tables (status, see [`status`])
//!                       ├─ GET  / and /v1/live/… (the dashboard, see [`dashboard`])
//!                       └─ GET  /metrics (Prometheus)
//!  PostgreSQL 127.0.0.1:7879 ──► queries: sluice-query (see [`pg`])
//!  in the background: every pipeline (sluice-pipeline), retention, rates (see [`upkeep`])
//! ```
//!
//! One rule has one home: what each SQL door may run, and a read-only user ([`policy`]); how
//! an error is said over HTTP (`error`) and over PostgreSQL ([`pg`]'s errors), both from the
//! errors' classes; connections, limits and TLS on both ports ([`listen`]).
//!
//! [`Server::start`] opens the log (recovering it), applies the config file's statements, binds
//! the ports and serves until [`Server::shutdown`]: in-flight requests and queries finish,
//! pipelines finish their round, queued appends are written, then the log closes.

pub mod auth;
pub mod cluster;
mod config;
pub mod dashboard;
mod error;
pub mod listen;
pub mod metrics;
mod output;
pub mod pg;
pub mod policy;
mod router;
mod sources;
pub mod sql;
pub mod status;
mod upkeep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_log::Log;
use sluice_pipeline::view::SystemClock;
use sluice_pipeline::{Pipelines, PipelinesConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ClusterConfig, Limits, ServerConfig, TlsFiles};
pub use error::{HttpError, ServerError};
pub use router::{AppState, router};

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

/// A running server.
pub struct Server {
    /// The HTTP API's address as bound (its port chosen when the config asked for 0).
    pub http_addr: SocketAddr,
    /// The PostgreSQL protocol's address as bound.
    pub pg_addr: SocketAddr,
    /// The server's log, for what appends to it directly (the demo's feeds).
    pub log: Arc<Log>,
    #[cfg(feature = "postgres")]
    sources: Arc<sluice_ingest::postgres::Sources>,
    pipelines: Arc<Pipelines>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<()>,
    pg: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    /// Following the cluster's catalog, in a cluster.
    following: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server (see the crate docs); fails before binding anything if a non-loopback
    /// address has no users to ask for.
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
        let (data_dir, log_config) = (config.data_dir.clone(), config.log.clone());
        let log = tokio::task::spawn_blocking(move || Log::open(&data_dir, log_config))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        let log = Arc::new(log);

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
        let cluster = match &config.cluster {
            Some(cluster) => Some(join_cluster(cluster, &config, http_addr, &log, &lake).await?),
            None => None,
        };
        let query = sluice_query::QueryEngine::new(lake.clone(), log.clone())
            .with_max_result_bytes(config.limits.max_result_bytes);
        // Before the config file's statements: from now on no stream that views read is dropped.
        let pipelines = Pipelines::open(
            log.clone(),
            lake.clone(),
            config.data_dir.join("views"),
            PipelinesConfig {
                raw: config.raw.clone(),
                views: config.views.clone(),
                cluster: cluster.as_ref().map(|c| sluice_pipeline::ClusterMember {
                    cluster: c.name.clone(),
                    worker: c.worker.clone(),
                }),
            },
            Arc::new(SystemClock),
        )?;
        let (applying, statements) = (log.clone(), config.statements.clone());
        let config_views = tokio::task::spawn_blocking(move || match statements {
            Some(sql) => sql::apply_config(&applying, &sql),
            None => Ok(Vec::new()),
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
        // A source is acknowledged as far as its tables' pipelines have taken its streams.
        #[cfg(feature = "postgres")]
        let sources = {
            let sources = sluice_ingest::postgres::Sources::new(
                sources::shelf(&config.data_dir, &lake, cluster.as_ref()),
                log.clone(),
                Arc::new(sources::Downstream(pipelines.clone())),
            );
            (sources.follow().await)
                .map_err(|e| ServerError::Internal(format!("cannot open the sources: {e}")))?;
            sources
        };
        let (stop, stopped) = watch::channel(false);
        let state = AppState {
            log: log.clone(),
            query,
            pipelines: pipelines.clone(),
            lake,
            rates: Arc::default(),
            tables: Arc::default(),
            stopping: stopped.clone(),
            metrics: metrics.clone(),
            users: config.users.clone().map(Arc::new),
            limits: config.limits.clone(),
            dashboard_edits: Arc::default(),
            #[cfg(feature = "postgres")]
            sources: sources.clone(),
            cluster: cluster.clone(),
        };
        let rates = state.rates.clone();
        let tls = |alpn: &[&[u8]]| {
            config
                .tls
                .as_ref()
                .map(|files| listen::tls_acceptor(&files.cert, &files.key, alpn))
                .transpose()
        };
        let (http_tls, pg_tls) = (tls(&[b"h2", b"http/1.1"])?, tls(&[b"postgresql"])?);
        let max_connections = config.limits.max_connections;
        let (pg_addr, pg) = pg::serve(
            config.pg,
            state.clone(),
            pg_tls,
            listen::Connections::new(max_connections),
            stopped.clone(),
        )
        .await?;
        let ingest =
            sluice_ingest::Ingest::new(log.clone(), config.ingest.clone(), state.users.clone());
        let app = router(state.clone(), ingest);
        let serving = tokio::spawn(listen::serve_http(
            listener,
            app,
            http_tls,
            listen::Connections::new(max_connections),
            stopped,
        ));
        // A worker of a cluster knows the cluster's views before it starts its pipelines.
        pipelines.follow_views().await?;
        pipelines.reconcile().await;
        for create in config_views {
            sql::create_view(&state, create, sql::Existing::SameDefinition).await?;
        }
        dashboard::saved::declare(&state, &config.dashboards).await?;
        let upkeep = tokio::spawn(upkeep::run(
            log.clone(),
            pipelines.clone(),
            rates,
            metrics,
            config.retention_interval,
        ));
        let following = cluster.map(|cluster| tokio::spawn(cluster::run(cluster, state.clone())));
        Ok(Server {
            http_addr,
            pg_addr,
            log,
            #[cfg(feature = "postgres")]
            sources,
            pipelines,
            stop,
            serving,
            pg,
            upkeep,
            following,
        })
    }

    /// Stops accepting, lets in-flight requests and queries finish (for at most
    /// [`SHUTDOWN_GRACE`]) and the pipelines their round, and closes the log once every queued
    /// append is written.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        self.upkeep.abort();
        let _ = self.upkeep.await;
        if let Some(following) = self.following {
            following.abort();
            let _ = following.await;
        }
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
        #[cfg(feature = "postgres")]
        self.sources.stop_all();
        self.pipelines.stop_all().await;
        drop(self.pipelines);
        // The last handle: dropping it stops the shard writers once their queues are empty.
        let log = self.log;
        tokio::task::spawn_blocking(move || drop(log))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))
    }
}

/// Makes this server worker of `cluster`: its log shares its streams through the catalog in
/// the lake, and holds the catalog's streams before anything else runs.
async fn join_cluster(
    cluster: &ClusterConfig,
    config: &ServerConfig,
    http_addr: std::net::SocketAddr,
    log: &Arc<Log>,
    lake: &sluice_lake::Lake,
) -> Result<cluster::Cluster, ServerError> {
    if config.lake.is_none() {
        return Err(ServerError::Config(format!(
            "the workers of cluster '{}' share one lake: give it (--lake s3://bucket/prefix, or a \
             folder they all reach)",
            cluster.name
        )));
    }
    let worker = match &cluster.worker {
        Some(worker) => worker.clone(),
        None => format!(
            "{}:{}",
            whoami::hostname().unwrap_or_else(|_| "localhost".into()),
            http_addr.port()
        ),
    };
    let joined = cluster::Cluster::new(
        &cluster.name,
        &worker,
        &http_addr.to_string(),
        cluster.kafka.as_deref(),
        lake,
    );
    joined.join(log)?;
    let following = log.clone();
    tokio::task::spawn_blocking(move || following.follow())
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
    Ok(joined)
}

/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests;
