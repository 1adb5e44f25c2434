//! The Kinesis API, called as a `Router` without a socket. (boto3 drives it end to end in
//! `tests/e2e`.)

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sluice_log::LogConfig;

use crate::IngestConfig;
use crate::tests::{call, fixture};

/// Calls the operation `target` names (`Kinesis_20131202.PutRecords`) with `body`.
async fn aws(app: &axum::Router, target: String, body: String) -> (StatusCode, Value) {
    let request = Request::post("/")
        .header("x-amz-target", target)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from(body))
        .unwrap();
    let (status, _, json) = call(app, request).await;
    (status, json)
}

async fn kinesis(app: &axum::Router, operation: &str, body: &str) -> (StatusCode, Value) {
    aws(
        app,
        format!("Kinesis_20131202.{operation}"),
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn put_and_get_records_round_trip() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    let (status, _) = kinesis(
        &f.app,
        "CreateStream",
        r#"{"StreamName":"k","ShardCount":2}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let records: Vec<Value> = (0..10)
        .map(|i| json!({"Data": STANDARD.encode(format!("event {i}")), "PartitionKey": format!("key-{i}")}))
        .collect();
    let (status, put) = kinesis(
        &f.app,
        "PutRecords",
        &json!({"StreamName": "k", "Records": records}).to_string(),
    )
    .await;
    assert_eq!(
        (status, put["FailedRecordCount"].as_u64()),
        (StatusCode::OK, Some(0)),
        "{put}"
    );
    let mut seen = Vec::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let (_, it) = kinesis(
            &f.app,
            "GetShardIterator",
            &json!({"StreamName": "k", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"})
                .to_string(),
        )
        .await;
        let (status, got) = kinesis(
            &f.app,
            "GetRecords",
            &json!({"ShardIterator": it["ShardIterator"]}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["MillisBehindLatest"], 0);
        for r in got["Records"].as_array().unwrap() {
            let data =
                String::from_utf8(STANDARD.decode(r["Data"].as_str().unwrap()).unwrap()).unwrap();
            let expected = put["Records"]
                .as_array()
                .unwrap()
                .iter()
                .position(|p| p["ShardId"] == shard && p["SequenceNumber"] == r["SequenceNumber"])
                .expect("every record read was put, at that shard and sequence number");
            assert_eq!(data, format!("event {expected}"));
            assert_eq!(r["PartitionKey"], format!("key-{expected}"));
            seen.push(expected);
        }
    }
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn errors_have_kinesis_shapes() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    let cases = [
        ("Frobnicate", "{}", "UnknownOperationException"),
        ("CreateStream", "not json", "SerializationException"),
        (
            "CreateStream",
            r#"{"StreamName":"x","ShardCount":"two"}"#,
            "SerializationException",
        ),
        ("CreateStream", r#"{"ShardCount":1}"#, "ValidationException"),
        (
            "CreateStream",
            r#"{"StreamName":"a/b"}"#,
            "ValidationException",
        ),
        (
            "CreateStream",
            r#"{"StreamName":"ticks"}"#,
            "ResourceInUseException",
        ),
        (
            "DescribeStream",
            r#"{"StreamName":"nope"}"#,
            "ResourceNotFoundException",
        ),
        (
            "PutRecord",
            r#"{"StreamName":"ticks","Data":"eA=="}"#,
            "ValidationException",
        ),
        (
            "PutRecords",
            r#"{"StreamName":"ticks","Records":[]}"#,
            "ValidationException",
        ),
        (
            "GetShardIterator",
            r#"{"StreamName":"ticks","ShardId":"shardId-000000000009","ShardIteratorType":"LATEST"}"#,
            "ResourceNotFoundException",
        ),
        (
            "GetShardIterator",
            r#"{"StreamName":"ticks","ShardId":"shardId-000000000000","ShardIteratorType":"SOON"}"#,
            "ValidationException",
        ),
        (
            "GetShardIterator",
            r#"{"StreamName":"ticks","ShardId":"shardId-000000000000","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"abc"}"#,
            "InvalidArgumentException",
        ),
        (
            "GetRecords",
            r#"{"ShardIterator":"Z2FyYmxlZA=="}"#,
            "InvalidArgumentException",
        ),
    ];
    for (operation, body, kind) in cases {
        let (status, json) = kinesis(&f.app, operation, body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{operation} {body}: {json}"
        );
        assert_eq!(json["__type"], kind, "{operation} {body}: {json}");
        assert!(!json["message"].as_str().unwrap().is_empty());
    }
    let request = Request::post("/").body(Body::from("{}")).unwrap();
    let (status, _, json) = call(&f.app, request).await;
    assert_eq!(
        (status, json["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("UnknownOperationException"))
    );
}

#[tokio::test]
async fn oversized_and_forged_requests_are_refused_cheaply() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    // 100,000 empty records: counted while parsing, never built.
    let body = format!(
        r#"{{"StreamName":"ticks","Records":[{}{{}}]}}"#,
        "{},".repeat(99_999)
    );
    let (status, json) = kinesis(&f.app, "PutRecords", &body).await;
    assert_eq!(
        (status, json["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ValidationException"))
    );
    assert!(
        json["message"].as_str().unwrap().contains("found 100000"),
        "{json}"
    );

    // An iterator naming a shard the stream does not have (its checksum is not a secret).
    let stream = f.log.stream("ticks").unwrap();
    let forged = super::ShardIterator {
        stream: "ticks".into(),
        stream_id: stream.id(),
        shard: 99,
        seq: 0,
        issued_ms: i64::MIN,
    };
    let (status, json) = kinesis(
        &f.app,
        "GetRecords",
        &json!({"ShardIterator": forged.encode()}).to_string(),
    )
    .await;
    assert_eq!(
        (status, json["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ExpiredIteratorException"))
    );
    let forged = super::ShardIterator {
        issued_ms: chrono::Utc::now().timestamp_millis(),
        ..forged
    };
    let (status, json) = kinesis(
        &f.app,
        "GetRecords",
        &json!({"ShardIterator": forged.encode()}).to_string(),
    )
    .await;
    assert_eq!(
        (status, json["__type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ResourceNotFoundException"))
    );
}

/// With users, every request must carry a valid Signature V4 of a known key, and a read-only
/// user may read but not write.
#[tokio::test]
async fn signatures_are_verified_and_roles_enforced() {
    use sluice_auth::sigv4::{self, SignedRequest};
    use sluice_auth::{Role, User, Users};

    let f = fixture(LogConfig::default(), IngestConfig::default());
    let users = Users::new(vec![
        User::new("writer", Role::Admin, "writer-secret-0123456789").unwrap(),
        User::new("reader", Role::ReadOnly, "reader-secret-0123456789").unwrap(),
    ])
    .unwrap()
    .map(std::sync::Arc::new);
    let ingest = crate::Ingest::new(f.log.clone(), IngestConfig::default(), users);
    let app = super::routes().with_state(ingest);
    let put = r#"{"StreamName":"ticks","Data":"aGk=","PartitionKey":"k"}"#;
    // Signs `signed` as `key` with `secret`, then sends `sent` under that signature, to a
    // Kinesis operation (or another service's: `Firehose_20150804.PutRecord`).
    let send = |key: &str, secret: &str, operation: &str, signed: &str, sent: &str| {
        let target = match operation.contains('.') {
            true => operation.to_string(),
            false => format!("Kinesis_20131202.{operation}"),
        };
        let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let headers: [(&str, &[u8]); 3] = [
            ("host", b"localhost"),
            ("x-amz-date", date.as_bytes()),
            ("x-amz-target", target.as_bytes()),
        ];
        let authorization = sigv4::sign(
            &SignedRequest {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: signed.as_bytes(),
            },
            key,
            secret,
            "us-east-1",
            "kinesis",
        );
        let request = Request::post("/")
            .header("host", "localhost")
            .header("x-amz-date", &date)
            .header("x-amz-target", &target)
            .header("authorization", authorization)
            .body(Body::from(sent.to_string()))
            .unwrap();
        let app = app.clone();
        async move {
            let (status, _, json) = call(&app, request).await;
            (status, json["__type"].as_str().unwrap_or("").to_string())
        }
    };
    let writer = "writer-secret-0123456789";
    let reader = "reader-secret-0123456789";
    assert_eq!(
        send("writer", writer, "PutRecord", put, put).await,
        (StatusCode::OK, String::new())
    );
    let refused = [
        (
            send("writer", "wrong-secret-0123456789", "PutRecord", put, put).await,
            "InvalidSignatureException",
        ),
        (
            send(
                "writer",
                writer,
                "PutRecord",
                put,
                &put.replace("aGk=", "aGo="),
            )
            .await,
            "InvalidSignatureException",
        ),
        (
            send("nobody", writer, "PutRecord", put, put).await,
            "UnrecognizedClientException",
        ),
        (
            send("reader", reader, "PutRecord", put, put).await,
            "AccessDeniedException",
        ),
        (
            send("reader", reader, "CreateStream", "{}", "{}").await,
            "AccessDeniedException",
        ),
        (
            send(
                "reader",
                reader,
                "Firehose_20150804.PutRecordBatch",
                "{}",
                "{}",
            )
            .await,
            "AccessDeniedException",
        ),
    ];
    for ((status, kind), expected) in refused {
        assert_eq!((status, kind.as_str()), (StatusCode::BAD_REQUEST, expected));
    }
    // Unsigned: refused before the operation is even looked at.
    assert_eq!(
        kinesis(&app, "ListStreams", "{}").await.1["__type"],
        "MissingAuthenticationTokenException"
    );
    assert_eq!(
        send("reader", reader, "ListStreams", "{}", "{}").await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        send(
            "reader",
            reader,
            "Firehose_20150804.ListDeliveryStreams",
            "{}",
            "{}"
        )
        .await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        f.log
            .stream("ticks")
            .unwrap()
            .shards()
            .iter()
            .map(|s| s.bounds().1)
            .sum::<u64>(),
        1,
        "only the writer's record"
    );
}

async fn firehose(app: &axum::Router, operation: &str, body: Value) -> (StatusCode, Value) {
    aws(
        app,
        format!("Firehose_20150804.{operation}"),
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_delivery_stream_is_a_stream_and_its_batches_spread_over_its_shards() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    let (status, created) = firehose(
        &f.app,
        "CreateDeliveryStream",
        json!({"DeliveryStreamName": "clicks", "DeliveryStreamType": "DirectPut",
               "ExtendedS3DestinationConfiguration": {"BucketARN": "arn:aws:s3:::b", "RoleARN": "r"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(
        created["DeliveryStreamARN"],
        "arn:aws:firehose:us-east-1:000000000000:deliverystream/clicks"
    );
    let records: Vec<Value> = (0..8)
        .map(|i| json!({"Data": STANDARD.encode(format!("click {i}"))}))
        .collect();
    let (status, put) = firehose(
        &f.app,
        "PutRecordBatch",
        json!({"DeliveryStreamName": "clicks", "Records": records}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["FailedPutCount"], 0);
    assert_eq!(put["RequestResponses"].as_array().unwrap().len(), 8);
    let stream = f.log.stream("clicks").unwrap();
    let per_shard: Vec<u64> = stream.shards().iter().map(|s| s.bounds().1).collect();
    assert_eq!(per_shard, [2, 2, 2, 2], "a batch spreads over the shards");

    let (_, listed) = firehose(&f.app, "ListDeliveryStreams", json!({})).await;
    assert_eq!(listed["DeliveryStreamNames"], json!(["clicks", "ticks"]));
    let (_, described) = firehose(
        &f.app,
        "DescribeDeliveryStream",
        json!({"DeliveryStreamName": "clicks"}),
    )
    .await;
    assert_eq!(
        described["DeliveryStreamDescription"]["DeliveryStreamStatus"],
        "ACTIVE"
    );
    for (operation, body, kind) in [
        (
            "CreateDeliveryStream",
            json!({"DeliveryStreamName": "clicks"}),
            "ResourceInUseException",
        ),
        (
            "PutRecord",
            json!({"DeliveryStreamName": "nope", "Record": {"Data": "eA=="}}),
            "ResourceNotFoundException",
        ),
        (
            "PutRecordBatch",
            json!({"DeliveryStreamName": "clicks", "Records": []}),
            "ValidationException",
        ),
        (
            "PutRecord",
            json!({"DeliveryStreamName": "clicks", "Record": {"Data": STANDARD.encode(vec![b'x'; 1_000 * 1024 + 1])}}),
            "ValidationException",
        ),
        (
            "CreateDeliveryStream",
            json!({"DeliveryStreamName": "k", "DeliveryStreamType": "KinesisStreamAsSource"}),
            "InvalidArgumentException",
        ),
    ] {
        let (status, error) = firehose(&f.app, operation, body).await;
        assert_eq!(
            (status, error["__type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(kind)),
            "{error}"
        );
    }
    assert_eq!(
        f.log
            .stream("clicks")
            .unwrap()
            .shards()
            .iter()
            .map(|s| s.bounds().1)
            .sum::<u64>(),
        8,
        "a refused request writes nothing"
    );
}

#[tokio::test]
async fn a_batch_whose_append_fails_on_one_shard_says_so_per_record() {
    let f = fixture(LogConfig::default(), IngestConfig::default());
    firehose(
        &f.app,
        "CreateDeliveryStream",
        json!({"DeliveryStreamName": "clicks"}),
    )
    .await;
    // The disk fills after the first shard's write.
    fail::cfg("log::write", "1*off->return").unwrap();
    let records: Vec<Value> = (0..4)
        .map(|i| json!({"Data": STANDARD.encode(format!("click {i}"))}))
        .collect();
    let (status, put) = firehose(
        &f.app,
        "PutRecordBatch",
        json!({"DeliveryStreamName": "clicks", "Records": records}),
    )
    .await;
    fail::remove("log::write");
    assert_eq!(status, StatusCode::OK, "{put}");
    let responses = put["RequestResponses"].as_array().unwrap();
    let failed: Vec<&Value> = responses
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .collect();
    assert_eq!(put["FailedPutCount"], 3, "{put}");
    assert_eq!(failed.len(), 3);
    for r in &failed {
        assert_eq!(r["ErrorCode"], "ServiceUnavailableException", "{r}");
        assert!(r.get("RecordId").is_none());
    }
    let stored: u64 = (f.log.stream("clicks").unwrap().shards().iter())
        .map(|s| s.bounds().1)
        .sum();
    assert_eq!(stored, 1, "only the record reported taken is in the log");
}
