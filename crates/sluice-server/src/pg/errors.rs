//! How the PostgreSQL door says an error: the SQLSTATE of its class (the one mapping, in
//! `sluice-error`), its message, and — for an error in the statement's text — its position,
//! which psql shows as `LINE 1: SELEC 1` with a caret under the place.
//!
//! Errors reach the door three ways: Sluice's own (a statement's, the policy's), which carry
//! their class; DataFusion's and datafusion-postgres' parser's, which datafusion-postgres
//! passes on as opaque API errors and which are classified here like the query engine's
//! ([`QueryError`]); and pgwire's own (the protocol, the login), which are left as they are.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
use sluice_error::{Class, Classify};
use sluice_query::QueryError;

/// `e` as a PostgreSQL error, positioned in `text` (the statement as the client sent it) when
/// it says where.
pub(crate) fn pg_error(e: &(impl Classify + ?Sized), text: Option<&str>) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), e.class().sqlstate().into(), e.to_string());
    info.position = text
        .zip(e.position())
        .and_then(|(text, at)| at.offset_in(text))
        .map(|offset| offset.to_string());
    PgWireError::UserError(Box::new(info))
}

/// An error of `class` with `message`.
pub(crate) fn class_error(class: Class, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        class.sqlstate().into(),
        message.into(),
    )))
}

/// A statement stopped by its connection's `statement_timeout` (57014).
pub(crate) fn timed_out(timeout: std::time::Duration) -> PgWireError {
    class_error(
        Class::Timeout,
        &format!(
            "canceling statement due to statement timeout ({timeout:?}; \
             limits.query_timeout, or SET statement_timeout)"
        ),
    )
}

/// pgwire's error as the client must see it: an API error (DataFusion's, the parser's) given
/// its SQLSTATE and, with the statement's `text`, its position; any other left as it is.
pub(crate) fn classified(error: PgWireError, text: Option<&str>) -> PgWireError {
    let PgWireError::ApiError(source) = error else {
        return error;
    };
    let query = if let Some(e) = source.downcast_ref::<ParserError>() {
        // datafusion-postgres' parser works on tokens without their places: the same text
        // through sqlparser's PostgreSQL dialect says where it goes wrong.
        let located = text
            .and_then(|text| Parser::parse_sql(&PostgreSqlDialect {}, text).err())
            .unwrap_or_else(|| e.clone());
        QueryError::of(&DataFusionError::SQL(Box::new(located), None))
    } else if let Some(e) = source.downcast_ref::<DataFusionError>() {
        QueryError::of(e)
    } else {
        QueryError::Engine {
            class: Class::Internal,
            message: source.to_string(),
            position: None,
        }
    };
    pg_error(&query, text)
}

/// Gives the errors datafusion-postgres passes on as internal errors (XX000) the SQLSTATE a
/// PostgreSQL client expects.
pub(crate) struct SqlState;

impl ErrorHandler for SqlState {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        // A login's failures stay as they are: FATAL (see [`super::login`]).
        if matches!(
            client.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        ) {
            return;
        }
        if matches!(error, PgWireError::ApiError(_)) {
            let taken = std::mem::replace(error, PgWireError::InvalidStartupMessage);
            *error = classified(taken, None);
        }
    }
}
