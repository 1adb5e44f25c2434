//! Time travel: a table as it was at a version, by number or by instant.

use std::time::Duration;

use chrono::Utc;
use sluice_error::Classify;
use sluice_lake::{Error, Version};

use super::*;

/// A table of three commits after its creation, one row each (keys 1, 2, 3).
async fn three_commits(t: &TestLake) -> LakeTable {
    let mut ticks = table(&t.lake, "ticks").await;
    for k in 1..=3 {
        ticks
            .append(vec![keyed(k..k + 1, "a")], Vec::new())
            .await
            .unwrap();
    }
    ticks
}

async fn keys(table: &LakeTable) -> Vec<i64> {
    read(table)
        .await
        .into_iter()
        .filter_map(|(k, _)| k)
        .collect()
}

#[tokio::test]
async fn a_table_opens_as_it_was_at_a_version_number() {
    let t = TestLake::new();
    three_commits(&t).await;

    let then = t
        .lake
        .open_version("ticks", Version::Number(2))
        .await
        .unwrap();
    assert_eq!(then.version(), Some(2));
    assert_eq!(keys(&then).await, vec![1, 2]);
    let created = t
        .lake
        .open_version("ticks", Version::Number(0))
        .await
        .unwrap();
    assert_eq!(count(&created).await, 0);
    let newest = t
        .lake
        .open_version("ticks", Version::Number(3))
        .await
        .unwrap();
    assert_eq!(keys(&newest).await, vec![1, 2, 3]);
    // The latest handle is not moved back by it.
    assert_eq!(t.lake.open("ticks").await.unwrap().version(), Some(3));
}

#[tokio::test]
async fn a_table_opens_as_it_was_at_an_instant() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    let mut instants = Vec::new();
    for k in 1..=2 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        ticks
            .append(vec![keyed(k..k + 1, "a")], Vec::new())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        instants.push(Utc::now());
    }

    let first = t
        .lake
        .open_version("ticks", Version::At(instants[0]))
        .await
        .unwrap();
    assert_eq!(
        first.version(),
        Some(1),
        "the last commit at or before the instant"
    );
    assert_eq!(keys(&first).await, vec![1]);
    let second = t
        .lake
        .open_version("ticks", Version::At(instants[1]))
        .await
        .unwrap();
    assert_eq!(second.version(), Some(2));
    assert_eq!(keys(&second).await, vec![1, 2]);
}

#[tokio::test]
async fn a_version_past_the_newest_or_before_the_first_commit_does_not_exist() {
    let t = TestLake::new();
    let before = Utc::now() - chrono::Duration::hours(1);
    three_commits(&t).await;

    let past = t.lake.open_version("ticks", Version::Number(4)).await;
    assert!(
        matches!(&past, Err(Error::NoSuchVersion { table, .. }) if table == "ticks"),
        "{:?}",
        past.err()
    );
    let early = t.lake.open_version("ticks", Version::At(before)).await;
    let Err(early) = early else {
        panic!("an instant before the table existed has no version")
    };
    assert!(matches!(early, Error::NoSuchVersion { .. }), "{early:?}");
    assert_eq!(early.code(), "no_such_version");

    let missing = t.lake.open_version("nothing", Version::Number(0)).await;
    assert!(
        matches!(missing, Err(Error::TableNotFound(_))),
        "{:?}",
        missing.err()
    );
}
