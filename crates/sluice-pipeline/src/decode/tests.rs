use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use sluice_gen::{GenOptions, Generator, Workload};

use super::*;

fn definition(sql: &str) -> StreamDefinition {
    match sluice_sql::parse(sql).unwrap().remove(0) {
        sluice_sql::Statement::CreateStream(c) => c.definition,
        other => panic!("{other:?}"),
    }
}

fn records(lines: &[&str]) -> Vec<RawRecord<'static>> {
    let leaked: Vec<&'static str> = lines
        .iter()
        .map(|l| &*Box::leak(l.to_string().into_boxed_str()))
        .collect();
    leaked
        .into_iter()
        .enumerate()
        .map(|(i, l)| RawRecord {
            shard: 1,
            seq: 100 + i as u64,
            append_ms: 1_767_623_400_000,
            data: l.as_bytes(),
            origin: Origin::Log,
        })
        .collect()
}

fn reasons(decoded: &Decoded) -> Vec<(i64, String)> {
    let seq = decoded
        .errors
        .column_by_name(SEQ)
        .unwrap()
        .as_primitive::<Int64Type>();
    let reason = decoded
        .errors
        .column_by_name("reason")
        .unwrap()
        .as_string::<i32>();
    (0..decoded.errors.num_rows())
        .map(|i| (seq.value(i), reason.value(i).to_string()))
        .collect()
}

const TICKS: &str = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL)";

#[test]
fn ticks_decode_into_typed_columns_with_their_log_position() {
    let decoder = Decoder::new(&definition(TICKS)).unwrap();
    let input = records(&[
        r#"{"ticker":"T0001","price":123.4567,"volume":300,"ts":"2026-01-05T14:30:00.123Z","extra":[1]}"#,
        r#"{"ts":"2026-01-05T14:30:01Z","ticker":"T\u0030002","price":null}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!((d.rows.num_rows(), d.errors.num_rows()), (2, 0));
    let names: Vec<_> = d
        .rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["ticker", "price", "volume", "ts", SHARD, SEQ, INGESTED_AT]
    );
    assert_eq!(d.rows.column(0).as_string::<i32>().value(1), "T0002");
    assert_eq!(
        d.rows.column(1).as_primitive::<Float64Type>().value(0),
        123.4567
    );
    assert!(d.rows.column(1).is_null(1) && d.rows.column(2).is_null(1));
    assert_eq!(
        d.rows
            .column(3)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_767_623_400_123_000
    );
    assert_eq!(d.rows.column(4).as_primitive::<Int32Type>().value(0), 1);
    assert_eq!(
        d.rows
            .column(5)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        [100, 101]
    );
    assert_eq!(
        d.rows
            .column(6)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_767_623_400_000_000
    );
}

#[test]
fn bad_records_become_error_rows_that_say_why() {
    let decoder = Decoder::new(&definition(
        "CREATE STREAM t (id INT NOT NULL, name TEXT, ts TIMESTAMP, day DATE, amount DECIMAL(5, 2), ok BOOLEAN)",
    ))
    .unwrap();
    let input = records(&[
        r#"{"id":1}"#,
        r#"{"id":1,"name":"x""#,
        r#"[1,2]"#,
        r#"{"name":"no id"}"#,
        r#"{"id":null}"#,
        r#"{"id":3000000000}"#,
        r#"{"id":1.5}"#,
        r#"{"id":"7"}"#,
        r#"{"id":1,"ts":"yesterday"}"#,
        r#"{"id":1,"ts":1767623400}"#,
        r#"{"id":1,"day":"soon"}"#,
        r#"{"id":1,"ok":"yes"}"#,
        r#"{"id":1,"name":{"a":1}}"#,
        r#"{"id":1} {"id":2}"#,
        r#"{"id":2,"name":7,"day":"2026-01-05","amount":12.5,"ok":true}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!(
        d.rows.num_rows() + d.errors.num_rows(),
        input.len(),
        "nothing dropped"
    );
    assert_eq!(
        d.rows
            .column(0)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec(),
        [1, 2]
    );
    assert_eq!(
        d.rows.column(1).as_string::<i32>().value(1),
        "7",
        "numbers are kept as text in a TEXT column"
    );
    let expected = [
        (101, "invalid JSON"),
        (102, "not a JSON object"),
        (103, "field 'id' is missing or null, and it is NOT NULL"),
        (104, "field 'id' is missing or null"),
        (105, "field 'id': 3000000000 is out of range for INT"),
        (106, "field 'id': expected a whole number, found a number"),
        (107, "field 'id': expected a whole number, found a string"),
        (108, "field 'ts': \"yesterday\" is not a timestamp"),
        (
            109,
            "field 'ts': expected an RFC 3339 timestamp string, found a number",
        ),
        (110, "field 'day': \"soon\" is not a date"),
        (111, "field 'ok': expected a boolean, found a string"),
        (112, "field 'name': expected text, found an object or array"),
        (113, "invalid JSON: trailing characters"),
    ];
    let got = reasons(&d);
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for ((seq, reason), (want_seq, want)) in got.iter().zip(expected) {
        assert_eq!(*seq, want_seq);
        assert!(
            reason.contains(want),
            "record {seq}: {reason:?} should say {want:?}"
        );
    }
    let raw = d.errors.column_by_name("raw").unwrap().as_string::<i32>();
    assert_eq!(
        raw.value(0),
        r#"{"id":1,"name":"x""#,
        "the raw payload is kept"
    );
}

#[test]
fn a_decimal_that_does_not_fit_costs_only_its_record() {
    // DECIMAL(5, 2) holds at most 999.99.
    let decoder = Decoder::new(&definition(
        "CREATE STREAM t (id INT, amount DECIMAL(5, 2))",
    ))
    .unwrap();
    // A huge exponent or hundreds of digits would overflow arrow's decimal parser's counters.
    let digits = format!(r#"{{"id":5,"amount":{}}}"#, "9".repeat(300));
    let input = records(&[
        r#"{"id":1,"amount":1.5}"#,
        r#"{"id":2,"amount":123456.5}"#,
        r#"{"id":3,"amount":2}"#,
        r#"{"id":4,"amount":1e65538}"#,
        &digits,
        r#"{"id":6,"amount":"2026-01-05T14:30:00."}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!(
        d.rows
            .column(0)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec(),
        [1, 3]
    );
    assert_eq!(
        d.rows.column(1).as_primitive::<Decimal128Type>().value(0),
        150
    );
    let got = reasons(&d);
    assert_eq!(
        got[..2],
        [
            (
                101,
                "field 'amount': 123456.5 does not fit DECIMAL(5, 2)".to_string()
            ),
            (
                103,
                "field 'amount': 1e65538 does not fit DECIMAL(5, 2)".to_string()
            ),
        ]
    );
    assert_eq!(
        got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [101, 103, 104, 105]
    );
}

#[test]
fn streams_without_columns_keep_the_record_as_data() {
    let json = Decoder::new(&definition("CREATE STREAM raw")).unwrap();
    let input = records(&[r#"{"any": ["shape"]}"#, "not json", "42"]);
    let d = json.decode(&input).unwrap();
    assert_eq!(
        d.rows
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        [r#"{"any": ["shape"]}"#, "42"]
    );
    assert!(reasons(&d)[0].1.starts_with("invalid JSON"));
    // A JSON stream's data holds JSON, and says so; a text stream's does not.
    assert_eq!(
        d.rows.schema().field(0).extension_type_name(),
        Some("arrow.json")
    );

    let text = Decoder::new(&definition("CREATE STREAM logs WITH (format = 'text')")).unwrap();
    let bad = [0xff_u8, 0xfe];
    let input = [
        RawRecord {
            shard: 0,
            seq: 0,
            append_ms: 0,
            data: b"GET / 200",
            origin: Origin::Log,
        },
        RawRecord {
            shard: 0,
            seq: 1,
            append_ms: 0,
            data: &bad,
            origin: Origin::Log,
        },
    ];
    let d = text.decode(&input).unwrap();
    assert_eq!(d.rows.schema().field(0).extension_type_name(), None);
    assert_eq!((d.rows.num_rows(), d.errors.num_rows()), (1, 1));
    assert!(reasons(&d)[0].1.starts_with("not UTF-8"));
    assert_eq!(
        d.errors
            .column_by_name("raw")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "\u{fffd}\u{fffd}"
    );
}

#[test]
fn w2_clicks_good_plus_errors_equal_the_input() {
    let decoder = Decoder::new(&definition(
        "CREATE STREAM clicks (event_id TEXT NOT NULL, user_id TEXT, session_id TEXT, event_type TEXT, \
         page TEXT, device TEXT, country TEXT, ts TIMESTAMP NOT NULL)",
    ))
    .unwrap();
    let mut out = Vec::new();
    Generator::new(Workload::Clicks, GenOptions::canonical(Workload::Clicks))
        .write_events(20_000, &mut out);
    let lines: Vec<&[u8]> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let input: Vec<RawRecord<'_>> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawRecord {
            shard: 0,
            seq: i as u64,
            append_ms: 0,
            data: l,
            origin: Origin::Log,
        })
        .collect();
    let d = decoder.decode(&input).unwrap();
    assert_eq!(d.rows.num_rows() + d.errors.num_rows(), 20_000);
    let reasons = reasons(&d);
    let invalid = reasons
        .iter()
        .filter(|(_, r)| r.starts_with("invalid JSON"))
        .count();
    let bad_ts = reasons
        .iter()
        .filter(|(_, r)| r.starts_with("field 'ts'"))
        .count();
    assert_eq!(
        invalid + bad_ts,
        reasons.len(),
        "{:?}",
        &reasons[..5.min(reasons.len())]
    );
    // 0.5 % invalid JSON, 1 % bad timestamps (W2); null users are good rows of a nullable column.
    assert!((60..=140).contains(&invalid), "{invalid}");
    assert!((140..=260).contains(&bad_ts), "{bad_ts}");
    assert!(d.rows.column_by_name("user_id").unwrap().null_count() > 250);
    // Decoded on every core, in pieces, as partitions: the same rows and errors, in the same
    // order, partition by partition.
    let (first, second) = input.split_at(input.len() / 3);
    let parts = decoder
        .decode_parts(&[first.to_vec(), Vec::new(), second.to_vec()])
        .unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1].rows.num_rows() + parts[1].errors.num_rows(), 0);
    let rows = concat_batches(&parts[0].rows.schema(), [&parts[0].rows, &parts[2].rows]).unwrap();
    let errors = concat_batches(
        &parts[0].errors.schema(),
        [&parts[0].errors, &parts[2].errors],
    )
    .unwrap();
    assert_eq!((rows, errors), (d.rows, d.errors));
}

#[test]
fn csv_records_decode_into_typed_columns_and_bad_rows_into_errors() {
    let decoder = Decoder::new(&definition(
        "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL) WITH (format = 'csv')",
    ))
    .unwrap();
    let input = records(&[
        "T0001,123.5,300,2026-01-05T14:30:00.123Z",
        r#""T,2",,,2026-01-05T14:30:01Z"#,
        "T0003,cheap,100,2026-01-05T14:30:02Z",
        "T0004,1.0",
        ",1.0,1,2026-01-05T14:30:03Z",
        "T0006,2.5,7,2026-01-05T14:30:04Z",
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!((d.rows.num_rows(), d.errors.num_rows()), (3, 3));
    let tickers: Vec<_> = d
        .rows
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(tickers, ["T0001", "T,2", "T0006"]);
    let price = d.rows.column(1).as_primitive::<Float64Type>();
    assert_eq!((price.value(0), price.is_null(1)), (123.5, true));
    let ts = d.rows.column(3).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_767_623_400_123_000);
    let reasons = reasons(&d);
    assert_eq!(
        reasons.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [102, 103, 104]
    );
    assert!(reasons[0].1.contains("cheap"), "{reasons:?}");
    assert!(reasons[1].1.contains("fields"), "{reasons:?}");
    assert!(reasons[2].1.contains("ticker"), "{reasons:?}");
}

#[test]
fn json_columns_keep_any_value_as_sent_and_smallints_their_range() {
    let decoder = Decoder::new(&definition(
        "CREATE STREAM orders (id SMALLINT NOT NULL, attrs JSON, tags JSONB)",
    ))
    .unwrap();
    let input = records(&[
        r#"{"id": 1, "attrs": {"who": "ann", "n": [1, 2.5]}, "tags": ["a"]}"#,
        r#"{"id": -32768, "attrs": "text", "tags": 7}"#,
        r#"{"id": 2, "attrs": null, "tags": true}"#,
        r#"{"id": 32768}"#,
        r#"{"id": 1.5}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    let schema = d.rows.schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int16);
    for json in [1, 2] {
        assert_eq!(schema.field(json).extension_type_name(), Some("arrow.json"));
    }
    let ids: Vec<i16> = d
        .rows
        .column(0)
        .as_primitive::<Int16Type>()
        .values()
        .to_vec();
    assert_eq!(ids, [1, -32768, 2]);
    let text =
        |i: usize| -> Vec<Option<&str>> { d.rows.column(i).as_string::<i32>().iter().collect() };
    assert_eq!(
        text(1),
        [
            Some(r#"{"who": "ann", "n": [1, 2.5]}"#),
            Some(r#""text""#),
            None
        ]
    );
    assert_eq!(text(2), [Some(r#"["a"]"#), Some("7"), Some("true")]);
    assert_eq!(
        reasons(&d),
        [
            (
                103,
                "field 'id': 32768 is out of range for SMALLINT".to_string()
            ),
            (
                104,
                "field 'id': expected a whole number, found a number".to_string()
            ),
        ]
    );
}

#[test]
fn a_record_over_the_limit_is_an_error_row_in_every_format() {
    let big = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(MAX_RECORD_BYTES));
    for create in [
        "CREATE STREAM s (user_id TEXT)",
        "CREATE STREAM s",
        "CREATE STREAM s WITH (format = 'text')",
        "CREATE STREAM s (user_id TEXT) WITH (format = 'csv')",
    ] {
        let decoder = Decoder::new(&definition(create)).unwrap();
        let small = if create.contains("csv") {
            "a"
        } else {
            r#"{"user_id":"a"}"#
        };
        let decoded = decoder.decode(&records(&[small, &big, small])).unwrap();
        assert_eq!(decoded.rows.num_rows(), 2, "{create}");
        let reasons = reasons(&decoded);
        assert_eq!(
            reasons,
            [(
                101,
                format!(
                    "record of {} bytes is over the limit of 1048576 bytes",
                    big.len()
                )
            )],
            "{create}"
        );
        let raw = decoded.errors.column(0).as_string::<i32>().value(0);
        assert!(
            raw.len() < 2000 && raw.ends_with('…'),
            "{create}: {}",
            raw.len()
        );
    }
}

/// The rows' `column` as text (nulls as "∅"), for comparing whole columns at once.
fn texts(rows: &RecordBatch, column: &str) -> Vec<String> {
    let column = cast(rows.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    let column = column.as_string::<i32>();
    (0..column.len())
        .map(|i| match column.is_valid(i) {
            true => column.value(i).to_string(),
            false => "∅".to_string(),
        })
        .collect()
}

const ORDERS: &str = "CREATE STREAM orders (order_id TEXT NOT NULL, qty BIGINT, price DECIMAL(10, 2), \
     paid BOOLEAN, tags TEXT, lines JSON, v BIGINT) WITH (format = 'dynamodb', primary_key = 'order_id')";

#[test]
fn dynamodb_records_of_both_shapes_become_changes_of_typed_rows() {
    let decoder = Decoder::new(&definition(ORDERS)).unwrap();
    let input = records(&[
        // A DynamoDB Streams record (Pipes): the sequence number orders it.
        r#"{"eventID":"e1","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1693997155.0,"Keys":{"order_id":{"S":"o1"}},"NewImage":{"order_id":{"S":"o1"},"qty":{"N":"3"},"price":{"N":"9.99"},"paid":{"BOOL":false},"tags":{"SS":["a","b"]},"lines":{"L":[{"M":{"sku":{"S":"x"},"n":{"N":"2"}}}]},"extra":{"NULL":true}},"SequenceNumber":"111000000000000000001"}}"#,
        // Kinesis Data Streams for DynamoDB: no sequence number; the creation time in ms.
        r#"{"eventID":"e2","eventName":"REMOVE","recordFormat":"application/json","tableName":"orders","dynamodb":{"ApproximateCreationDateTime":1720740233012,"Keys":{"order_id":{"S":"o2"}},"OldImage":{"order_id":{"S":"o2"},"qty":{"N":"1"}}}}"#,
        r#"{"eventID":"e3","eventName":"MODIFY","dynamodb":{"Keys":{"order_id":{"S":"o1"}},"NewImage":{"order_id":{"S":"o1"},"qty":{"N":"x"}},"SequenceNumber":"2"}}"#,
        r#"{"eventID":"e4","eventName":"INSERT","dynamodb":{"Keys":{"order_id":{"S":"o4"}},"SequenceNumber":"3"}}"#,
        r#"{"eventID":"e5","eventName":"TRUNCATE","dynamodb":{}}"#,
        r#"{"eventID":"e6","eventName":"INSERT","dynamodb":{"Keys":{"order_id":{"S":"o6"}},"NewImage":{"qty":{"N":"1"}},"SequenceNumber":"4"}}"#,
        r#"{"eventID":"e7","eventName":"INSERT","dynamodb":{"Keys":{"order_id":{"S":"o7"}},"NewImage":{"order_id":{"S":"o7"},"qty":{"S":"many"}},"SequenceNumber":"5"}}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!(texts(&d.rows, "order_id"), ["o1", "o2", "o6"]);
    assert_eq!(texts(&d.rows, OP), ["c", "d", "c"]);
    assert_eq!(texts(&d.rows, "qty"), ["3", "1", "1"]);
    assert_eq!(texts(&d.rows, "price"), ["9.99", "∅", "∅"]);
    assert_eq!(texts(&d.rows, "tags"), [r#"["a","b"]"#, "∅", "∅"]);
    assert_eq!(
        texts(&d.rows, "lines"),
        [r#"[{"n":2,"sku":"x"}]"#, "∅", "∅"]
    );
    assert_eq!(
        texts(&d.rows, VERSION),
        ["111000000000000000001", "1720740233012000", "4"]
    );
    assert_eq!(
        texts(&d.rows, "_source_pos"),
        ["111000000000000000001", "∅", "4"]
    );
    assert_eq!(
        texts(&d.rows, SOURCE_TS),
        ["2023-09-06T10:45:55Z", "2024-07-11T23:23:53.012Z", "∅"]
    );
    assert_eq!(texts(&d.rows, EVENT_ID), ["e1", "e2", "e6"]);
    assert_eq!(
        texts(&d.rows, "_before"),
        ["∅", r#"{"order_id":"o2","qty":1}"#, "∅"]
    );
    assert_eq!(
        reasons(&d),
        [
            (102, "attribute 'qty': N 'x' is not a number".to_string()),
            (
                103,
                "no dynamodb.NewImage: the table's stream must carry new images (StreamViewType \
                 NEW_IMAGE or NEW_AND_OLD_IMAGES)"
                    .to_string()
            ),
            (
                104,
                "eventName 'TRUNCATE': expected INSERT, MODIFY or REMOVE".to_string()
            ),
            (
                106,
                "field 'qty': expected a whole number, found a string".to_string()
            ),
        ]
    );
}

#[test]
fn a_version_attribute_orders_dynamodb_changes() {
    let decoder = Decoder::new(&definition(&ORDERS.replace(
        "primary_key = 'order_id'",
        "primary_key = 'order_id', version_attribute = 'v'",
    )))
    .unwrap();
    let input = records(&[
        r#"{"eventID":"e1","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1720740233012,"Keys":{"order_id":{"S":"o1"}},"NewImage":{"order_id":{"S":"o1"},"v":{"N":"7"}}}}"#,
        r#"{"eventID":"e2","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1720740233012,"Keys":{"order_id":{"S":"o2"}},"NewImage":{"order_id":{"S":"o2"}}}}"#,
        // A REMOVE has the version in its old image, the version of the write it deletes.
        r#"{"eventID":"e3","eventName":"REMOVE","dynamodb":{"Keys":{"order_id":{"S":"o1"}},"OldImage":{"order_id":{"S":"o1"},"v":{"N":"7"}}}}"#,
        r#"{"eventID":"e4","eventName":"REMOVE","dynamodb":{"Keys":{"order_id":{"S":"o1"}}}}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!(texts(&d.rows, VERSION), ["7", "7"]);
    assert_eq!(texts(&d.rows, OP), ["c", "d"]);
    assert_eq!(
        reasons(&d),
        [
            (
                101,
                "version attribute 'v' is missing from the item".to_string()
            ),
            (
                103,
                "version attribute 'v' is missing from the removed item: the table's stream \
                 must carry old images (NEW_AND_OLD_IMAGES)"
                    .to_string()
            )
        ]
    );
}

#[test]
fn debezium_envelopes_become_changes_and_tombstones_nothing() {
    let decoder = Decoder::new(&definition(
        "CREATE STREAM customers (id INT NOT NULL, name TEXT NOT NULL, bio TEXT, born DATE, \
         seen TIMESTAMP, balance DECIMAL(10, 2), doc JSON) WITH (format = 'debezium', primary_key = 'id')",
    ))
    .unwrap();
    let input = records(&[
        r#"{"before":null,"after":{"id":1,"name":"Anne","born":18000,"seen":1465584025523000,"balance":"12.50","doc":"{\"a\":1}"},"op":"r","source":{"lsn":100,"ts_ms":1559033904863,"snapshot":"true"}}"#,
        r#"{"before":{"id":1},"after":{"id":1,"name":"Anne Marie","bio":"__debezium_unavailable_value"},"op":"u","source":{"lsn":300,"ts_ms":1559033905000}}"#,
        "null",
        "",
        r#"{"before":{"id":1},"after":null,"op":"d","source":{"connector":"mysql","file":"mysql-bin.000003","pos":154,"row":1,"ts_ms":1559033906000}}"#,
        r#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"},"field":"balance"},{"type":"int64","name":"io.debezium.time.Timestamp","field":"seen"}]}]},"payload":{"after":{"id":3,"name":"Cy","balance":"MDk=","seen":1465584025523},"op":"c","ts_ms":1559033907000}}"#,
        r#"{"schema":{},"payload":null}"#,
        r#"{"after":{"id":4,"name":"D"},"source":{"lsn":600}}"#,
        r#"{"after":{"id":5},"op":"c","source":{"lsn":700}}"#,
        r#"{"op":"t","source":{"lsn":800,"ts_ms":1559033908000}}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!(texts(&d.rows, "id"), ["1", "1", "1", "3", "∅"]);
    assert_eq!(texts(&d.rows, OP), ["r", "u", "d", "c", "t"]);
    assert_eq!(
        texts(&d.rows, "name"),
        ["Anne", "Anne Marie", "∅", "Cy", "∅"]
    );
    assert_eq!(texts(&d.rows, "born"), ["2019-04-14", "∅", "∅", "∅", "∅"]);
    assert_eq!(
        texts(&d.rows, "seen"),
        [
            "2016-06-10T18:40:25.523",
            "∅",
            "∅",
            "2016-06-10T18:40:25.523",
            "∅"
        ]
    );
    assert_eq!(
        texts(&d.rows, "balance"),
        ["12.50", "∅", "∅", "123.45", "∅"]
    );
    assert_eq!(texts(&d.rows, "doc"), [r#"{"a":1}"#, "∅", "∅", "∅", "∅"]);
    assert_eq!(
        texts(&d.rows, UNCHANGED),
        ["∅", r#"["bio"]"#, "∅", "∅", "∅"]
    );
    assert_eq!(
        texts(&d.rows, VERSION),
        ["100", "300", "300000001540001", "1559033907000000", "800"]
    );
    assert_eq!(
        texts(&d.rows, "_source_pos"),
        ["100", "300", "mysql-bin.000003:154:1", "∅", "800"]
    );
    assert_eq!(
        texts(&d.rows, EVENT_ID),
        [
            "∅",
            "300/u/1",
            "mysql-bin.000003:154:1/d/1",
            "∅",
            "800/t/null"
        ]
    );
    assert_eq!(
        texts(&d.rows, "_before"),
        ["∅", r#"{"id":1}"#, r#"{"id":1}"#, "∅", "∅"]
    );
    assert_eq!(
        reasons(&d),
        [
            (107, "no op: not a Debezium change event".to_string()),
            (
                108,
                "field 'name' is missing or null, and it is NOT NULL".to_string()
            ),
        ]
    );
}

#[test]
fn debezium_changes_at_one_position_are_told_apart_by_their_keys() {
    // The rows of one multi-row insert (a COPY) share the LSN of its WAL record.
    let decoder = Decoder::new(&definition(
        "CREATE STREAM t (id INT NOT NULL, v TEXT) WITH (format = 'debezium', primary_key = 'id')",
    ))
    .unwrap();
    let input = records(&[
        r#"{"op":"c","after":{"id":1,"v":"a"},"source":{"lsn":900}}"#,
        r#"{"op":"c","after":{"id":2,"v":"b"},"source":{"lsn":900}}"#,
    ]);
    let d = decoder.decode(&input).unwrap();
    assert_eq!(texts(&d.rows, EVENT_ID), ["900/c/1", "900/c/2"]);
}
