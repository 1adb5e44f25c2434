//! Kinesis' error shapes: HTTP 400 (or 5xx) with `{"__type": "<Name>", "message": "…"}`, which
//! the AWS SDKs turn into their named exceptions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ACCOUNT, CONTENT_TYPE};

/// An error as the Kinesis API answers it; the AWS SDKs raise it as the exception `kind`
/// names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisError {
    /// The HTTP status: 400, as Kinesis answers most errors (throttling too); 5xx when
    /// Sluice cannot serve.
    pub status: StatusCode,
    /// The exception's name (`ResourceNotFoundException`), sent as `__type`.
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl KinesisError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// A request that breaks a constraint of the API's model (missing member, length, pattern).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// A value that is well-formed but cannot be used.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgumentException", message)
    }

    /// A body that is not JSON, or a member of the wrong JSON type.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    /// A stream or shard that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            message,
        )
    }

    /// An `X-Amz-Target` that names no operation Sluice offers.
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            message,
        )
    }

    /// A shard iterator older than [`super::ITERATOR_TTL_MS`].
    pub fn expired_iterator(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ExpiredIteratorException", message)
    }

    /// A user whose role does not allow the operation of `service` (`kinesis`, `firehose`).
    pub fn access_denied(user: &str, service: &str, operation: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            format!(
                "User: {user} is not authorized to perform: {service}:{operation}: the user is \
                 read-only"
            ),
        )
    }

    /// A resource that exists already, or is used.
    pub fn resource_in_use(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ResourceInUseException", message)
    }

    /// Sluice cannot take the request now (a busy log, a full disk): the client retries.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            message,
        )
    }

    /// No stream of this name, worded as the service words it.
    pub fn stream_not_found(name: &str) -> Self {
        Self::not_found(format!("Stream {name} under account {ACCOUNT} not found."))
    }

    /// A missing required member, worded as the service words it.
    pub fn missing(member: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    }
}

impl From<sluice_log::Error> for KinesisError {
    /// The log's errors in Kinesis' names: those Kinesis has a name for by what they are, the
    /// others by their class (who must act), as every door says them.
    fn from(e: sluice_log::Error) -> Self {
        use sluice_error::{Class, Classify};
        use sluice_log::Error as E;
        match &e {
            E::StreamNotFound(name) => Self::stream_not_found(name),
            E::StreamExists(name) => Self::resource_in_use(format!(
                "Stream {name} under account {ACCOUNT} already exists."
            )),
            E::Elsewhere { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                e.to_string(),
            ),
            E::InUse { stream, reason } => Self::resource_in_use(format!(
                "Stream {stream} under account {ACCOUNT} cannot be deleted: {reason}."
            )),
            E::NoSuchShard { stream, shard } => Self::not_found(format!(
                "Shard {} in stream {stream} under account {ACCOUNT} does not exist",
                super::shard_id(*shard)
            )),
            E::InvalidShardCount(n) if *n > 0 => Self::new(
                StatusCode::BAD_REQUEST,
                "LimitExceededException",
                e.to_string(),
            ),
            E::BatchTooLarge { .. } => Self::invalid_argument(e.to_string()),
            E::Backpressure => Self::new(
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                "Rate exceeded: the log is busy writing earlier records; slow down and retry.",
            ),
            _ => match e.class() {
                Class::Unavailable | Class::Busy | Class::Timeout => Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    e.to_string(),
                ),
                Class::Internal => Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalFailure",
                    e.to_string(),
                ),
                _ => Self::validation(e.to_string()),
            },
        }
    }
}

impl From<sluice_auth::sigv4::SigV4Error> for KinesisError {
    fn from(e: sluice_auth::sigv4::SigV4Error) -> Self {
        use sluice_auth::sigv4::SigV4Error as E;
        let kind = match &e {
            E::Missing => "MissingAuthenticationTokenException",
            E::Incomplete(_) => "IncompleteSignatureException",
            E::UnknownKey => "UnrecognizedClientException",
            E::Expired(_) | E::Mismatch => "InvalidSignatureException",
        };
        let status = match e {
            E::Missing => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, kind, e.to_string())
    }
}

impl IntoResponse for KinesisError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"__type": self.kind, "message": self.message});
        let mut response = (self.status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
