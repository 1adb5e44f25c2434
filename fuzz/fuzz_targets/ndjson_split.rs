//! The HTTP door's splitting of a body into records, and its partition keys.
//!
//! Input: one byte choosing the partition-key field (and, in its high bits, after how many
//! records the callback refuses one), then the body.
//!
//! Checks: NDJSON lines are pieces of the body, in order, without line ends, never blank; a JSON
//! body splits exactly when it is UTF-8 and serde_json accepts it (as an array of values, or
//! as one value), into that many records, each one JSON value; a refused record stops the
//! split there; `partition_key` never panics, and a key it borrows is a piece of its record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use sluice_ingest::http::{SplitError, json_records, ndjson_lines, partition_key};

const FIELDS: [&str; 4] = ["ticker", "id", "u", ""];

/// Whether `part` lies within `whole` (the splitters only ever hand out pieces of the body).
fn within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fn check_key(record: &[u8], field: &str) {
    if let std::borrow::Cow::Borrowed(key) = partition_key(record, field) {
        assert!(key.is_empty() || within(key, record));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let field = FIELDS[usize::from(choice & 3)];
    let refuse_at = usize::from(choice >> 2); // 0: never

    let mut total = 0;
    let mut last_end = body.as_ptr() as usize;
    for line in ndjson_lines(body) {
        assert!(within(line, body));
        assert!(line.as_ptr() as usize >= last_end, "lines come in order");
        last_end = line.as_ptr() as usize + line.len();
        assert!(!line.contains(&b'\n'));
        assert!(!line.iter().all(u8::is_ascii_whitespace));
        total += line.len();
        check_key(line, field);
    }
    assert!(total <= body.len());

    let mut records = 0;
    let result = json_records(body, |record| {
        assert!(within(record, body));
        assert!(
            serde_json::from_slice::<IgnoredAny>(record).is_ok(),
            "a record is one JSON value: {:?}",
            String::from_utf8_lossy(record)
        );
        check_key(record, field);
        records += 1;
        if records == refuse_at {
            Err("refused")
        } else {
            Ok(())
        }
    });
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    // Records are handed out as JSON text, so a body splits only if it is UTF-8 (serde_json's
    // own parse, below, skips over the bytes of strings without checking them).
    let utf8 = std::str::from_utf8(body).is_ok();
    match result {
        Ok(()) => {
            assert!(refuse_at == 0 || records < refuse_at);
            assert!(utf8, "split a body that is not UTF-8");
            if is_array {
                let all: Vec<IgnoredAny> =
                    serde_json::from_slice(body).expect("split, so serde_json accepts it");
                assert_eq!(records, all.len());
            } else {
                assert_eq!(records, 1);
            }
        }
        Err(SplitError::Record(_)) => assert_eq!(records, refuse_at),
        Err(SplitError::Json(_)) => {
            assert!(refuse_at == 0 || records < refuse_at);
            let accepted = if is_array {
                serde_json::from_slice::<Vec<IgnoredAny>>(body).is_ok()
            } else {
                serde_json::from_slice::<IgnoredAny>(body).is_ok()
            };
            assert!(
                !(accepted && utf8),
                "serde_json accepts a body the splitter refused"
            );
        }
    }
});
