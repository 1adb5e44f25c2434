//! Splitting a request body into records, and finding a record's partition key.
//!
//! NDJSON bodies are split on newlines without being parsed: a line that is not JSON is still a
//! record (the pipeline sends it to the stream's errors table with the reason). A JSON array is
//! parsed as a whole, so a malformed array is refused with the position of the error.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The records of an NDJSON body: its non-blank lines, without line ends.
pub fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

/// Why a JSON body could not be split: its JSON, or what `each` said of a record.
#[derive(Debug)]
pub enum SplitError<E> {
    /// The body is not JSON, or not a JSON array: the parser's error, with its position.
    Json(serde_json::Error),
    /// What `each` refused a record with.
    Record(E),
}

/// Calls `each` with every element of a JSON array body (or with the body itself, if it is one
/// JSON value that is not an array), as its raw JSON text, while parsing: no list of records is
/// built, and the first error stops the parse.
pub fn json_records<E>(
    body: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), SplitError<E>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        let item: &RawValue = serde_json::from_slice(body).map_err(SplitError::Json)?;
        return each(item.get().as_bytes()).map_err(SplitError::Record);
    }
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_seq(EachElement {
            each: &mut each,
            failed: &mut failed,
        })
        .and_then(|()| de.end());
    match (failed, parsed) {
        (Some(e), _) => Err(SplitError::Record(e)),
        (None, Err(e)) => Err(SplitError::Json(e)),
        (None, Ok(())) => Ok(()),
    }
}

struct EachElement<'a, F, E> {
    each: &'a mut F,
    failed: &'a mut Option<E>,
}

impl<'de, F: FnMut(&[u8]) -> Result<(), E>, E> Visitor<'de> for EachElement<'_, F, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if let Err(e) = (self.each)(item.get().as_bytes()) {
                *self.failed = Some(e);
                return Err(serde::de::Error::custom("stopped at a refused record"));
            }
        }
        Ok(())
    }
}

/// The partition key of a JSON record: the value of its top-level `field`, as text for a
/// string and as its JSON text otherwise. A record that is not a JSON object, lacks the field, or
/// has it `null`, has the empty key: it still goes in, to one deterministic shard.
pub fn partition_key<'a>(record: &'a [u8], field: &str) -> Cow<'a, [u8]> {
    let mut de = serde_json::Deserializer::from_slice(record);
    let value = match (FieldOf { field }).deserialize(&mut de) {
        Ok(Some(value)) => value,
        _ => return Cow::Borrowed(b""),
    };
    let text = value.get();
    if text.starts_with('"') {
        match serde_json::from_str::<&str>(text) {
            Ok(s) => Cow::Borrowed(s.as_bytes()),
            // Escapes inside the string: unescape into an owned key.
            Err(_) => serde_json::from_str::<String>(text)
                .map(|s| Cow::Owned(s.into_bytes()))
                .unwrap_or(Cow::Borrowed(b"")),
        }
    } else if text == "null" {
        Cow::Borrowed(b"")
    } else {
        Cow::Borrowed(text.as_bytes())
    }
}

/// Finds one top-level field of a JSON object without building the object.
struct FieldOf<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_field) = map.next_key_seed(KeyIs { field: self.field })? {
            if is_field && found.is_none() {
                found = Some(map.next_value::<&RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares an object key with the wanted field, borrowing when the key has no escapes.
struct KeyIs<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_skips_blank_lines_and_carriage_returns() {
        let lines: Vec<_> = ndjson_lines(b"{\"a\":1}\r\n\n  \nnot json\n{\"b\":2}").collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"not json", b"{\"b\":2}"]);
        assert_eq!(ndjson_lines(b"").count(), 0);
        assert_eq!(ndjson_lines(b"\n\n").count(), 0);
    }

    fn collect(body: &[u8]) -> Result<Vec<Vec<u8>>, SplitError<()>> {
        let mut records = Vec::new();
        json_records(body, |r| {
            records.push(r.to_vec());
            Ok::<_, ()>(())
        })?;
        Ok(records)
    }

    #[test]
    fn json_arrays_and_single_objects() {
        let records = collect(br#" [ {"a": [1, 2]}, 3, "x" ] "#).unwrap();
        assert_eq!(
            records,
            [
                br#"{"a": [1, 2]}"#.to_vec(),
                b"3".to_vec(),
                b"\"x\"".to_vec()
            ]
        );
        assert_eq!(collect(br#"{"a":1}"#).unwrap(), [br#"{"a":1}"#.to_vec()]);
        let Err(SplitError::Json(e)) = collect(b"[{\"a\":1},\n {\"b\": }]") else {
            panic!()
        };
        assert_eq!((e.line(), e.column()), (2, 8));
        assert!(
            matches!(collect(b"[1] 2"), Err(SplitError::Json(_))),
            "trailing characters"
        );
        assert!(matches!(collect(b""), Err(SplitError::Json(_))));
    }

    #[test]
    fn a_refused_record_stops_the_split() {
        let mut seen = 0;
        let result = json_records(b"[1, 2, 3, {", |_| {
            seen += 1;
            if seen == 2 { Err("enough") } else { Ok(()) }
        });
        assert!(matches!(result, Err(SplitError::Record("enough"))));
        assert_eq!(seen, 2);
    }

    #[test]
    fn partition_keys() {
        let k = |r: &str, f: &str| {
            String::from_utf8(partition_key(r.as_bytes(), f).into_owned()).unwrap()
        };
        assert_eq!(k(r#"{"ticker":"AAPL","price":1}"#, "ticker"), "AAPL");
        assert_eq!(k(r#"{"price":1,"ticker":"AAPL"}"#, "ticker"), "AAPL");
        assert_eq!(k(r#"{"id":12.50}"#, "id"), "12.50");
        assert_eq!(k(r#"{"u":"a\"b\u0041"}"#, "u"), "a\"bA");
        assert_eq!(k(r#"{"\u0075":"escaped key"}"#, "u"), "escaped key");
        assert_eq!(k(r#"{"u":null}"#, "u"), "");
        assert_eq!(k(r#"{"v":1}"#, "u"), "");
        assert_eq!(k(r#"{"u":"x""#, "u"), "");
        assert_eq!(k("[1,2]", "u"), "");
        assert_eq!(k(r#"{"nested":{"u":"inner"},"u":"outer"}"#, "u"), "outer");
        assert_eq!(k(r#"{"u":{"a":1}}"#, "u"), r#"{"a":1}"#);
    }
}
