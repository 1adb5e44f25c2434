//! The server's routes as `Router` calls, and the config file's statements.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sluice_ingest::IngestConfig;
use sluice_log::{Log, LogConfig};
use tower::ServiceExt;

use crate::{AppState, ServerError, router, sql};

mod ingest;

fn app(dir: &std::path::Path) -> (Arc<Log>, axum::Router) {
    app_with_users(dir, None)
}

fn app_with_users(
    dir: &std::path::Path,
    users: Option<sluice_auth::Users>,
) -> (Arc<Log>, axum::Router) {
    let (log, _, app) = app_with(dir, users, LogConfig::default(), IngestConfig::default());
    (log, app)
}

/// The API over a log and lake in `dir`, with `users` and the log's and ingest doors' settings;
/// the doors' `Ingest` too (its request memory).
fn app_with(
    dir: &std::path::Path,
    users: Option<sluice_auth::Users>,
    log_config: LogConfig,
    ingest: IngestConfig,
) -> (Arc<Log>, sluice_ingest::Ingest, axum::Router) {
    let log = Arc::new(Log::open(dir, log_config).unwrap());
    let lake = sluice_lake::Lake::local(dir.join("lake")).unwrap();
    let pipelines = sluice_pipeline::Pipelines::open(
        log.clone(),
        lake.clone(),
        dir.join("views"),
        sluice_pipeline::PipelinesConfig::default(),
        Arc::new(sluice_pipeline::view::SystemClock),
    )
    .unwrap();
    #[cfg(feature = "postgres")]
    let sources = sluice_ingest::postgres::Sources::new(
        Arc::new(sluice_ingest::postgres::Directory(dir.join("sources"))),
        log.clone(),
        Arc::new(crate::sources::Downstream(pipelines.clone())),
    );
    let state = AppState {
        #[cfg(feature = "postgres")]
        sources,
        log: log.clone(),
        query: sluice_query::QueryEngine::new(lake.clone(), log.clone()),
        pipelines,
        lake,
        rates: Arc::default(),
        tables: Arc::default(),
        stopping: tokio::sync::watch::channel(false).1,
        metrics: crate::metrics::install(),
        users: users.map(Arc::new),
        limits: crate::Limits::default(),
        dashboard_edits: Arc::default(),
        cluster: None,
    };
    let ingest = sluice_ingest::Ingest::new(log.clone(), ingest, state.users.clone());
    (log, ingest.clone(), router(state, ingest))
}

async fn request(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, Value, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

async fn sql(app: &axum::Router, statement: &str) -> (StatusCode, Value) {
    let (status, json, _) = request(
        app,
        "POST",
        "/v1/sql",
        &json!({ "sql": statement }).to_string(),
    )
    .await;
    (status, json)
}

const TICKS: &str = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL) \
                     WITH (shards = 2, event_time = 'ts', watermark = '5 seconds')";

#[tokio::test]
async fn stream_statements_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path());
    assert_eq!(sql(&app, TICKS).await.0, StatusCode::OK);
    let (status, json) = sql(&app, TICKS).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::CONFLICT, Some("stream_exists"))
    );
    assert_eq!(
        sql(
            &app,
            &TICKS.replace("CREATE STREAM", "CREATE STREAM IF NOT EXISTS")
        )
        .await
        .0,
        StatusCode::OK
    );

    let (_, shown) = sql(&app, "SHOW STREAMS").await;
    assert_eq!(
        shown["rows"],
        json!([["ticks", 2, "json", "ts", "5s", "1day", 0, 0]])
    );
    let (_, described) = sql(&app, "DESCRIBE ticks").await;
    assert_eq!(
        described["rows"],
        json!([
            ["ticker", "TEXT", "NO"],
            ["price", "DOUBLE", "YES"],
            ["ts", "TIMESTAMP", "NO"]
        ])
    );

    let (status, json) = sql(&app, "CREATE STREAM t WITH (shards = 0)").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("sql_parse_error"))
    );
    assert_eq!(
        (json["line"].as_u64(), json["column"].as_u64()),
        (Some(1), Some(23)),
        "the option's position: {json}"
    );
    let (status, json) = sql(&app, "SELECT 1 + 1 AS two").await;
    assert_eq!(
        (status, &json["rows"]),
        (StatusCode::OK, &json!([[2]])),
        "{json}"
    );
    let (status, json) = sql(&app, "CREATE VIEW v AS SELECT 1").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("statement_refused")),
        "{json}"
    );
    let (status, json) = sql(&app, "SELECT * FROM nowhere").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("query_error")),
        "{json}"
    );
    assert!(
        json["error"].as_str().unwrap().contains("nowhere"),
        "{json}"
    );
    let (status, json, _) = request(&app, "POST", "/v1/sql", "{\"query\": 1}").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );

    assert_eq!(sql(&app, "DROP STREAM ticks").await.0, StatusCode::OK);
    let (status, json) = sql(&app, "DROP STREAM ticks").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("stream_not_found"))
    );
    assert_eq!(
        sql(&app, "DROP STREAM IF EXISTS ticks").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn status_and_metrics_follow_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path());
    sql(&app, TICKS).await;
    let (status, _, _) = request(
        &app,
        "POST",
        "/v1/streams/ticks/records?key=ticker",
        "{\"ticker\":\"A\"}\n{\"ticker\":\"B\"}\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, streams, _) = request(&app, "GET", "/v1/streams", "").await;
    assert_eq!(streams["streams"][0]["name"], "ticks");
    assert_eq!(streams["streams"][0]["records"], 2);
    let (status, recent, _) = request(&app, "GET", "/v1/streams/ticks/recent?limit=1", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(recent["records"].as_array().unwrap().len(), 1);
    assert!(
        recent["records"][0]["data"]
            .as_str()
            .unwrap()
            .contains("ticker")
    );
    for (path, status) in [
        ("/v1/streams/ticks/recent?limit=0", StatusCode::BAD_REQUEST),
        (
            "/v1/streams/ticks/recent?limit=1001",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/streams/nope/recent", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(request(&app, "GET", path, "").await.0, status, "{path}");
    }
    let (status, _, text) = request(&app, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "sluice_stream_records_in_total{stream=\"ticks\"}",
        "sluice_log_fsync_seconds_bucket",
        "sluice_log_append_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[test]
fn the_config_file_applies_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let file = format!("{TICKS};\nCREATE STREAM clicks;");
    assert!(sql::apply_config(&log, &file).unwrap().is_empty());
    let created: Vec<_> = log.streams().iter().map(|s| s.meta().clone()).collect();
    assert!(sql::apply_config(&log, &file).unwrap().is_empty());
    let again: Vec<_> = log.streams().iter().map(|s| s.meta().clone()).collect();
    assert_eq!(
        created, again,
        "applying the same file again changes nothing"
    );
    let changed = file.replace("shards = 2", "shards = 3");
    match sql::apply_config(&log, &changed) {
        Err(ServerError::Config(message)) => {
            assert!(message.contains("different definition"), "{message}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(matches!(
        sql::apply_config(&log, "CREATE STREAM"),
        Err(ServerError::Config(_))
    ));
}

#[tokio::test]
async fn answers_come_as_json_csv_or_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path());
    sql(&app, TICKS).await;
    let ask = |accept: &'static str| {
        Request::post("/v1/sql")
            .header("accept", accept)
            .body(Body::from(json!({"sql": "SHOW STREAMS"}).to_string()))
            .unwrap()
    };
    let response = app.clone().oneshot(ask("text/csv")).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    assert!(csv.starts_with("name,shards,format,event_time,watermark,retention,records,bytes\nticks,2,json,ts,5s,1day,0,0"), "{csv}");

    let response = app
        .clone()
        .oneshot(ask(crate::output::ARROW_STREAM))
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let reader =
        sluice_query::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(batches[0].schema().field(1).name(), "shards");
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path());
    let (status, _, page) = request(&app, "GET", "/", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/assets/app.js") && page.contains("/assets/uPlot.iife.min.js"));
    for asset in [
        "app.js",
        "app.css",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "uPlot.LICENSE",
    ] {
        let (status, _, body) = request(&app, "GET", &format!("/assets/{asset}"), "").await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(!body.is_empty(), "{asset}");
    }
    let (status, error, _) = request(&app, "GET", "/assets/..%2Fsecrets", "").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, error, _) = request(&app, "GET", "/v1/views/nope/data", "").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("view_not_found"))
    );
    let (status, tables, _) = request(&app, "GET", "/v1/tables", "").await;
    assert_eq!(
        (status, tables["tables"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

#[tokio::test]
async fn max_rows_truncates_an_answer_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path());
    let body = json!({"sql": "SELECT * FROM generate_series(1, 10)", "max_rows": 3}).to_string();
    let (status, answer, _) = request(&app, "POST", "/v1/sql", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["rows"], json!([[1], [2], [3]]));
    assert_eq!(answer["truncated"], true);
    let body = json!({"sql": "SELECT 1", "max_rows": 3}).to_string();
    let (_, answer, _) = request(&app, "POST", "/v1/sql", &body).await;
    assert!(answer.get("truncated").is_none(), "{answer}");
}

/// With users, every route but the dashboard's files asks for a bearer token; a read-only
/// token may query and watch but not ingest or change anything.
#[tokio::test]
async fn bearer_tokens_and_read_only_users() {
    use sluice_auth::{Role, User, Users};
    let dir = tempfile::tempdir().unwrap();
    let users = Users::new(vec![
        User::new("admin", Role::Admin, "admin-secret-0123456789").unwrap(),
        User::new("reader", Role::ReadOnly, "reader-secret-0123456789").unwrap(),
    ])
    .unwrap();
    let (log, app) = app_with_users(dir.path(), users);
    let call = |method: &str, path: &str, token: Option<&str>, body: String| {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body)).unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let challenge = response.headers().get("www-authenticate").cloned();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (
                status,
                json["code"].as_str().unwrap_or("").to_string(),
                challenge,
            )
        }
    };
    let sql = |text: &str| json!({ "sql": text }).to_string();
    let admin = Some("admin-secret-0123456789");
    let reader = Some("reader-secret-0123456789");

    // The page and its files hold no data.
    assert_eq!(
        call("GET", "/", None, String::new()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call("GET", "/assets/app.js", None, String::new()).await.0,
        StatusCode::OK
    );
    for (token, code) in [
        (None, "unauthorized"),
        (Some("admin-secret-012345678"), "unauthorized"),
    ] {
        for (method, path, body) in [
            ("GET", "/v1/streams", String::new()),
            ("GET", "/metrics", String::new()),
            ("GET", "/v1/live/overview", String::new()),
            ("POST", "/v1/sql", sql("SELECT 1")),
            ("POST", "/v1/streams/ticks/records", "{}\n".to_string()),
        ] {
            let (status, got, challenge) = call(method, path, token, body).await;
            assert_eq!(
                (status, got.as_str()),
                (StatusCode::UNAUTHORIZED, code),
                "{method} {path}"
            );
            assert_eq!(challenge.unwrap(), "Bearer realm=\"sluice\"");
        }
    }
    assert_eq!(
        call("POST", "/v1/sql", admin, sql(TICKS)).await.0,
        StatusCode::OK
    );
    let ingest = || r#"{"ticker":"A","price":1,"ts":"2026-01-01T00:00:00Z"}"#.to_string() + "\n";
    assert_eq!(
        call("POST", "/v1/streams/ticks/records", admin, ingest())
            .await
            .0,
        StatusCode::OK
    );
    // The reader may look …
    for (method, path, body) in [
        ("GET", "/v1/streams", String::new()),
        ("GET", "/v1/tables", String::new()),
        ("POST", "/v1/sql", sql("SELECT count(*) FROM ticks")),
        ("POST", "/v1/sql", sql("SHOW STREAMS")),
        ("POST", "/v1/sql", sql("DESCRIBE ticks")),
        ("POST", "/v1/sql", sql("EXPLAIN SELECT * FROM ticks")),
    ] {
        assert_eq!(
            call(method, path, reader, body).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    // … but not touch.
    for (path, body) in [
        ("/v1/streams/ticks/records", ingest()),
        ("/v1/sql", sql("DROP STREAM ticks")),
        ("/v1/sql", sql("CREATE STREAM other (a INT)")),
        ("/v1/sql", sql("CREATE TABLE t AS SELECT 1 AS a")),
        ("/v1/sql", sql("INSERT INTO t VALUES (1)")),
        ("/v1/sql", sql("DROP TABLE ticks")),
        ("/v1/sql", sql("OPTIMIZE ticks")),
        ("/v1/sql", sql("VACUUM ticks")),
        ("/v1/sql", sql("EXPLAIN INSERT INTO t VALUES (1)")),
        (
            "/v1/sql",
            sql("CREATE MATERIALIZED VIEW v AS SELECT ticker, count(*) FROM ticks GROUP BY ticker"),
        ),
        ("/v1/sql", sql("SELECT 1; DROP STREAM ticks")),
    ] {
        let (status, code, _) = call("POST", path, reader, body.clone()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{body}"
        );
    }
    assert_eq!(log.streams().len(), 1, "the stream is still there");
    let records: u64 = log
        .stream("ticks")
        .unwrap()
        .shards()
        .iter()
        .map(|s| s.bounds().1)
        .sum();
    assert_eq!(records, 1, "only the admin's record");
}
