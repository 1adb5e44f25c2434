//! PostgreSQL's columns and values as a change stream's: a column's type as the stream
//! declares it, and a value in `pgoutput`'s text format as the JSON the stream's decoder reads.
//!
//! | PostgreSQL | column | value |
//! | --- | --- | --- |
//! | `boolean` | `BOOLEAN` | `t` / `f` → `true` / `false` |
//! | `smallint`, `integer`, `bigint` | `SMALLINT`, `INT`, `BIGINT` | the number |
//! | `real`, `double precision` | `FLOAT`, `DOUBLE` | the number (`NaN`, `Infinity`: a string, refused by the column) |
//! | `numeric(p, s)` | `DECIMAL(p, s)`; unconstrained: `DECIMAL(38, 10)` | the number |
//! | `date` | `DATE` | the date |
//! | `timestamp` | `TIMESTAMP` | `2026-01-05 14:30:00.5` → `"2026-01-05T14:30:00.5"` |
//! | `timestamptz` | `TIMESTAMPTZ` | `…+02` → `"…+02:00"` |
//! | `json`, `jsonb` | `JSON` | the JSON |
//! | anything else (`text`, `varchar`, `uuid`, `bytea`, arrays, …) | `TEXT` | the text |

use serde_json::Value;
use sluice_sql::ColumnType;

/// The type OIDs of PostgreSQL's built-in types Sluice types otherwise than as text.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
}

/// The column type of a PostgreSQL column of type `type_id` and modifier `type_modifier` (as
/// `pg_attribute` and `pgoutput`'s Relation message give them).
pub fn column_type(type_id: u32, type_modifier: i32) -> ColumnType {
    match type_id {
        oid::BOOL => ColumnType::Boolean,
        oid::INT2 => ColumnType::SmallInt,
        oid::INT4 => ColumnType::Int,
        oid::INT8 => ColumnType::BigInt,
        oid::FLOAT4 => ColumnType::Float,
        oid::FLOAT8 => ColumnType::Double,
        oid::NUMERIC => {
            // numeric(p, s) keeps ((p << 16) | s) + 4; -1 when unconstrained.
            let (precision, scale) = match type_modifier {
                m if m >= 4 => (((m - 4) >> 16) & 0xffff, (m - 4) & 0xffff),
                _ => (38, 10),
            };
            match (u8::try_from(precision), i8::try_from(scale)) {
                (Ok(precision @ 1..=38), Ok(scale)) if i32::from(scale) <= i32::from(precision) => {
                    ColumnType::Decimal { precision, scale }
                }
                // Wider than a DECIMAL holds: its text.
                _ => ColumnType::Text,
            }
        }
        oid::DATE => ColumnType::Date,
        oid::TIMESTAMP => ColumnType::Timestamp,
        oid::TIMESTAMPTZ => ColumnType::TimestampTz,
        oid::JSON | oid::JSONB => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

/// A value in `pgoutput`'s text format, of a column of type `t`, as JSON.
pub fn json_value(text: &str, t: ColumnType) -> String {
    let string = |s: &str| Value::String(s.to_string()).to_string();
    match t {
        ColumnType::Boolean => match text {
            "t" => "true".into(),
            "f" => "false".into(),
            other => string(other),
        },
        ColumnType::SmallInt
        | ColumnType::Int
        | ColumnType::BigInt
        | ColumnType::Float
        | ColumnType::Double
        | ColumnType::Decimal { .. } => match serde_json::from_str::<serde_json::Number>(text) {
            Ok(_) => text.to_string(),
            Err(_) => string(text),
        },
        ColumnType::Timestamp => string(&text.replacen(' ', "T", 1)),
        ColumnType::TimestampTz => string(&with_full_offset(&text.replacen(' ', "T", 1))),
        ColumnType::Json => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => text.to_string(),
            Err(_) => string(text),
        },
        ColumnType::Date | ColumnType::Text => string(text),
    }
}

/// The value `pgoutput` did not send (an unchanged TOAST value), as Debezium writes it: the
/// change stream's decoder lists the column in `_unchanged`, and the mirror keeps its own.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// A row as the JSON object of a Debezium envelope: each of `columns` (name, type) the row has,
/// by `value(name)`: `None` for a column the row lacks (unchanged), `Some(None)` for NULL.
pub fn row_object<'a>(
    columns: &[(String, ColumnType)],
    value: impl Fn(&str) -> Option<Option<&'a str>>,
) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|(name, t)| {
            let json = match value(name) {
                None => Value::String(UNAVAILABLE.into()).to_string(),
                Some(None) => "null".into(),
                Some(Some(text)) => json_value(text, *t),
            };
            format!("{}:{json}", Value::String(name.clone()))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A change as a Debezium envelope: `op` (`c`, `u`, `d`, `r`, `t`), the row objects before and
/// after it, the change's LSN (its version), its transaction's commit time (µs) and the LSN
/// past its commit (where a restart resumes).
pub fn envelope(
    op: &str,
    before: Option<&str>,
    after: Option<&str>,
    lsn: u64,
    commit_us: i64,
    end_lsn: u64,
) -> String {
    format!(
        r#"{{"op":"{op}","before":{},"after":{},"source":{{"connector":"sluice-postgres","lsn":{lsn},"ts_us":{commit_us},"end_lsn":{end_lsn}}}}}"#,
        before.unwrap_or("null"),
        after.unwrap_or("null"),
    )
}

/// `…+02` (PostgreSQL's short offset) as `…+02:00`.
fn with_full_offset(time: &str) -> String {
    let sign = time.rfind(['+', '-']).filter(|&at| at > 10);
    match sign {
        Some(at) if time.len() - at == 3 => format!("{time}:00"),
        _ => time.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_types_are_declared_as_sluice_types() {
        let numeric = |p: i32, s: i32| ((p << 16) | s) + 4;
        assert_eq!(column_type(23, -1), ColumnType::Int);
        assert_eq!(
            column_type(1700, numeric(10, 2)),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            column_type(1700, -1),
            ColumnType::Decimal {
                precision: 38,
                scale: 10
            }
        );
        assert_eq!(column_type(1700, numeric(60, 2)), ColumnType::Text);
        assert_eq!(column_type(1184, -1), ColumnType::TimestampTz);
        assert_eq!(column_type(3802, -1), ColumnType::Json);
        assert_eq!(column_type(2950, -1), ColumnType::Text);
    }

    #[test]
    fn a_row_is_an_object_of_its_columns_and_a_change_an_envelope() {
        let columns = [
            ("id".to_string(), ColumnType::Int),
            ("bio".to_string(), ColumnType::Text),
            ("note".to_string(), ColumnType::Text),
        ];
        let row = row_object(&columns, |name| match name {
            "id" => Some(Some("7")),
            "note" => Some(None),
            _ => None,
        });
        assert_eq!(
            row,
            r#"{"id":7,"bio":"__debezium_unavailable_value","note":null}"#
        );
        let change = envelope("u", None, Some(&row), 100, 5, 120);
        let parsed: Value = serde_json::from_str(&change).unwrap();
        assert_eq!(parsed["after"]["id"], 7);
        assert_eq!(parsed["source"]["lsn"], 100);
        assert_eq!(parsed["source"]["end_lsn"], 120);
        assert!(parsed["before"].is_null());
    }

    #[test]
    fn text_values_become_the_json_the_decoder_reads() {
        assert_eq!(json_value("t", ColumnType::Boolean), "true");
        assert_eq!(
            json_value(
                "-12.50",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                }
            ),
            "-12.50"
        );
        assert_eq!(json_value("NaN", ColumnType::Double), "\"NaN\"");
        assert_eq!(
            json_value("2026-01-05 14:30:00.5", ColumnType::Timestamp),
            "\"2026-01-05T14:30:00.5\""
        );
        assert_eq!(
            json_value("2026-01-05 14:30:00+02", ColumnType::TimestampTz),
            "\"2026-01-05T14:30:00+02:00\""
        );
        assert_eq!(
            json_value("2026-01-05 14:30:00.25-03:30", ColumnType::TimestampTz),
            "\"2026-01-05T14:30:00.25-03:30\""
        );
        assert_eq!(
            json_value(r#"{"a": [1]}"#, ColumnType::Json),
            r#"{"a": [1]}"#
        );
        assert_eq!(
            json_value("it's \"x\"", ColumnType::Text),
            r#""it's \"x\"""#
        );
    }
}
