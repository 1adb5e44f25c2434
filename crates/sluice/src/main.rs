//! `sluice`: the command line. It parses flags and wires the crates; the work is theirs.

mod config;
mod demo;
mod generate;
mod produce;
mod query;
mod replay;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// glibc's allocator keeps an arena per thread and returns little of it: measured, the server
/// peaked at 630 MiB where the same run under mimalloc stays near what it uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Real-time streaming analytics in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the log, ingest over HTTP and the Kinesis API, SQL (HTTP and the PostgreSQL
    /// protocol), metrics.
    Serve {
        /// A config file: TOML with `data_dir`, `lake`, `http`, `pg` and `sql` (statements applied at start-up),
        /// or a `.sql` file of statements.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where streams are kept [default: ./sluice-data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the lake's tables are: s3://bucket/prefix (with the AWS_* variables:
        /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, …) or a folder
        /// [default: DATA_DIR/lake]
        #[arg(long)]
        lake: Option<String>,
        /// Be a worker of cluster NAME: every worker is started with the same name and lake;
        /// they share the streams (Kafka topics) and split their partitions
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// This worker's name in its cluster [default: HOSTNAME:HTTP_PORT]
        #[arg(long)]
        worker: Option<String>,
        /// The cluster's Kafka brokers (host:port,…): a stream created without a connector gets
        /// a topic of its own there, which every worker's doors produce into
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// The HTTP address: ingest, Kinesis API, SQL, status, metrics [default: 127.0.0.1:7878]
        #[arg(long)]
        http: Option<SocketAddr>,
        /// The PostgreSQL protocol's address: queries from psql and BI tools
        /// [default: 127.0.0.1:7879]
        #[arg(long)]
        pg: Option<SocketAddr>,
        /// TLS on both ports: the certificate chain, a PEM file
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key, a PEM file (PKCS#8, PKCS#1 or SEC1)
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Everything on the embedded default, no setup: the five use cases' streams and views fed
    /// by built-in generators, and the dashboard. Ctrl-C stops; running it again resumes.
    Demo {
        /// Where streams are kept [default: ./sluice-data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The HTTP address: the dashboard, ingest, SQL [default: 127.0.0.1:7878]
        #[arg(long)]
        http: Option<SocketAddr>,
        /// The PostgreSQL protocol's address [default: 127.0.0.1:7879]
        #[arg(long)]
        pg: Option<SocketAddr>,
    },
    /// Write events of a workload as NDJSON to stdout.
    Gen(generate::GenArgs),
    /// Send NDJSON from stdin to a stream.
    Produce(produce::ProduceArgs),
    /// Send historical events from Parquet, CSV or NDJSON files (local or s3://) to a stream,
    /// in event-time order, paced by event time or by count.
    Replay(replay::ReplayArgs),
    /// Run SQL against a server and print the answer.
    Sql(query::SqlArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            lake,
            cluster,
            worker,
            kafka,
            http,
            pg,
            tls_cert,
            tls_key,
        } => {
            init_tracing();
            let flags = config::Flags {
                data_dir,
                lake,
                cluster,
                worker,
                kafka,
                http,
                pg,
                tls_cert,
                tls_key,
            };
            let config = config::resolve(config.as_deref(), flags)?;
            runtime()?.block_on(serve(config))
        }
        Command::Demo { data_dir, http, pg } => {
            init_tracing();
            let flags = config::Flags {
                data_dir,
                http,
                pg,
                ..config::Flags::default()
            };
            runtime()?.block_on(demo::run(flags))
        }
        Command::Gen(args) => generate::run(args),
        Command::Produce(args) => runtime()?.block_on(produce::run(args)),
        Command::Replay(args) => runtime()?.block_on(replay::run(args)),
        Command::Sql(args) => runtime()?.block_on(query::run(args)),
    }
}

/// The HTTP client of `sluice sql`, `sluice produce` and `sluice replay`: with `SLUICE_TOKEN`, if set, as its
/// bearer token (a server with users asks for one).
fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("SLUICE_TOKEN") {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("SLUICE_TOKEN is not a valid token")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .context("cannot make an HTTP client")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Planning recurses over a statement's expressions (nested up to
        // sluice_sql::MAX_EXPRESSION_DEPTH); 2 MiB stacks end short of that in debug builds.
        // Only what is touched is committed.
        .thread_stack_size(32 << 20)
        .build()
        .context("cannot start the async runtime")
}

/// What `sluice serve` logs unless `SLUICE_LOG` says otherwise: the lake's libraries narrate
/// every snapshot at info, so only their warnings are shown (and of MERGE, whose every run
/// warns about a metric it lacks, only errors); the replication library narrates every status
/// update it sends (each second) and warns of the slot it finds at every start (a standby
/// worker's every two seconds), so only its errors are (the reader reports its own failures).
/// A cluster's workers commit to the same tables, and delta-rs warns at nearly every commit
/// that another's landed first (a conflict it then checks, as it should): only errors of its
/// commits are shown (one refused fails the round, which says why).
const DEFAULT_LOG: &str = "info,buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn,datafusion=warn,\
     deltalake_core::operations::merge=error,deltalake_core::kernel::transaction=error,\
     pg_walstream=error";

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| DEFAULT_LOG.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: sluice_server::ServerConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let server = sluice_server::Server::start(config).await?;
    // Lines on stdout that scripts (and tests) read to find the ports; the HTTP one comes last
    // and means ready.
    println!("sluice: pg listening on {}", server.pg_addr);
    println!("sluice: http listening on {}", server.http_addr);
    tracing::info!(data_dir = %data_dir.display(), "serving; Ctrl-C stops");
    shutdown_signal().await;
    tracing::info!("stopping: finishing in-flight requests");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
