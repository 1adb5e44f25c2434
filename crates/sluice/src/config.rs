//! The config file of `sluice serve`, resolved with the command line's flags (flags win).
//!
//! ```toml
//! data_dir = "./sluice-data"
//! lake = "s3://bucket/prefix"   # default: <data_dir>/lake
//! http = "127.0.0.1:7878"
//! pg = "127.0.0.1:7879"
//! commit_interval = "1s"   # how often the raw tables commit
//! view_interval = "500ms"  # how often the materialized views take what arrived
//! idle_timeout = "10s"     # a shard silent this long stops holding the watermark back
//! sql = """
//! CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL)
//!   WITH (shards = 4, event_time = 'ts', watermark = '5 seconds');
//! """
//!
//! tls_cert = "cert.pem"     # TLS on both ports (PEM: the chain, then its key)
//! tls_key = "key.pem"
//!
//! [limits]                  # each answered with a clear error when exceeded
//! max_connections = 1024    # open at once, per port
//! query_timeout = "5m"
//! max_result_bytes = 268435456         # a query's answer over HTTP (256 MiB)
//! max_request_bytes = 16777216         # an HTTP ingest request's body (16 MiB)
//! max_records_per_request = 500000
//!
//! [[users]]                 # who may connect (needed to listen beyond loopback)
//! name = "ops"
//! role = "read_only"        # or "admin"
//! secret_env = "OPS_SECRET" # the secret, from this environment variable…
//! # secret = "…"            # …or here, in a file only its owner can read
//!
//! [[dashboards]]            # saved dashboards, read-only in the page (changed here only)
//! name = "market"           # its URL: http://…/#/dashboards/market
//! title = "Market"
//! refresh_seconds = 2       # how often its panels run again while watched
//! [[dashboards.panels]]
//! title = "Close by ticker"
//! chart = "line"            # line, bar, area, number or table
//! sql = "SELECT window_end, ticker, close FROM ticks_1m ORDER BY window_end"
//! x = "window_end"          # optional, as are y = ["…"] and by = "…" (the lines)
//! ```
//!
//! Dashboards are a TOML block rather than a `CREATE DASHBOARD` statement: a dashboard is a
//! document (panels, each with a query and how to draw it), not a relation SQL reads, and as
//! TOML it has the shape the page and `PUT /v1/dashboards/{name}` give it, its queries in
//! multi-line strings rather than quoted inside another statement — the way Grafana provisions
//! dashboards from files.
//!
//! A file ending in `.sql` is taken as the `sql` alone. Statements are applied at every start;
//! applying the same file again changes nothing. Users come from the file and from the
//! environment: `SLUICE_ADMIN_SECRET` makes user `admin` and `SLUICE_READER_SECRET` user
//! `reader` (read-only). Secrets are never taken on the command line, where `ps` shows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use sluice_auth::{Role, User, Users};
use sluice_server::dashboard::saved::Dashboard;
use sluice_server::{ClusterConfig, ServerConfig, TlsFiles};

pub const DEFAULT_DATA_DIR: &str = "./sluice-data";
pub const DEFAULT_HTTP: &str = "127.0.0.1:7878";
pub const DEFAULT_PG: &str = "127.0.0.1:7879";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Where streams are kept.
    data_dir: Option<PathBuf>,
    /// Where the lake is: `s3://bucket/prefix` or a folder.
    lake: Option<String>,
    /// The cluster this server is a worker of.
    cluster: Option<String>,
    /// This worker's name in its cluster.
    worker: Option<String>,
    /// The cluster's Kafka brokers, where streams created without a connector live.
    kafka: Option<String>,
    /// The HTTP address.
    http: Option<SocketAddr>,
    /// The PostgreSQL protocol's address.
    pg: Option<SocketAddr>,
    /// How often each stream's raw tables commit what arrived (e.g. "1s", "250ms").
    commit_interval: Option<String>,
    /// How often each materialized view takes what its stream received (e.g. "500ms").
    view_interval: Option<String>,
    /// How long a shard may receive nothing before the watermark goes on without it.
    idle_timeout: Option<String>,
    /// Statements applied at start-up.
    sql: Option<String>,
    /// TLS on both ports: the certificate chain and its key, PEM files.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    limits: LimitsEntry,
    /// Who may connect.
    #[serde(default)]
    users: Vec<UserEntry>,
    /// Saved dashboards, declared here.
    #[serde(default)]
    dashboards: Vec<Dashboard>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    max_connections: Option<usize>,
    query_timeout: Option<String>,
    max_result_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    max_records_per_request: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    #[serde(default = "admin")]
    role: Role,
    secret: Option<String>,
    secret_env: Option<String>,
}

fn admin() -> Role {
    Role::Admin
}

/// The users the environment makes: its variable, the user's name and role.
const ENV_USERS: [(&str, &str, Role); 2] = [
    ("SLUICE_ADMIN_SECRET", "admin", Role::Admin),
    ("SLUICE_READER_SECRET", "reader", Role::ReadOnly),
];

/// What the command line says of the same things (it wins over the file).
#[derive(Debug, Default)]
pub struct Flags {
    pub data_dir: Option<PathBuf>,
    pub lake: Option<String>,
    pub cluster: Option<String>,
    pub worker: Option<String>,
    pub kafka: Option<String>,
    pub http: Option<SocketAddr>,
    pub pg: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

pub fn resolve(file: Option<&Path>, flags: Flags) -> anyhow::Result<ServerConfig> {
    resolve_with_env(file, flags, |name| std::env::var(name).ok())
}

/// [`resolve`], with the environment given (tests give their own).
pub fn resolve_with_env(
    file: Option<&Path>,
    flags: Flags,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<ServerConfig> {
    let parsed = match file {
        None => ConfigFile::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if path.extension().is_some_and(|e| e == "sql") {
                ConfigFile {
                    sql: Some(text),
                    ..ConfigFile::default()
                }
            } else {
                toml::from_str(&text)
                    .with_context(|| format!("{} is not a valid config file", path.display()))?
            }
        }
    };
    let data_dir = flags
        .data_dir
        .or(parsed.data_dir)
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let http = match flags.http.or(parsed.http) {
        Some(addr) => addr,
        None => DEFAULT_HTTP.parse().context("the default address")?,
    };
    let pg = match flags.pg.or(parsed.pg) {
        Some(addr) => addr,
        None => DEFAULT_PG.parse().context("the default address")?,
    };
    let users = users(&parsed.users, file, &env)?;
    let mut config = ServerConfig::new(data_dir, http, pg);
    config.users = users;
    config.statements = parsed.sql;
    config.dashboards = parsed.dashboards;
    config.lake = flags.lake.or(parsed.lake);
    let worker = flags.worker.or(parsed.worker);
    let kafka = flags.kafka.or(parsed.kafka);
    config.cluster = match flags.cluster.or(parsed.cluster) {
        Some(name) => Some(ClusterConfig {
            name,
            worker,
            kafka,
        }),
        None if worker.is_some() => anyhow::bail!("a worker's name needs a cluster (--cluster)"),
        None if kafka.is_some() => anyhow::bail!(
            "the Kafka brokers (--kafka) are a cluster's: give its name too (--cluster)"
        ),
        None => None,
    };
    if let Some(interval) = parsed.commit_interval {
        config.raw.commit_interval = duration("commit_interval", &interval)?;
    }
    if let Some(interval) = parsed.view_interval {
        config.views.interval = duration("view_interval", &interval)?;
    }
    if let Some(timeout) = parsed.idle_timeout {
        config.views.idle_timeout = duration("idle_timeout", &timeout)?;
    }
    config.tls = match (
        flags.tls_cert.or(parsed.tls_cert),
        flags.tls_key.or(parsed.tls_key),
    ) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => anyhow::bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
    };
    let limits = parsed.limits;
    let positive = |key: &str, value: Option<usize>| match value {
        Some(0) => anyhow::bail!("limits.{key} must be at least 1"),
        value => Ok(value),
    };
    if let Some(n) = positive("max_connections", limits.max_connections)? {
        config.limits.max_connections = n;
    }
    if let Some(timeout) = limits.query_timeout {
        config.limits.query_timeout = duration("limits.query_timeout", &timeout)?;
    }
    if let Some(n) = positive("max_result_bytes", limits.max_result_bytes)? {
        config.limits.max_result_bytes = n;
    }
    if let Some(n) = positive("max_request_bytes", limits.max_request_bytes)? {
        config.ingest.max_body_bytes = n;
    }
    if let Some(n) = positive("max_records_per_request", limits.max_records_per_request)? {
        config.ingest.max_records_per_request = n;
    }
    Ok(config)
}

/// The file's users and the environment's.
fn users(
    entries: &[UserEntry],
    file: Option<&Path>,
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Users>> {
    let mut users = Vec::new();
    for entry in entries {
        let secret = match (&entry.secret, &entry.secret_env) {
            (Some(secret), None) => {
                if let Some(path) = file {
                    private(path)?;
                }
                secret.clone()
            }
            (None, Some(var)) => env(var).with_context(|| {
                format!(
                    "user '{}': the environment variable {var} is not set",
                    entry.name
                )
            })?,
            _ => anyhow::bail!(
                "user '{}': give either secret or secret_env (the name of an environment variable)",
                entry.name
            ),
        };
        users.push(User::new(&entry.name, entry.role, secret)?);
    }
    for (var, name, role) in ENV_USERS {
        if let Some(secret) = env(var).filter(|s| !s.is_empty()) {
            users.push(User::new(name, role, secret).with_context(|| format!("in {var}"))?);
        }
    }
    Ok(Users::new(users)?)
}

/// Refuses a config file with secrets that others than its owner may read.
fn private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} holds secrets but others may read it (mode {:o}): chmod 600 it, or use secret_env",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// The `[[dashboards]]` of a config file's text (the demo's own file holds only those).
pub fn dashboards(toml_text: &str) -> anyhow::Result<Vec<Dashboard>> {
    let parsed: ConfigFile = toml::from_str(toml_text).context("not a valid config file")?;
    Ok(parsed.dashboards)
}

/// A positive duration of the config file, such as "1s" or "250ms".
fn duration(key: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{key} {text:?} is not a duration such as \"1s\" or \"250ms\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nhttp = \"127.0.0.1:9000\"\nsql = \"SHOW STREAMS\"\n",
        )
        .unwrap();
        let c = resolve(
            Some(&path),
            Flags {
                data_dir: Some("/from/flag".into()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.http.port(), 9000);
        assert_eq!(c.statements.as_deref(), Some("SHOW STREAMS"));
        let c = resolve(None, Flags::default()).unwrap();
        assert_eq!(
            (c.data_dir, c.http.to_string()),
            (PathBuf::from(DEFAULT_DATA_DIR), DEFAULT_HTTP.to_string())
        );
        let sql = dir.path().join("streams.sql");
        std::fs::write(&sql, "CREATE STREAM a;").unwrap();
        assert_eq!(
            resolve(Some(&sql), Flags::default())
                .unwrap()
                .statements
                .as_deref(),
            Some("CREATE STREAM a;")
        );
        std::fs::write(
            &path,
            "commit_interval = \"250ms\"\nview_interval = \"100ms\"\nidle_timeout = \"2s\"\n",
        )
        .unwrap();
        let c = resolve(Some(&path), Flags::default()).unwrap();
        assert_eq!(c.raw.commit_interval, std::time::Duration::from_millis(250));
        assert_eq!(c.views.interval, std::time::Duration::from_millis(100));
        assert_eq!(c.views.idle_timeout, std::time::Duration::from_secs(2));
        std::fs::write(&path, "commit_interval = \"soon\"\n").unwrap();
        let e = resolve(Some(&path), Flags::default()).unwrap_err();
        assert!(format!("{e:#}").contains("not a duration"), "{e:#}");
        std::fs::write(
            &path,
            "[limits]\nmax_connections = 10\nquery_timeout = \"2s\"\nmax_request_bytes = 1000\n",
        )
        .unwrap();
        let c = resolve(Some(&path), Flags::default()).unwrap();
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.limits.query_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.ingest.max_body_bytes, 1000);
        std::fs::write(&path, "[limits]\nmax_connections = 0\n").unwrap();
        let e = resolve(Some(&path), Flags::default()).unwrap_err();
        assert!(format!("{e:#}").contains("at least 1"), "{e:#}");
        std::fs::write(&path, "tls_cert = \"c.pem\"\n").unwrap();
        let e = resolve(Some(&path), Flags::default()).unwrap_err();
        assert!(format!("{e:#}").contains("both"), "{e:#}");
        std::fs::write(&path, "colour = 'red'\n").unwrap();
        let e = resolve(Some(&path), Flags::default()).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `colour`"), "{e:#}");
    }

    #[test]
    fn dashboards_are_a_toml_block_and_the_demo_declares_one_per_use_case() {
        let text = "[[dashboards]]\nname = \"ops\"\n[[dashboards.panels]]\ntitle = \"n\"\n\
                    chart = \"bar\"\nsql = \"SELECT 1 AS n\"\ny = [\"n\"]\n";
        let parsed = dashboards(text).unwrap();
        assert_eq!(parsed[0].name, "ops");
        assert_eq!(parsed[0].refresh_seconds, 2, "the default");
        let panel = &parsed[0].panels[0];
        assert_eq!(
            (panel.chart, panel.y.clone(), panel.x.clone()),
            (
                sluice_server::dashboard::saved::Chart::Bar,
                vec!["n".to_string()],
                None
            )
        );
        let e = dashboards("[[dashboards]]\nname = \"a\"\ncolour = \"red\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `colour`"), "{e:#}");
        let demo = dashboards(crate::demo::DEMO_DASHBOARDS).unwrap();
        let names: Vec<&str> = demo.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["market", "clickstream", "payments", "logs", "sensors"]
        );
    }

    #[test]
    fn users_come_from_the_file_and_the_environment_never_in_clear_for_all_to_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let env = |name: &str| match name {
            "OPS_SECRET" => Some("ops-secret-0123456789".to_string()),
            "SLUICE_READER_SECRET" => Some("reader-secret-0123456789".to_string()),
            _ => None,
        };
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(
            "[[users]]\nname = \"ops\"\nrole = \"read_only\"\nsecret_env = \"OPS_SECRET\"\n\
             [[users]]\nname = \"root\"\nsecret = \"root-secret-0123456789\"\n",
            0o600,
        );
        let c = resolve_with_env(Some(&path), Flags::default(), env).unwrap();
        let users = c.users.unwrap();
        let roles: Vec<(String, Role)> = users.iter().map(|u| (u.name.clone(), u.role)).collect();
        assert_eq!(
            roles,
            [
                ("ops".to_string(), Role::ReadOnly),
                ("root".to_string(), Role::Admin),
                ("reader".to_string(), Role::ReadOnly)
            ]
        );
        assert!(users.by_token("ops-secret-0123456789").is_some());
        // A secret in a file others may read is refused; so are weak secrets and unset variables.
        write(
            "[[users]]\nname = \"root\"\nsecret = \"root-secret-0123456789\"\n",
            0o644,
        );
        let e = resolve_with_env(Some(&path), Flags::default(), env).unwrap_err();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        write("[[users]]\nname = \"root\"\nsecret = \"short\"\n", 0o600);
        let e = resolve_with_env(Some(&path), Flags::default(), env).unwrap_err();
        assert!(format!("{e:#}").contains("too short"), "{e:#}");
        write("[[users]]\nname = \"x\"\nsecret_env = \"UNSET\"\n", 0o600);
        let e = resolve_with_env(Some(&path), Flags::default(), env).unwrap_err();
        assert!(format!("{e:#}").contains("UNSET is not set"), "{e:#}");
        // No users anywhere: no authentication.
        let c = resolve_with_env(None, Flags::default(), |_| None).unwrap();
        assert!(c.users.is_none());
    }
}
