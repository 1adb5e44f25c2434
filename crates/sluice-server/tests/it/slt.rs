//! The `.slt` files of `tests/slt` (sqllogictest), run through both SQL doors of a real server:
//! HTTP (`POST /v1/sql`, JSON answers) and the PostgreSQL protocol (tokio-postgres: stream
//! statements in the simple protocol, everything else in the extended one).
//!
//! Both doors must print every value alike, so values are normalized one way: `NULL`,
//! `true`/`false`, floats by Rust's `Display`, timestamps in RFC 3339 (`…T…Z`), `(empty)` for
//! an empty string. Each file runs against a fresh server; `$HTTP` in a file is the server's
//! HTTP address (for `system ok` commands that ingest with curl).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;
use sluice_server::{Server, ServerConfig};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio_postgres::types::Type;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

/// `POST /v1/sql`.
struct Http {
    client: reqwest::Client,
    url: String,
}

#[async_trait]
impl AsyncDB for Http {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let failed = |e: reqwest::Error| SltError(e.to_string());
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let ok = response.status().is_success();
        let answer: Value = serde_json::from_slice(&response.bytes().await.map_err(failed)?)
            .map_err(|e| SltError(e.to_string()))?;
        if !ok {
            return Err(SltError(answer["error"].as_str().unwrap_or("").to_string()));
        }
        let columns = answer["columns"].as_array().map_or(0, Vec::len);
        if columns == 0 {
            return Ok(DBOutput::StatementComplete(0));
        }
        // A write answers the rows it wrote as one UInt64 column `count`: what PostgreSQL's
        // command tag says (`INSERT 0 n`, `SELECT n`).
        if answer["columns"][0] == serde_json::json!({"name": "count", "type": "UInt64"}) {
            return Ok(DBOutput::StatementComplete(
                answer["rows"][0][0].as_u64().unwrap_or(0),
            ));
        }
        let rows = answer["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                row.as_array()
                    .into_iter()
                    .flatten()
                    .map(json_text)
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "http"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

fn json_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(float_text).unwrap_or_default(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => text(s.clone()),
        other => other.to_string(),
    }
}

fn float_text(f: f64) -> String {
    format!("{f}")
}

fn text(s: String) -> String {
    if s.is_empty() { "(empty)".into() } else { s }
}

/// The PostgreSQL protocol, as tokio-postgres speaks it.
struct Pg {
    client: tokio_postgres::Client,
}

#[async_trait]
impl AsyncDB for Pg {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let failed = |e: tokio_postgres::Error| {
            SltError(
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string()),
            )
        };
        if sluice_sql::is_dialect(sql) {
            let mut rows = Vec::new();
            for message in self.client.simple_query(sql).await.map_err(failed)? {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map_or("NULL".into(), |v| text(v.into())))
                            .collect::<Vec<String>>(),
                    );
                }
            }
            return Ok(match rows.first() {
                None => DBOutput::StatementComplete(0),
                Some(first) => DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; first.len()],
                    rows,
                },
            });
        }
        let statement = self.client.prepare(sql).await.map_err(failed)?;
        let columns = statement.columns();
        if columns.is_empty() {
            let written = self.client.execute(&statement, &[]).await.map_err(failed)?;
            return Ok(DBOutput::StatementComplete(written));
        }
        let rows = self.client.query(&statement, &[]).await.map_err(failed)?;
        let rows = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| pg_text(row, i, c.type_()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns.len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "pg"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

fn pg_text(row: &tokio_postgres::Row, i: usize, t: &Type) -> Result<String, SltError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
        show: impl Fn(T) -> String,
    ) -> Result<String, SltError> {
        let value: Option<T> = row.try_get(i).map_err(|e| SltError(e.to_string()))?;
        Ok(value.map_or("NULL".into(), show))
    }
    match *t {
        Type::BOOL => get(row, i, |b: bool| b.to_string()),
        Type::INT2 => get(row, i, |v: i16| v.to_string()),
        Type::INT4 => get(row, i, |v: i32| v.to_string()),
        Type::INT8 => get(row, i, |v: i64| v.to_string()),
        Type::FLOAT4 => get(row, i, |v: f32| float_text(v.into())),
        Type::FLOAT8 => get(row, i, float_text),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => get(row, i, text),
        Type::TIMESTAMPTZ => get(row, i, |v: DateTime<Utc>| {
            v.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        }),
        Type::TIMESTAMP => get(row, i, |v: NaiveDateTime| {
            v.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
        }),
        Type::DATE => get(row, i, |v: NaiveDate| v.to_string()),
        Type::JSON => get(row, i, |v: JsonText| v.0),
        ref other => Err(SltError(format!(
            "column {i}: the slt runner does not print type {other} yet"
        ))),
    }
}

/// A `json` value: its text (which is its binary form too).
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(t: &Type) -> bool {
        *t == Type::JSON
    }
}

fn slt_files() -> Vec<PathBuf> {
    // The crate's folder as the test runner says it now: the one compiled in is stale when the
    // workspace moved and the build cache was kept (cargo does not rebuild for that).
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo or nextest");
    let dir = Path::new(&crate_dir).join("../../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

async fn start(dir: &Path) -> Server {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Server::start(ServerConfig::new(dir, loopback, loopback))
        .await
        .unwrap()
}

async fn run_all<D, F, Fut>(connect: F)
where
    D: AsyncDB<ColumnType = DefaultColumnType, Error = SltError> + Send + 'static,
    F: Fn(Server) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (D, Server)> + Send,
{
    for file in slt_files() {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path()).await;
        let http = format!("http://{}", server.http_addr);
        let (db, server) = connect.clone()(server).await;
        let db = std::sync::Arc::new(tokio::sync::Mutex::new(Some(db)));
        let mut runner = Runner::new(move || {
            let db = db.clone();
            async move { Ok::<_, SltError>(db.lock().await.take().expect("one connection a file")) }
        });
        runner.set_var("HTTP".into(), http);
        let result = runner.run_file_async(&file).await;
        server.shutdown().await.unwrap();
        if let Err(e) = result {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_through_http() {
    run_all(|server: Server| async move {
        let db = Http {
            client: reqwest::Client::new(),
            url: format!("http://{}/v1/sql", server.http_addr),
        };
        (db, server)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_through_the_postgresql_protocol() {
    run_all(|server: Server| async move {
        let config = format!(
            "host=127.0.0.1 port={} user=sluice dbname=sluice",
            server.pg_addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        (Pg { client }, server)
    })
    .await;
}
