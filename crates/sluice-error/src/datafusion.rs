//! The classes of DataFusion's errors: what the query engine and the views' planner meet.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::{Class, Position};

/// `e`'s class, and where in the statement's text it is when DataFusion says (a parser's
/// error). `external` classifies the errors DataFusion carries for others (a lake table that
/// could not be opened); `None` from it makes them internal.
pub fn class_of(
    e: &DataFusionError,
    external: &dyn Fn(&(dyn std::error::Error + Send + Sync + 'static)) -> Option<Class>,
) -> (Class, Option<Position>) {
    let class = match e {
        DataFusionError::SQL(parser, _) => {
            return (
                Class::Syntax,
                Position::from_parser_message(&parser.to_string()),
            );
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            return class_of(inner, external);
        }
        DataFusionError::Shared(inner) => return class_of(inner, external),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(first) => return class_of(first, external),
            None => Class::Internal,
        },
        DataFusionError::Plan(message) => plan_class(message),
        DataFusionError::SchemaError(e, _) => match e.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => Class::UndefinedColumn,
            _ => Class::Invalid,
        },
        DataFusionError::NotImplemented(_) | DataFusionError::Substrait(_) => Class::Unsupported,
        DataFusionError::ArrowError(e, _) => match e.as_ref() {
            ArrowError::IoError(..) => Class::Unavailable,
            ArrowError::ExternalError(_)
            | ArrowError::MemoryError(_)
            | ArrowError::NotYetImplemented(_)
            | ArrowError::IpcError(_)
            | ArrowError::CDataInterface(_)
            | ArrowError::DictionaryKeyOverflowError
            | ArrowError::RunEndIndexOverflowError
            | ArrowError::OffsetOverflowError(_) => Class::Internal,
            _ => Class::InvalidData,
        },
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Class::Unavailable,
        DataFusionError::ParquetError(_) => Class::Internal,
        DataFusionError::Configuration(_) => Class::InvalidValue,
        DataFusionError::Execution(_) => Class::InvalidData,
        DataFusionError::ResourcesExhausted(_) => Class::LimitExceeded,
        DataFusionError::External(e) => external(e.as_ref()).unwrap_or(Class::Internal),
        DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::Ffi(_) => Class::Internal,
    };
    (class, None)
}

/// The class of a planning error, from DataFusion's message: it says "table … not found" and
/// "Invalid function" in words only.
fn plan_class(message: &str) -> Class {
    let lower = message.to_ascii_lowercase();
    if lower.contains("table") && (lower.contains("not found") || lower.contains("does not exist"))
    {
        Class::UndefinedTable
    } else if lower.contains("no field named") {
        Class::UndefinedColumn
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        Class::UndefinedFunction
    } else if lower.contains("already exists") {
        Class::Exists
    } else {
        Class::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(e: DataFusionError) -> Class {
        class_of(&e, &|_| None).0
    }

    #[test]
    fn the_engines_errors_say_who_must_act() {
        assert_eq!(
            class(DataFusionError::Plan(
                "table 'sluice.public.nope' not found".into()
            )),
            Class::UndefinedTable
        );
        assert_eq!(
            class(DataFusionError::Plan("Invalid function 'nope'".into())),
            Class::UndefinedFunction
        );
        assert_eq!(
            class(DataFusionError::IoError(std::io::Error::other("reset"))),
            Class::Unavailable
        );
        assert_eq!(
            class(DataFusionError::ObjectStore(Box::new(
                ::datafusion::object_store::Error::Generic {
                    store: "S3",
                    source: "connection refused".into(),
                }
            ))),
            Class::Unavailable
        );
        assert_eq!(
            class(DataFusionError::Context(
                "while scanning".into(),
                Box::new(DataFusionError::ArrowError(
                    Box::new(ArrowError::CastError("'x' is not an Int32".into())),
                    None
                ))
            )),
            Class::InvalidData
        );
        assert_eq!(
            class(DataFusionError::Internal("oops".into())),
            Class::Internal
        );
        let external = DataFusionError::External(Box::new(std::io::Error::other("lake")));
        assert_eq!(
            class_of(&external, &|_| Some(Class::Unavailable)).0,
            Class::Unavailable
        );
        assert_eq!(class(external), Class::Internal);
        let parse = datafusion::sql::sqlparser::parser::ParserError::ParserError(
            "Expected: an SQL statement, found: SELEC at Line: 1, Column: 1".into(),
        );
        assert_eq!(
            class_of(&DataFusionError::SQL(Box::new(parse), None), &|_| None),
            (Class::Syntax, Some(Position { line: 1, column: 1 }))
        );
    }
}
