//! The per-record check of typed JSON: one borrowing serde pass that says, for a record the raw
//! table cannot hold, which field is wrong and how.
//!
//! It exists because arrow-json reports errors per batch, not per record: the check sends bad
//! records to the errors table with a reason, so that the decoder sees only records it accepts.
//! It is at least as strict as the decoder (timestamps and dates go through the same arrow
//! parsers), so a decode of checked records does not fail in practice; if it ever does, the
//! decoder falls back to decoding record by record.

use std::borrow::Cow;
use std::fmt;

use arrow::compute::kernels::cast_utils::Parser;
use arrow::datatypes::Date32Type;
use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sluice_sql::{Column, ColumnType};

/// Checks records against a stream's columns.
pub struct Checker {
    columns: Vec<Column>,
}

/// A JSON value as the check needs to see it; strings are borrowed when they have no escapes.
#[derive(Debug)]
enum Scalar<'de> {
    Null,
    Bool,
    Integer(i128),
    Fraction,
    Text(Cow<'de, str>),
    Nested,
}

impl Checker {
    pub fn new(columns: &[Column]) -> Self {
        Self {
            columns: columns.to_vec(),
        }
    }

    /// `Ok` when the raw table can hold the record, else the reason it cannot.
    pub fn check(&self, record: &[u8]) -> Result<(), String> {
        let mut values: Vec<Option<Scalar<'_>>> = (0..self.columns.len()).map(|_| None).collect();
        let mut de = serde_json::Deserializer::from_slice(record);
        let parsed = de
            .deserialize_any(Fields {
                columns: &self.columns,
                values: &mut values,
            })
            .and_then(|()| de.end());
        if let Err(e) = parsed {
            return Err(if e.is_data() {
                "not a JSON object".to_string()
            } else {
                format!("invalid JSON: {e}")
            });
        }
        for (column, value) in self.columns.iter().zip(&values) {
            check_value(column, value.as_ref().unwrap_or(&Scalar::Null))?;
        }
        Ok(())
    }
}

fn check_value(column: &Column, value: &Scalar<'_>) -> Result<(), String> {
    let name = &column.name;
    let found = match value {
        Scalar::Null if column.nullable => return Ok(()),
        Scalar::Null => {
            return Err(format!(
                "field '{name}' is missing or null, and it is NOT NULL"
            ));
        }
        Scalar::Bool => "a boolean",
        Scalar::Integer(_) | Scalar::Fraction => "a number",
        Scalar::Text(_) => "a string",
        Scalar::Nested => "an object or array",
    };
    let ok = match (column.data_type, value) {
        (ColumnType::Text, Scalar::Nested) => false,
        (ColumnType::Text, _) => true,
        (ColumnType::Boolean, Scalar::Bool) => true,
        (ColumnType::Int, Scalar::Integer(n)) => i32::try_from(*n).is_ok(),
        (ColumnType::BigInt, Scalar::Integer(n)) => i64::try_from(*n).is_ok(),
        (
            ColumnType::Float | ColumnType::Double | ColumnType::Decimal { .. },
            Scalar::Integer(_) | Scalar::Fraction,
        ) => true,
        (ColumnType::Timestamp, Scalar::Text(s)) => {
            return arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, s)
                .map(drop)
                .map_err(|_| format!("field '{name}': {s:?} is not a timestamp"));
        }
        (ColumnType::Date, Scalar::Text(s)) => {
            return Date32Type::parse(s)
                .map(drop)
                .ok_or_else(|| format!("field '{name}': {s:?} is not a date"));
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else if let (ColumnType::Int | ColumnType::BigInt, Scalar::Integer(n)) =
        (column.data_type, value)
    {
        Err(format!(
            "field '{name}': {n} is out of range for {}",
            column.data_type
        ))
    } else {
        Err(format!(
            "field '{name}': expected {}, found {found}",
            expected(column.data_type)
        ))
    }
}

fn expected(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Text => "text",
        ColumnType::Boolean => "a boolean",
        ColumnType::Int | ColumnType::BigInt => "a whole number",
        ColumnType::Float | ColumnType::Double | ColumnType::Decimal { .. } => "a number",
        ColumnType::Timestamp => "an RFC 3339 timestamp string",
        ColumnType::Date => "a date string",
    }
}

/// Walks a JSON object, keeping the values of declared columns.
struct Fields<'a, 'de> {
    columns: &'a [Column],
    values: &'a mut Vec<Option<Scalar<'de>>>,
}

impl<'de> Visitor<'de> for Fields<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.columns.iter().position(|c| c.name == key) {
                Some(i) => self.values[i] = Some(map.next_value_seed(ScalarSeed)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalar<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool)
    }

    fn visit_i64<E>(self, n: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Integer(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Integer(n.into()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Fraction)
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(s.to_string())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}
