//! The Kinesis Data Streams API (JSON 1.1 on `POST /`), so that boto3 and the AWS SDKs work
//! against Sluice by setting `endpoint_url`; and on the same route, told apart by the
//! `X-Amz-Target` header's prefix, the Firehose API ([`firehose`]).
//!
//! Operations: CreateStream, DeleteStream, DescribeStream, DescribeStreamSummary, ListStreams,
//! ListShards, PutRecord, PutRecords, GetShardIterator, GetRecords. Limits are Kinesis' own
//! (1 MiB record, 500 records and 5 MiB per PutRecords, 10,000 records per GetRecords), and so
//! are the error shapes (see `error`). A stream created here is a stream like any other: it
//! has no declared columns, so SQL sees its records as schemaless JSON.
//!
//! Mapping: shard `i` is `shardId-{i:012}`; sequence numbers are the log's, as decimal strings;
//! `ApproximateArrivalTimestamp` is the time the record's batch became durable.

mod error;
pub mod firehose;
mod iterator;
mod ops;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::DeserializeOwned;
use sluice_auth::sigv4::{self, SignedRequest};

pub use error::KinesisError;
pub use iterator::{ITERATOR_TTL_MS, ShardIterator};

use crate::{Ingest, IngestError};

/// What every Kinesis operation's `X-Amz-Target` header starts with; the operation's name
/// follows.
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";
/// The content type of Kinesis' requests and answers: JSON 1.1.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The account every ARN names: Sluice has one.
pub const ACCOUNT: &str = "000000000000";
/// Largest request body: a full PutRecords (5 MiB of data, base64-encoded) with room for keys.
pub const MAX_REQUEST_BYTES: usize = 10 << 20;

/// The Kinesis API's one route, `POST /`, to merge into the server's router.
pub fn routes() -> Router<Ingest> {
    Router::new().route("/", post(handle))
}

/// What an operation needs besides its input.
pub(crate) struct Context {
    pub ingest: Ingest,
    /// The region the client signed for, echoed in ARNs.
    pub region: String,
}

async fn handle(
    State(ingest): State<Ingest>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (service, operation) = match target.strip_prefix(firehose::TARGET_PREFIX) {
        Some(operation) => (Service::Firehose, Some(operation)),
        None => (Service::Kinesis, target.strip_prefix(TARGET_PREFIX)),
    };
    // Memory for GetRecords' answer; the body's is reserved as it arrives.
    let _answer_memory = if (service, operation) == (Service::Kinesis, Some("GetRecords")) {
        match ingest.reserve(2 * ops::MAX_GET_RECORDS_BYTES).await {
            Some(permit) => Some(permit),
            None => return KinesisError::from(sluice_log::Error::Backpressure).into_response(),
        }
    } else {
        None
    };
    let (body, _memory) =
        match crate::http::read_body(&ingest, body, &headers, MAX_REQUEST_BYTES).await {
            Ok(read) => read,
            Err(IngestError::Backpressure) => {
                return KinesisError::from(sluice_log::Error::Backpressure).into_response();
            }
            Err(e) => return KinesisError::validation(e.to_string()).into_response(),
        };
    if let Some(users) = &ingest.users {
        // Verified before anything of the request is looked at, so that a stranger learns
        // nothing, not even which operations exist.
        // HTTP/2 has no Host header: the host is the `:authority` pseudo-header (in the URI),
        // and HTTP/2 clients sign it under that name.
        let authority = uri
            .authority()
            .map(|a| (":authority", a.as_str().as_bytes()));
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .chain(authority)
            .collect();
        let request = SignedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &headers,
            body: &body,
        };
        let user = match sigv4::verify(users, &request, chrono::Utc::now()) {
            Ok(user) => user,
            Err(e) => return KinesisError::from(e).into_response(),
        };
        if let Some(operation) = operation
            && !user.role.may_write()
            && service.writes().contains(&operation)
        {
            return KinesisError::access_denied(&user.name, service.name(), operation)
                .into_response();
        }
    }
    let Some(operation) = operation else {
        return KinesisError::unknown_operation(format!(
            "expected an X-Amz-Target header of {TARGET_PREFIX}<Operation>, found {target:?}"
        ))
        .into_response();
    };
    let context = Context {
        ingest,
        region: region(&headers),
    };
    let answer = match service {
        Service::Kinesis => dispatch(&context, operation, &body).await,
        Service::Firehose => firehose::dispatch(&context, operation, &body)
            .await
            .map(IntoResponse::into_response),
    };
    match answer {
        Ok(mut response) => {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The operations a read-only user may not call.
const WRITES: [&str; 4] = ["CreateStream", "DeleteStream", "PutRecord", "PutRecords"];

/// The services of the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Kinesis,
    Firehose,
}

impl Service {
    /// Its name in IAM's actions (`kinesis:PutRecord`).
    fn name(self) -> &'static str {
        match self {
            Service::Kinesis => "kinesis",
            Service::Firehose => "firehose",
        }
    }

    /// The operations a read-only user may not call.
    fn writes(self) -> &'static [&'static str] {
        match self {
            Service::Kinesis => &WRITES,
            Service::Firehose => &firehose::WRITES,
        }
    }
}

async fn dispatch(
    context: &Context,
    operation: &str,
    body: &[u8],
) -> Result<Response, KinesisError> {
    Ok(match operation {
        "CreateStream" => ops::create_stream(context, input(body)?)
            .await?
            .into_response(),
        "DeleteStream" => ops::delete_stream(context, input(body)?)
            .await?
            .into_response(),
        "DescribeStream" => ops::describe_stream(context, input(body)?)?.into_response(),
        "DescribeStreamSummary" => {
            ops::describe_stream_summary(context, input(body)?)?.into_response()
        }
        "ListStreams" => ops::list_streams(context, input(body)?)?.into_response(),
        "ListShards" => ops::list_shards(context, input(body)?)?.into_response(),
        "PutRecord" => ops::put_record(context, input(body)?)
            .await?
            .into_response(),
        "PutRecords" => ops::put_records(context, input(body)?)
            .await?
            .into_response(),
        "GetShardIterator" => ops::get_shard_iterator(context, input(body)?)
            .await?
            .into_response(),
        "GetRecords" => ops::get_records(context, input(body)?)
            .await?
            .into_response(),
        other => {
            return Err(KinesisError::unknown_operation(format!(
                "unknown operation {other}"
            )));
        }
    })
}

/// Decodes an operation's input; JSON that does not fit the input's shape is a
/// SerializationException, as in Kinesis.
fn input<T: DeserializeOwned>(body: &[u8]) -> Result<T, KinesisError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| KinesisError::serialization(e.to_string()))
}

/// The region from the SigV4 credential scope (`Credential=KEY/DATE/REGION/SERVICE/…`).
fn region(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|scope| scope.split('/').nth(2))
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or("us-east-1")
        .to_string()
}

/// A shard's id as Kinesis names it: `shardId-000000000003` for shard 3.
pub fn shard_id(shard: u32) -> String {
    format!("shardId-{shard:012}")
}

#[cfg(test)]
mod tests;
