//! The rows commits added, through Delta's change data feed.

use super::*;

/// The `(version, k)` of every row `batches` hold, sorted.
fn versions_and_keys(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut found = Vec::new();
    for batch in batches {
        let versions = batch.column_by_name("_commit_version").unwrap();
        let versions = datafusion::arrow::compute::cast(versions, &DataType::Int64).unwrap();
        let versions = versions.as_primitive::<Int64Type>();
        let keys = batch
            .column_by_name("k")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            found.push((versions.value(i), keys.value(i)));
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn the_change_feed_gives_the_rows_each_commit_added_with_its_version() {
    let t = TestLake::new();
    let mut ticks = t
        .lake
        .open_or_create(
            "ticks",
            &schema(),
            &[],
            &[("delta.enableChangeDataFeed", "true")],
        )
        .await
        .unwrap();
    assert_eq!(
        ticks.property("delta.enableChangeDataFeed").as_deref(),
        Some("true")
    );
    ticks
        .append(vec![keyed(1..3, "a")], positions(&[("shard-0", 1)]))
        .await
        .unwrap();
    ticks
        .append(vec![keyed(3..4, "b")], positions(&[("shard-0", 2)]))
        .await
        .unwrap();
    // Commits without data: positions alone (3), a compaction (4).
    ticks
        .append(Vec::new(), positions(&[("shard-0", 3)]))
        .await
        .unwrap();
    ticks.compact().await.unwrap();
    ticks
        .append(vec![keyed(4..5, "c")], positions(&[("shard-0", 4)]))
        .await
        .unwrap();
    assert_eq!(ticks.version(), Some(5));

    let added = ticks.appended(1, 5).await.unwrap();
    assert_eq!(
        versions_and_keys(&added),
        vec![(1, 1), (1, 2), (2, 3), (5, 4)]
    );
    for batch in &added {
        let schema = batch.schema();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert!(columns.contains(&"_commit_timestamp"), "{columns:?}");
        assert!(!columns.contains(&"_change_type"), "{columns:?}");
    }
    let none = ticks.appended(3, 4).await.unwrap();
    assert_eq!(
        none.iter().map(RecordBatch::num_rows).sum::<usize>(),
        0,
        "the commits of positions and of the compaction added no row"
    );
    assert_eq!(
        versions_and_keys(&ticks.appended(2, 2).await.unwrap()),
        vec![(2, 3)],
        "the range is inclusive at both ends"
    );
}
