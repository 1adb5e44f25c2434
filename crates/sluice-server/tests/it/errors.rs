//! Every door says the same error the same way: one table of error cases, each with what the
//! HTTP API, the PostgreSQL protocol and the Kinesis API answer; then each door driven through
//! its real socket over the cases a request can cause.

use std::net::SocketAddr;
use std::time::Duration;

use datafusion::error::DataFusionError;
use serde_json::{Value, json};
use sluice_error::{Class, Classify};
use sluice_ingest::kinesis::KinesisError;
use sluice_log::Error as LogError;
use sluice_server::{HttpError, Server, ServerConfig, ServerError};

/// An error, and how each door says it: HTTP (status, code, Retry-After), PostgreSQL
/// (SQLSTATE), Kinesis (exception, status) when the Kinesis door can meet it.
struct Case {
    error: ServerError,
    http: (u16, &'static str, Option<&'static str>),
    sqlstate: &'static str,
    kinesis: Option<(&'static str, u16)>,
}

fn log(e: LogError) -> ServerError {
    ServerError::Log(e)
}

fn cases() -> Vec<Case> {
    let case = |error, http, sqlstate, kinesis| Case {
        error,
        http,
        sqlstate,
        kinesis,
    };
    let syntax = sluice_sql::parse("SELEC 1").unwrap_err();
    let unknown_table = sluice_query::QueryError::of(&DataFusionError::Plan(
        "table 'sluice.public.nowhere' not found".into(),
    ));
    let s3_down = sluice_lake::Error::Store(object_store_generic());
    let query_s3_down = sluice_query::QueryError::of(&DataFusionError::External(Box::new(
        sluice_lake::Error::Store(object_store_generic()),
    )));
    vec![
        // The user's: 4xx, 22xxx / 42xxx.
        case(
            ServerError::Sql(syntax),
            (400, "sql_parse_error", None),
            "42601",
            None,
        ),
        case(
            ServerError::InvalidRequest("no statement".into()),
            (400, "invalid_request", None),
            "22000",
            None,
        ),
        case(
            log(LogError::StreamNotFound("s".into())),
            (404, "stream_not_found", None),
            "42P01",
            Some(("ResourceNotFoundException", 400)),
        ),
        case(
            log(LogError::StreamExists("s".into())),
            (409, "stream_exists", None),
            "42P07",
            Some(("ResourceInUseException", 400)),
        ),
        case(
            log(LogError::InUse {
                stream: "s".into(),
                reason: "materialized views read it".into(),
            }),
            (409, "stream_in_use", None),
            "2BP01",
            Some(("ResourceInUseException", 400)),
        ),
        case(
            log(LogError::InvalidName("..".into())),
            (400, "invalid_stream_name", None),
            "22023",
            Some(("ValidationException", 400)),
        ),
        case(
            log(LogError::RecordTooLarge { bytes: 2 << 20 }),
            (400, "record_too_large", None),
            "22000",
            Some(("ValidationException", 400)),
        ),
        case(
            ServerError::Query(unknown_table),
            (404, "query_error", None),
            "42P01",
            None,
        ),
        case(
            ServerError::Forbidden("read-only".into()),
            (403, "forbidden", None),
            "42501",
            None,
        ),
        case(
            ServerError::Pipeline(sluice_pipeline::PipelineError::ViewExists("v".into())),
            (409, "view_exists", None),
            "42P07",
            None,
        ),
        // The environment's: 503 with Retry-After, 5xxxx.
        case(
            log(LogError::Backpressure),
            (503, "backpressure", Some("1")),
            "53000",
            Some(("ProvisionedThroughputExceededException", 400)),
        ),
        case(
            log(LogError::Io {
                path: "/data/streams".into(),
                message: "No space left on device".into(),
                kind: std::io::ErrorKind::StorageFull,
            }),
            (503, "unavailable", Some("5")),
            "57P03",
            Some(("ServiceUnavailable", 503)),
        ),
        case(
            ServerError::Lake(s3_down),
            (503, "lake_unavailable", Some("5")),
            "57P03",
            None,
        ),
        case(
            ServerError::Query(query_s3_down),
            (503, "lake_unavailable", Some("5")),
            "57P03",
            None,
        ),
        case(
            ServerError::Timeout(Duration::from_secs(300)),
            (503, "query_timeout", None),
            "57014",
            None,
        ),
        // Ours: 500, XX000.
        case(
            log(LogError::Corrupt {
                path: "/data/x.seg".into(),
                offset: 7,
                reason: "checksum".into(),
            }),
            (500, "internal", None),
            "XX000",
            Some(("InternalFailure", 500)),
        ),
        case(
            ServerError::Internal("a bug".into()),
            (500, "internal", None),
            "XX000",
            None,
        ),
    ]
}

fn object_store_generic() -> datafusion::object_store::Error {
    datafusion::object_store::Error::Generic {
        store: "S3",
        source: "connection refused".into(),
    }
}

#[test]
fn the_http_api_says_each_error_by_its_class() {
    for case in cases() {
        let e = HttpError::of(&case.error);
        let (status, code, retry) = case.http;
        assert_eq!(
            (e.status.as_u16(), e.code),
            (status, code),
            "{}",
            case.error
        );
        assert_eq!(
            e.retry_after.map(|s| s.to_string()).as_deref(),
            retry,
            "{}",
            case.error
        );
    }
}

#[test]
fn the_postgresql_protocol_says_each_error_by_its_sqlstate() {
    for case in cases() {
        assert_eq!(
            case.error.class().sqlstate(),
            case.sqlstate,
            "{}",
            case.error
        );
    }
}

#[test]
fn the_kinesis_api_says_each_log_error_in_its_own_names() {
    for case in cases() {
        let (ServerError::Log(e), Some((kind, status))) = (case.error, case.kinesis) else {
            continue;
        };
        let message = e.to_string();
        let kinesis = KinesisError::from(e);
        assert_eq!(
            (kinesis.kind, kinesis.status.as_u16()),
            (kind, status),
            "{message}"
        );
    }
}

async fn start(dir: &std::path::Path) -> Server {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Server::start(ServerConfig::new(dir, loopback, loopback))
        .await
        .unwrap()
}

async fn post_sql(http: &reqwest::Client, server: &Server, sql: &str) -> (u16, Value) {
    let response = http
        .post(format!("http://{}/v1/sql", server.http_addr))
        .body(json!({ "sql": sql }).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

const TICKS: &str = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL) \
                     WITH (shards = 2, event_time = 'ts')";
const VIEW: &str = "CREATE MATERIALIZED VIEW prices AS SELECT ticker, price FROM ticks";

/// The same cases through each door's socket: a syntax error (with its position), an unknown
/// table, a stream views read dropped (by SQL, and by the Kinesis API), an empty statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_says_the_same_errors_through_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = reqwest::Client::new();
    assert_eq!(post_sql(&http, &server, TICKS).await.0, 200);
    assert_eq!(post_sql(&http, &server, VIEW).await.0, 200);

    // HTTP.
    let (status, body) = post_sql(&http, &server, "SELECT 1;\nSELEC 2").await;
    assert_eq!(
        (status, &body["code"], &body["line"], &body["column"]),
        (400, &json!("sql_parse_error"), &json!(2), &json!(1)),
        "{body}"
    );
    let (status, body) = post_sql(&http, &server, "SELECT * FROM nowhere").await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("query_error")),
        "{body}"
    );
    let (status, body) = post_sql(&http, &server, "DROP STREAM ticks").await;
    assert_eq!(
        (status, &body["code"]),
        (409, &json!("stream_in_use")),
        "{body}"
    );
    for empty in ["", "  ;  ", "-- nothing"] {
        let (status, body) = post_sql(&http, &server, empty).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("invalid_request")),
            "{empty:?}: {body}"
        );
    }

    // Kinesis: DeleteStream is refused as DROP STREAM is.
    let response = http
        .post(format!("http://{}/", server.http_addr))
        .header("x-amz-target", "Kinesis_20131202.DeleteStream")
        .header("content-type", "application/x-amz-json-1.1")
        .body(r#"{"StreamName":"ticks"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["__type"], "ResourceInUseException", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("prices"),
        "{body}"
    );

    // PostgreSQL.
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=sluice", server.pg_addr.port()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let pg = |sql: &'static str| {
        let client = &client;
        async move {
            let e = client.simple_query(sql).await.unwrap_err();
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
            (db.code().code().to_string(), db.position().cloned())
        }
    };
    use tokio_postgres::error::ErrorPosition;
    let grouped = "SELECT 1\n  FROM ticks GROUP price";
    let at = grouped.find("GROUP").unwrap() as u32 + 1;
    assert_eq!(
        pg(grouped).await,
        ("42601".into(), Some(ErrorPosition::Original(at)))
    );
    assert_eq!(
        pg("SELEC 1").await,
        ("42601".into(), Some(ErrorPosition::Original(1)))
    );
    assert_eq!(pg("SELECT * FROM nowhere").await.0, "42P01");
    assert_eq!(pg("DROP STREAM ticks").await.0, "2BP01");
    assert_eq!(
        pg("CREATE STREAM s WITH (shards = 0)").await,
        ("42601".into(), Some(ErrorPosition::Original(23)))
    );
    // The connection goes on after every error.
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());
    drop(client);
    server.shutdown().await.unwrap();
}

/// The classes' own promise, checked once more from the outside: the environment's errors
/// tell the client to retry, the user's never do.
#[test]
fn only_what_waiting_mends_says_retry() {
    for case in cases() {
        let waits = case.error.class().retry_after().is_some();
        assert_eq!(
            waits,
            matches!(case.error.class(), Class::Busy | Class::Unavailable),
            "{}",
            case.error
        );
    }
}
