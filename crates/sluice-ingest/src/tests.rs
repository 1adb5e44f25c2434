//! What the ingest crate's tests share: a log with stream `ticks` (4 shards) behind the Kinesis
//! door, called as a `Router` without a socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use tower::ServiceExt;

use crate::{Ingest, IngestConfig};

pub(crate) struct Fixture {
    pub _dir: tempfile::TempDir,
    pub log: Arc<Log>,
    pub app: axum::Router,
}

pub(crate) fn fixture(log_config: LogConfig, config: IngestConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), log_config).unwrap());
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
    let ingest = Ingest::new(log.clone(), config, None);
    let app = crate::kinesis::routes().with_state(ingest);
    Fixture {
        _dir: dir,
        log,
        app,
    }
}

pub(crate) async fn call(
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
