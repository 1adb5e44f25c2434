//! Keeping a table small: statistics, compaction (OPTIMIZE) and vacuum (VACUUM).

use std::time::Duration;

use sluice_lake::{Compaction, TableStats};

use super::*;

/// A table of five commits of ten rows each (keys 0 to 49), one file each.
async fn five_small_files(t: &TestLake) -> LakeTable {
    let mut ticks = table(&t.lake, "ticks").await;
    for round in 0..5 {
        ticks
            .append(
                vec![keyed(round * 10..round * 10 + 10, "a")],
                positions(&[("shard-0", round + 1)]),
            )
            .await
            .unwrap();
    }
    ticks
}

#[tokio::test]
async fn stats_count_the_files_bytes_and_rows_the_log_says_the_version_reads() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    assert_eq!(
        ticks.stats().unwrap(),
        TableStats {
            version: Some(0),
            ..TableStats::default()
        }
    );
    ticks
        .append(vec![keyed(0..3, "a")], Vec::new())
        .await
        .unwrap();
    ticks
        .append(vec![keyed(3..10, "b"), keyed(10..12, "c")], Vec::new())
        .await
        .unwrap();

    let on_disk: u64 = t
        .data_files("ticks")
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let stats = ticks.stats().unwrap();
    assert_eq!(stats.version, Some(2));
    assert_eq!(stats.files, t.data_files("ticks").len());
    assert_eq!(stats.bytes, on_disk);
    assert_eq!(stats.rows, 12);
    assert_eq!(
        t.reopened().open("ticks").await.unwrap().stats().unwrap(),
        stats
    );
}

#[tokio::test]
async fn compaction_merges_small_files_without_changing_rows_or_positions() {
    let t = TestLake::new();
    let mut ticks = five_small_files(&t).await;
    let before = read(&ticks).await;
    assert_eq!(before.len(), 50);
    assert_eq!(ticks.stats().unwrap().files, 5);

    let compaction = ticks.compact().await.unwrap();
    assert_eq!(
        compaction,
        Compaction {
            files_removed: 5,
            files_added: 1
        }
    );
    assert_eq!(ticks.version(), Some(6), "one commit");
    let stats = ticks.stats().unwrap();
    assert_eq!((stats.files, stats.rows), (1, 50));
    assert_eq!(read(&ticks).await, before);
    let reopened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(read(&reopened).await, before);
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(5));

    // One file is as compact as it gets: nothing to do, no commit.
    let again = ticks.compact().await.unwrap();
    assert_eq!(again.files_removed, 0);
}

#[tokio::test]
async fn vacuum_deletes_the_files_only_older_versions_read() {
    let t = TestLake::new();
    let mut ticks = five_small_files(&t).await;
    let small = t.data_files("ticks");
    ticks.compact().await.unwrap();
    let all = t.data_files("ticks");
    assert_eq!(all.len(), 6, "the small files stay until vacuumed");
    let compacted: Vec<_> = all.iter().filter(|f| !small.contains(f)).collect();

    let would = ticks.vacuum(Some(Duration::ZERO), true).await.unwrap();
    assert_eq!(would.len(), 5, "{would:?}");
    assert_eq!(t.data_files("ticks"), all, "a dry run deletes nothing");

    let deleted = ticks.vacuum(Some(Duration::ZERO), false).await.unwrap();
    let names = |files: Vec<String>| {
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.rsplit('/').next().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let small_names: Vec<String> = small
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names(deleted), small_names);
    assert_eq!(names(would), small_names);
    assert_eq!(
        t.data_files("ticks"),
        compacted.into_iter().cloned().collect::<Vec<_>>()
    );

    // The current version reads all its rows, from the file that is left.
    assert_eq!(count(&ticks).await, 50);
    let reopened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(count(&reopened).await, 50);
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(5));
}

#[tokio::test]
async fn vacuum_keeps_the_files_of_versions_younger_than_the_retention() {
    let t = TestLake::new();
    let mut ticks = five_small_files(&t).await;
    ticks.compact().await.unwrap();
    let all = t.data_files("ticks");

    let deleted = ticks
        .vacuum(Some(Duration::from_secs(3600)), false)
        .await
        .unwrap();
    assert!(deleted.is_empty(), "{deleted:?}");
    // The default is the table's own retention (7 days).
    assert!(ticks.vacuum(None, false).await.unwrap().is_empty());
    assert_eq!(t.data_files("ticks"), all);
}
