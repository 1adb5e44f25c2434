//! The Kinesis door, called as a `Router` (no socket) with arbitrary request bodies.
//!
//! Input: one byte choosing the operation (its low 7 bits, modulo the 10 operations), then the
//! body. A GetRecords whose choice byte has its high bit set gets a valid, checksummed iterator
//! made of the next bytes instead (so that the read path behind the iterator's CRC32C is
//! reached):
//!
//! ```text
//!  bytes 1-8  seq (u64 LE)     9  shard (mod 3: 2 does not exist)   10  age in 2 s steps
//!  11  bit 0: a stream that does not exist, bit 1: a stale stream id, bit 2: seq within the shard
//!  12-13  Limit (u16 LE, 0: none)
//! ```
//!
//! Checks: no panic, no 5xx but 503 (a request cannot make the log corrupt or fail), every
//! answer is JSON, and no record of a PutRecords fails with InternalFailure. The log is one
//! per process; after each input every stream but the fixture `s` is dropped (and `s` created
//! again if the input dropped it), and retention keeps its shards small.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use sluice_ingest::kinesis::{CONTENT_TYPE, ShardIterator, TARGET_PREFIX, routes};
use sluice_ingest::{Ingest, IngestConfig};
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use tower::ServiceExt;

const OPERATIONS: [&str; 10] = [
    "CreateStream",
    "DeleteStream",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListStreams",
    "ListShards",
    "PutRecord",
    "PutRecords",
    "GetShardIterator",
    "GetRecords",
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    log: Arc<Log>,
    app: Router,
    inputs: AtomicU64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = sluice_fuzz::scratch_dir("kinesis_request");
        let config = LogConfig {
            segment_bytes: 64 << 10,
            ..LogConfig::default()
        };
        let log = Arc::new(Log::open(root, config).expect("open the fixture log"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        create_fixture_stream(&runtime, &log);
        let app = routes().with_state(Ingest::new(log.clone(), IngestConfig::default(), None));
        Fixture {
            runtime,
            log,
            app,
            inputs: AtomicU64::new(0),
        }
    })
}

/// Stream `s`: two shards with a few records, and a retention that keeps them small.
fn create_fixture_stream(runtime: &tokio::runtime::Runtime, log: &Log) {
    let options = StreamOptions {
        shards: 2,
        retention: Retention {
            max_age_ms: None,
            max_bytes_per_shard: Some(1 << 20),
        },
        definition: serde_json::Value::Null,
        elsewhere: None,
    };
    let stream = log.create_stream("s", options).expect("create stream s");
    let mut batches = stream.batches();
    for i in 0..6u32 {
        let key = format!("key-{i}");
        batches
            .push(
                stream.shard_for_key(key.as_bytes()),
                key.as_bytes(),
                b"{\"a\":1}",
            )
            .unwrap();
    }
    for append in runtime.block_on(stream.append(batches)).expect("append") {
        append.result.expect("append to a shard");
    }
}

/// A GetRecords body with a valid iterator, made of the input's bytes.
fn get_records_body(fixture: &Fixture, bytes: &[u8]) -> Vec<u8> {
    let byte = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let stream = fixture.log.stream("s").expect("stream s");
    let mut seq = u64::from_le_bytes(std::array::from_fn(byte));
    let shard = u32::from(byte(8) % 3);
    let flags = byte(10);
    if flags & 4 != 0 {
        let end = stream.shard(shard.min(1)).unwrap().bounds().1;
        seq %= end + 2;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let iterator = ShardIterator {
        stream: if flags & 1 != 0 { "nope" } else { "s" }.to_string(),
        stream_id: stream.meta().id + u64::from(flags & 2 != 0),
        shard,
        seq,
        issued_ms: now - 2000 * i64::from(byte(9)),
    };
    let text = iterator.encode();
    assert_eq!(ShardIterator::decode(&text).expect("decode"), iterator);
    let limit = u16::from_le_bytes([byte(11), byte(12)]);
    let mut body = serde_json::json!({ "ShardIterator": text });
    if limit != 0 {
        body["Limit"] = limit.into();
    }
    body.to_string().into_bytes()
}

fn call(fixture: &Fixture, operation: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let request = Request::post("/")
        .header("x-amz-target", format!("{TARGET_PREFIX}{operation}"))
        .header("content-type", CONTENT_TYPE)
        .body(Body::from(body))
        .expect("request");
    fixture.runtime.block_on(async {
        let response = fixture
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("read the answer");
        (status, body.to_vec())
    })
}

/// Leaves the log as the next input expects it: only stream `s`, its shards kept small.
fn restore(fixture: &Fixture) {
    for stream in fixture.log.streams() {
        if stream.name() != "s" {
            fixture
                .log
                .drop_stream(stream.name())
                .expect("drop a stream");
        }
    }
    if fixture.log.stream("s").is_err() {
        create_fixture_stream(&fixture.runtime, &fixture.log);
    }
    if fixture
        .inputs
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(256)
    {
        fixture.log.enforce_retention().expect("retention");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let operation = OPERATIONS[usize::from(choice & 0x7f) % OPERATIONS.len()];
    let body = if operation == "GetRecords" && choice & 0x80 != 0 {
        get_records_body(fixture, rest)
    } else {
        // Whatever the text, decoding it as an iterator is refused or accepted, never a panic.
        let _ = ShardIterator::decode(&String::from_utf8_lossy(rest));
        rest.to_vec()
    };
    let (status, answer) = call(fixture, operation, body);
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{operation} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        serde_json::from_slice::<IgnoredAny>(&answer).is_ok(),
        "{operation} answered {status} with a body that is not JSON: {}",
        String::from_utf8_lossy(&answer)
    );
    if operation == "PutRecords" && status == StatusCode::OK {
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        for record in answer["Records"].as_array().expect("Records") {
            assert_ne!(record["ErrorCode"], "InternalFailure", "{record}");
        }
    }
    restore(fixture);
});
