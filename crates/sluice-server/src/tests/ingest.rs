//! Sluice's own ingest API, `POST /v1/streams/{stream}/records`, as `Router` calls.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sluice_ingest::IngestConfig;
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use tower::ServiceExt;

/// The API with stream `ticks` (4 shards, no columns).
struct Fixture {
    _dir: tempfile::TempDir,
    log: std::sync::Arc<Log>,
    ingest: sluice_ingest::Ingest,
    app: axum::Router,
}

fn fixture(log_config: LogConfig, config: IngestConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (log, ingest, app) = super::app_with(dir.path(), None, log_config, config);
    log.create_stream(
        "ticks",
        StreamOptions {
            shards: 4,
            retention: Retention::default(),
            definition: serde_json::Value::Null,
            elsewhere: None,
        },
    )
    .unwrap();
    Fixture {
        _dir: dir,
        log,
        ingest,
        app,
    }
}

async fn call(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

fn records_in(log: &Log) -> u64 {
    let stream = log.stream("ticks").unwrap();
    stream.shards().iter().map(|s| s.bounds().1).sum()
}

#[tokio::test]
async fn ndjson_with_keys_lands_by_key_and_answers_with_sequences() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    let body = "{\"ticker\":\"AAPL\",\"p\":1}\n{\"ticker\":\"MSFT\",\"p\":2}\n\n{\"ticker\":\"AAPL\",\"p\":3}\n";
    let (status, _, json) = call(
        &f.app,
        post(
            "/v1/streams/ticks/records?key=ticker",
            "application/x-ndjson",
            body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["accepted"], 3);
    let stream = f.log.stream("ticks").unwrap();
    let aapl = stream.shard(stream.shard_for_key(b"AAPL")).unwrap();
    let read = aapl.read(0, 100, 1 << 20).unwrap();
    let aapl_records: Vec<_> = read
        .records
        .iter()
        .filter(|r| &r.key[..] == b"AAPL")
        .map(|r| r.data.to_vec())
        .collect();
    assert_eq!(
        aapl_records,
        [
            b"{\"ticker\":\"AAPL\",\"p\":1}".to_vec(),
            b"{\"ticker\":\"AAPL\",\"p\":3}".to_vec()
        ]
    );
    let shard = stream.shard_for_key(b"AAPL").to_string();
    assert_eq!(
        json["shard_sequences"][&shard],
        read.records.last().unwrap().seq
    );
}

#[tokio::test]
async fn json_arrays_are_split_into_records() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    let (status, _, json) = call(
        &f.app,
        post(
            "/v1/streams/ticks/records",
            "application/json",
            r#"[{"a":1}, {"a":[2,3]}]"#,
        ),
    )
    .await;
    assert_eq!(
        (status, json["accepted"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    assert_eq!(records_in(&f.log), 2);
}

#[tokio::test]
async fn bad_requests_are_refused_whole_and_say_why() {
    let f = fixture(
        LogConfig::default(),
        IngestConfig {
            max_body_bytes: 4 << 20,
            max_records_per_request: 1000,
            ..IngestConfig::default()
        },
    );
    call(
        &f.app,
        post(
            "/v1/streams/ticks/records",
            "application/x-ndjson",
            "{\"ok\":1}\n",
        ),
    )
    .await;
    let huge = format!(
        "{{\"ok\":1}}\n\"{}\"\n",
        "x".repeat(sluice_log::MAX_RECORD_BYTES)
    );
    let cases: Vec<(Request<Body>, StatusCode, &str, &str)> = vec![
        (
            post(
                "/v1/streams/ticks/records",
                "application/json",
                "[{\"a\":1},\n {\"b\": }]",
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "line 2 column 8",
        ),
        (
            post("/v1/streams/ticks/records", "application/x-ndjson", huge),
            StatusCode::BAD_REQUEST,
            "record_too_large",
            "record 2",
        ),
        (
            post(
                "/v1/streams/ticks/records",
                "text/plain",
                vec![b'x'; 5 << 20],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "limit",
        ),
        (
            post("/v1/streams/ticks/records", "application/x-ndjson", "\n \n"),
            StatusCode::BAD_REQUEST,
            "no_records",
            "no records",
        ),
        (
            post("/v1/streams/nope/records", "application/x-ndjson", "{}"),
            StatusCode::NOT_FOUND,
            "stream_not_found",
            "'nope'",
        ),
        (
            post("/v1/streams/a%2Fb/records", "application/x-ndjson", "{}"),
            StatusCode::BAD_REQUEST,
            "invalid_stream_name",
            "a/b",
        ),
        (
            post("/v1/streams/..%00/records", "application/x-ndjson", "{}"),
            StatusCode::BAD_REQUEST,
            "invalid_stream_name",
            "invalid",
        ),
        (
            post(
                "/v1/streams/ticks/records",
                "application/x-ndjson",
                "1\n".repeat(1001),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            "more than 1000 records",
        ),
    ];
    for (request, status, code, mentions) in cases {
        let uri = request.uri().to_string();
        let (got, _, json) = call(&f.app, request).await;
        assert_eq!(got, status, "{uri}: {json}");
        assert_eq!(json["code"], code, "{uri}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains(mentions),
            "{uri}: {json}"
        );
    }
    assert_eq!(
        records_in(&f.log),
        1,
        "nothing was written by the refused requests"
    );
}

#[tokio::test]
async fn backpressure_is_a_503_with_retry_after() {
    let log_config = LogConfig {
        inflight_bytes: 64,
        backpressure_wait: Duration::from_millis(10),
        ..LogConfig::default()
    };
    let f = fixture(log_config, IngestConfig::default());
    let body = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(100));
    let (status, headers, json) = call(
        &f.app,
        post("/v1/streams/ticks/records", "application/x-ndjson", body),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["code"], "backpressure");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(records_in(&f.log), 0);
}

#[tokio::test]
async fn requests_wait_for_memory_and_are_refused_when_none_frees() {
    let config = IngestConfig {
        max_request_memory: 1 << 20,
        ..IngestConfig::default()
    };
    let f = fixture(LogConfig::default(), config);
    let held = f
        .ingest
        .reserve(1 << 20)
        .await
        .expect("the whole budget is free");
    let (status, headers, json) = call(
        &f.app,
        post("/v1/streams/ticks/records", "application/x-ndjson", "{}\n"),
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("backpressure"))
    );
    assert_eq!(headers["retry-after"], "1");
    drop(held);
    let (status, _, _) = call(
        &f.app,
        post("/v1/streams/ticks/records", "application/x-ndjson", "{}\n"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the request goes through once memory is free"
    );
    assert_eq!(records_in(&f.log), 1);
}
