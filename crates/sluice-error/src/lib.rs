//! Who must act on an error, and how every door says so.
//!
//! Every error of Sluice has a [`Class`]: what went wrong, as far as the one who must act on it
//! needs to know. The class alone decides, here and nowhere else:
//!
//! - who must act ([`Class::actor`]): the user (fix the request), the environment (wait: a disk,
//!   a network, a store), or Sluice itself (a bug);
//! - the HTTP status and `Retry-After` of Sluice's own API ([`Class::http_status`],
//!   [`Class::retry_after`]);
//! - the SQLSTATE of the PostgreSQL protocol ([`Class::sqlstate`]);
//!
//! and the Kinesis door names its exceptions from it. Each library crate's error enum says its
//! variants' classes by implementing [`Classify`], with a stable machine-readable code for each
//! (`stream_not_found`), next to the variants themselves.
//!
//! | class | actor | HTTP | SQLSTATE |
//! | --- | --- | --- | --- |
//! | [`Syntax`](Class::Syntax) | user | 400 | 42601 syntax_error |
//! | [`InvalidValue`](Class::InvalidValue) | user | 400 | 22023 invalid_parameter_value |
//! | [`InvalidData`](Class::InvalidData) | user | 400 | 22000 data_exception |
//! | [`UndefinedTable`](Class::UndefinedTable) | user | 404 | 42P01 undefined_table |
//! | [`UndefinedColumn`](Class::UndefinedColumn) | user | 400 | 42703 undefined_column |
//! | [`UndefinedFunction`](Class::UndefinedFunction) | user | 400 | 42883 undefined_function |
//! | [`Exists`](Class::Exists) | user | 409 | 42P07 duplicate_table |
//! | [`InUse`](Class::InUse) | user | 409 | 2BP01 dependent_objects_still_exist |
//! | [`Unsupported`](Class::Unsupported) | user | 400 | 0A000 feature_not_supported |
//! | [`Invalid`](Class::Invalid) | user | 400 | 42000 syntax_error_or_access_rule_violation |
//! | [`Refused`](Class::Refused) | user | 400 | 42501 insufficient_privilege |
//! | [`Forbidden`](Class::Forbidden) | user | 403 | 42501 insufficient_privilege |
//! | [`Unauthenticated`](Class::Unauthenticated) | user | 401 | 28P01 invalid_password |
//! | [`TooLarge`](Class::TooLarge) | user | 413 | 54000 program_limit_exceeded |
//! | [`LimitExceeded`](Class::LimitExceeded) | user | 400 | 54000 program_limit_exceeded |
//! | [`TooComplex`](Class::TooComplex) | user | 400 | 54001 statement_too_complex |
//! | [`Busy`](Class::Busy) | environment | 503, retry after 1 s | 53000 insufficient_resources |
//! | [`TooManyConnections`](Class::TooManyConnections) | environment | 503, retry after 1 s | 53300 too_many_connections |
//! | [`Unavailable`](Class::Unavailable) | environment | 503, retry after 5 s | 57P03 cannot_connect_now |
//! | [`Timeout`](Class::Timeout) | environment | 503 | 57014 query_canceled |
//! | [`RequestTimeout`](Class::RequestTimeout) | user | 408 | 57014 query_canceled |
//! | [`Internal`](Class::Internal) | Sluice | 500 | XX000 internal_error |

use std::fmt;

#[cfg(feature = "datafusion")]
pub mod datafusion;

/// What went wrong, as far as whoever must act on it needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The text is not valid SQL.
    Syntax,
    /// A value that cannot be used: a name, an option, a parameter, a definition.
    InvalidValue,
    /// Data that cannot be taken: a malformed body or record, a value that does not convert.
    InvalidData,
    /// A stream, view, table or shard that does not exist.
    UndefinedTable,
    /// A column that does not exist.
    UndefinedColumn,
    /// A function that does not exist (or not for these arguments).
    UndefinedFunction,
    /// A stream, view or table of that name exists already.
    Exists,
    /// Something others depend on (a stream or view that views read).
    InUse,
    /// A statement or shape that Sluice does not support (yet).
    Unsupported,
    /// Any other mistake in a statement.
    Invalid,
    /// A statement that may not run at this door, whoever asks (it writes what only
    /// pipelines write, or changes what every connection shares).
    Refused,
    /// The caller's role does not allow it (a read-only user's write).
    Forbidden,
    /// No credentials, or wrong ones.
    Unauthenticated,
    /// A request larger than the server takes.
    TooLarge,
    /// An answer or a use past one of the server's limits.
    LimitExceeded,
    /// A statement nested too deeply to plan.
    TooComplex,
    /// Too much is in flight (memory, bytes waiting for the disk): slow down and retry.
    Busy,
    /// Every connection the server allows is in use.
    TooManyConnections,
    /// Something Sluice depends on cannot be reached now (a disk, the lake's store): retry
    /// later; nothing is lost.
    Unavailable,
    /// The work ran past its time limit and was cancelled.
    Timeout,
    /// The client took too long to send its request.
    RequestTimeout,
    /// A bug of Sluice's: nothing the caller did explains it.
    Internal,
}

/// Who must act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The caller: the request must change.
    User,
    /// Nobody but time: the same request may succeed later.
    Environment,
    /// Sluice's developers.
    Sluice,
}

impl Class {
    /// Who must act.
    pub fn actor(self) -> Actor {
        match self {
            Class::Busy | Class::TooManyConnections | Class::Unavailable | Class::Timeout => {
                Actor::Environment
            }
            Class::Internal => Actor::Sluice,
            _ => Actor::User,
        }
    }

    /// The HTTP status of Sluice's own API.
    pub fn http_status(self) -> u16 {
        match self {
            Class::UndefinedTable => 404,
            Class::Exists | Class::InUse => 409,
            Class::Forbidden => 403,
            Class::Unauthenticated => 401,
            Class::TooLarge => 413,
            Class::RequestTimeout => 408,
            Class::Busy | Class::TooManyConnections | Class::Unavailable | Class::Timeout => 503,
            Class::Internal => 500,
            Class::Syntax
            | Class::InvalidValue
            | Class::InvalidData
            | Class::UndefinedColumn
            | Class::UndefinedFunction
            | Class::Unsupported
            | Class::Invalid
            | Class::Refused
            | Class::LimitExceeded
            | Class::TooComplex => 400,
        }
    }

    /// Seconds a client should wait before the same request (HTTP's `Retry-After`), when
    /// waiting is what helps.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Class::Busy | Class::TooManyConnections => Some(1),
            Class::Unavailable => Some(5),
            _ => None,
        }
    }

    /// The SQLSTATE of the PostgreSQL protocol.
    pub fn sqlstate(self) -> &'static str {
        match self {
            Class::Syntax => "42601",
            Class::InvalidValue => "22023",
            Class::InvalidData => "22000",
            Class::UndefinedTable => "42P01",
            Class::UndefinedColumn => "42703",
            Class::UndefinedFunction => "42883",
            Class::Exists => "42P07",
            Class::InUse => "2BP01",
            Class::Unsupported => "0A000",
            Class::Invalid => "42000",
            Class::Refused | Class::Forbidden => "42501",
            Class::Unauthenticated => "28P01",
            Class::TooLarge | Class::LimitExceeded => "54000",
            Class::TooComplex => "54001",
            Class::Busy => "53000",
            Class::TooManyConnections => "53300",
            Class::Unavailable => "57P03",
            Class::Timeout | Class::RequestTimeout => "57014",
            Class::Internal => "XX000",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error that knows its class.
pub trait Classify: std::error::Error {
    /// What went wrong, for whoever must act.
    fn class(&self) -> Class;

    /// A stable, machine-readable name of the error (`stream_not_found`), for API clients.
    fn code(&self) -> &'static str;

    /// Where in a statement's text the error is (1-based line and column), when it is there.
    fn position(&self) -> Option<Position> {
        None
    }
}

/// A place in a statement's text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
}

impl Position {
    /// The position as PostgreSQL's error field `P` gives it: the 1-based index, in characters,
    /// into `text`. `None` when `text` has no such place.
    pub fn offset_in(self, text: &str) -> Option<usize> {
        let line = usize::try_from(self.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(self.column).ok()?.checked_sub(1)?;
        let mut offset = 0;
        for (i, l) in text.split('\n').enumerate() {
            let chars = l.chars().count();
            if i == line {
                return (column <= chars).then_some(offset + column + 1);
            }
            offset += chars + 1;
        }
        None
    }

    /// The position sqlparser writes at the end of its messages (`… at Line: 1, Column: 8`).
    pub fn from_parser_message(message: &str) -> Option<Position> {
        let (_, rest) = message.rsplit_once("Line: ")?;
        let (line, column) = rest.split_once(", Column: ")?;
        let column: String = column.chars().take_while(char::is_ascii_digit).collect();
        Some(Position {
            line: line.trim().parse().ok()?,
            column: column.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_a_character_offset_into_the_text() {
        let at = |line, column| Position { line, column };
        assert_eq!(at(1, 1).offset_in("SELEC 1"), Some(1));
        assert_eq!(at(2, 3).offset_in("SELECT\n  1 +"), Some(10));
        assert_eq!(at(1, 2).offset_in("é x"), Some(2));
        assert_eq!(at(1, 8).offset_in("SELECT 1"), Some(8), "just past the end");
        assert_eq!(at(3, 1).offset_in("SELECT 1"), None);
        assert_eq!(at(0, 1).offset_in("SELECT 1"), None);
        assert_eq!(
            Position::from_parser_message(
                "Expected: end of statement, found: x at Line: 2, Column: 17"
            ),
            Some(at(2, 17))
        );
        assert_eq!(Position::from_parser_message("no position"), None);
    }

    #[test]
    fn who_must_act_decides_the_status() {
        for class in [Class::Busy, Class::Unavailable, Class::TooManyConnections] {
            assert_eq!(class.http_status(), 503);
            assert!(class.retry_after().is_some());
            assert_eq!(class.actor(), Actor::Environment);
        }
        assert_eq!(Class::Internal.http_status(), 500);
        assert_eq!(Class::Internal.sqlstate(), "XX000");
        assert_eq!(Class::Syntax.actor(), Actor::User);
    }
}
