//! Who must act on the lake's real errors, as delta-rs makes them: the classification's text
//! markers checked against the messages they are meant to find.

use std::collections::HashMap;

use sluice_error::{Class, Classify};
use sluice_lake::Error;

use super::*;

#[track_caller]
fn assert_class<T: std::fmt::Debug>(result: Result<T, Error>, class: Class, code: &str) {
    let e = result.expect_err("an error");
    assert_eq!((e.class(), e.code()), (class, code), "{e:?}");
}

#[tokio::test]
async fn an_unreachable_store_is_unavailable_not_the_users_mistake() {
    // As an S3 outage looks when a table is opened: nothing listens at the endpoint.
    deltalake::aws::register_handlers(None);
    let options: HashMap<String, String> = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "sluice"),
        ("AWS_SECRET_ACCESS_KEY", "sluice"),
        ("AWS_REGION", "us-east-1"),
        ("max_retries", "0"),
        ("retry_timeout", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = url::Url::parse("s3://bucket/lake/ticks/").unwrap();
    let opened = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .with_storage_options(options)
        .load()
        .await
        .map_err(|source| Error::Delta {
            table: "ticks".into(),
            source: Box::new(source),
        });
    assert_class(opened, Class::Unavailable, "lake_unavailable");
}

#[tokio::test]
async fn rows_that_do_not_fit_the_table_are_the_users_mistake() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    ticks
        .append(vec![keyed(0..2, "a")], Vec::new())
        .await
        .unwrap();

    let text_keys = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Utf8, true),
    ]));
    let text_key = RecordBatch::try_new(
        text_keys,
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(StringArray::from(vec!["a"])),
        ],
    )
    .unwrap();
    let appended = ticks.append(vec![text_key.clone()], Vec::new()).await;
    assert_class(appended, Class::InvalidData, "invalid_data");

    let one_column = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
    let short =
        RecordBatch::try_new(one_column, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
    let appended = ticks.append(vec![short], Vec::new()).await;
    assert_class(appended, Class::InvalidData, "invalid_data");

    // Through a MERGE: a key of another type, and two rows for one key.
    let deleted: ArrayRef = Arc::new(BooleanArray::from(vec![false]));
    let text_change = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("deleted", DataType::Boolean, false),
        ])),
        vec![
            text_key.column(0).clone(),
            text_key.column(1).clone(),
            deleted,
        ],
    )
    .unwrap();
    let upserted = ticks
        .upsert(
            vec![text_change],
            &Upsert::new(&["k".into()], "deleted"),
            Vec::new(),
        )
        .await;
    assert_class(upserted, Class::InvalidData, "invalid_data");
    let twice = changes(&[(Some(1), "b", false), (Some(1), "c", false)]);
    let upserted = ticks
        .upsert(
            vec![twice],
            &Upsert::new(&["k".into()], "deleted"),
            Vec::new(),
        )
        .await;
    assert_class(upserted, Class::InvalidData, "invalid_data");

    // A NULL in a NOT NULL column.
    let required = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    let mut strict = t
        .lake
        .open_or_create("strict", &required, &[], &[])
        .await
        .unwrap();
    let appended = strict.append(vec![rows(&[(None, "a")])], Vec::new()).await;
    assert_class(appended, Class::InvalidData, "invalid_data");

    assert_eq!(
        count(&t.lake.open("ticks").await.unwrap()).await,
        2,
        "nothing written"
    );
    assert_eq!(count(&t.lake.open("strict").await.unwrap()).await, 0);
}

#[tokio::test]
async fn a_table_whose_log_lost_its_start_is_ours_to_mend() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    ticks
        .append(vec![keyed(0..2, "a")], Vec::new())
        .await
        .unwrap();
    std::fs::remove_file(
        t.folder("ticks")
            .join("_delta_log/00000000000000000000.json"),
    )
    .unwrap();
    let opened = t.reopened().open("ticks").await;
    assert_class(opened, Class::Internal, "internal");
}
