//! Positions: the `txn` actions a writer records with its rows, and reads back after a restart.

use super::*;

#[tokio::test]
async fn an_append_records_its_positions_in_the_same_commit_as_its_rows() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    ticks
        .append(
            vec![keyed(0..3, "a")],
            positions(&[("shard-0", 10), ("shard-1", 7)]),
        )
        .await
        .unwrap();

    assert_eq!(ticks.version(), Some(1), "one commit");
    let commit = t.commit("ticks", 1);
    assert_eq!(adds(&commit), 1, "the rows are in commit 1");
    assert_eq!(
        txns(&commit),
        positions(&[("shard-0", 10), ("shard-1", 7)]),
        "so are the positions"
    );
    assert_eq!(ticks.position("shard-0").await.unwrap(), Some(10));

    // A restart: the lake opened again from its folder knows nothing but what the log says.
    let reopened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(10));
    assert_eq!(reopened.position("shard-1").await.unwrap(), Some(7));
    assert_eq!(reopened.position("shard-2").await.unwrap(), None);
    assert_eq!(count(&reopened).await, 3);
}

#[tokio::test]
async fn a_commit_of_positions_alone_records_them_and_adds_no_file() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    ticks
        .append(vec![keyed(0..2, "a")], positions(&[("shard-0", 2)]))
        .await
        .unwrap();

    // Batches without rows are no rows: the commit records the positions alone.
    let empty = keyed(0..0, "none");
    ticks
        .append(vec![empty], positions(&[("shard-0", 5)]))
        .await
        .unwrap();
    assert_eq!(ticks.version(), Some(2));
    let commit = t.commit("ticks", 2);
    assert_eq!(adds(&commit), 0, "no data file");
    assert_eq!(txns(&commit), positions(&[("shard-0", 5)]));
    assert_eq!(ticks.stats().unwrap().files, 1);
    assert_eq!(t.data_files("ticks").len(), 1);
    assert_eq!(ticks.position("shard-0").await.unwrap(), Some(5));

    let reopened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(5));
    assert_eq!(count(&reopened).await, 2);

    // Nothing to record, nothing committed.
    ticks.append(Vec::new(), Vec::new()).await.unwrap();
    assert_eq!(ticks.version(), Some(2));
}

#[tokio::test]
async fn a_handle_brought_up_to_date_knows_the_newest_positions() {
    let t = TestLake::new();
    let mut writer = table(&t.lake, "ticks").await;
    writer
        .append(vec![keyed(0..1, "a")], positions(&[("shard-0", 1)]))
        .await
        .unwrap();
    let mut reader = t.reopened().open("ticks").await.unwrap();
    let cached = t.lake.open("ticks").await.unwrap();
    assert_eq!(reader.position("shard-0").await.unwrap(), Some(1));

    // A few commits, each moving shard-0 on; shard-1 appears in one of them only.
    writer
        .append(Vec::new(), positions(&[("shard-0", 2), ("shard-1", 9)]))
        .await
        .unwrap();
    for position in 3..6 {
        writer
            .append(
                vec![keyed(position..position + 1, "b")],
                positions(&[("shard-0", position)]),
            )
            .await
            .unwrap();
    }

    // The handle reads the commits since its version, oldest first: the newest wins.
    reader.refresh().await.unwrap();
    assert_eq!(reader.version(), Some(5));
    assert_eq!(reader.position("shard-0").await.unwrap(), Some(5));
    assert_eq!(reader.position("shard-1").await.unwrap(), Some(9));
    // The lake's own handle of the table, opened again, is brought up to date the same way.
    assert_eq!(
        cached.position("shard-0").await.unwrap(),
        Some(1),
        "as it was"
    );
    let again = t.lake.open("ticks").await.unwrap();
    assert_eq!(again.version(), Some(5));
    assert_eq!(again.position("shard-0").await.unwrap(), Some(5));
    assert_eq!(again.position("shard-1").await.unwrap(), Some(9));
}

#[tokio::test]
async fn past_a_hundred_commits_a_position_only_an_old_commit_recorded_comes_from_the_log() {
    let t = TestLake::new();
    let mut writer = table(&t.lake, "ticks").await;
    writer
        .append(
            vec![keyed(0..1, "a")],
            positions(&[("old", 1), ("shard-0", 1)]),
        )
        .await
        .unwrap();
    writer
        .append(Vec::new(), positions(&[("old", 2), ("shard-0", 2)]))
        .await
        .unwrap();
    let mut reader = t.reopened().open("ticks").await.unwrap();
    assert_eq!(reader.position("old").await.unwrap(), Some(2));

    // More than a hundred commits that record shard-0 only (a checkpoint comes at 100).
    for position in 3..=110 {
        writer
            .append(Vec::new(), positions(&[("shard-0", position)]))
            .await
            .unwrap();
    }
    assert_eq!(writer.version(), Some(110));

    // The reader catches up by the newest commit alone; "old" is answered from the log.
    reader.refresh().await.unwrap();
    assert_eq!(reader.version(), Some(110));
    assert_eq!(reader.position("shard-0").await.unwrap(), Some(110));
    assert_eq!(reader.position("old").await.unwrap(), Some(2));
    assert_eq!(reader.position("never").await.unwrap(), None);
    // So does the writer, which read every commit itself, and a handle opened afresh.
    assert_eq!(writer.position("old").await.unwrap(), Some(2));
    let reopened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(reopened.position("old").await.unwrap(), Some(2));
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(110));
}

#[tokio::test]
async fn positions_survive_compaction() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    for round in 0..3 {
        ticks
            .append(
                vec![keyed(round * 10..round * 10 + 10, "a")],
                positions(&[("shard-0", round + 1), ("shard-1", 100 + round)]),
            )
            .await
            .unwrap();
    }
    let compaction = ticks.compact().await.unwrap();
    assert_eq!(compaction.files_removed, 3);
    assert_eq!(ticks.version(), Some(4));
    assert!(
        txns(&t.commit("ticks", 4)).is_empty(),
        "compaction records none"
    );

    assert_eq!(ticks.position("shard-0").await.unwrap(), Some(3));
    let reopened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(3));
    assert_eq!(reopened.position("shard-1").await.unwrap(), Some(102));
}

#[tokio::test]
async fn a_writer_behind_another_s_commit_of_its_positions_cannot_commit_them() {
    // Two writers of one table (two workers; one of them has lost its partition to the other
    // without knowing it yet), each with a handle read at the same version.
    let t = TestLake::new();
    let mut owner = table(&t.lake, "ticks").await;
    let mut stale = t.reopened().open("ticks").await.unwrap();
    owner
        .append(vec![keyed(0..3, "a")], positions(&[("shard-0", 3)]))
        .await
        .unwrap();

    // The one behind commits the same rows and position: delta-rs finds the other's commit of
    // the same application id between its version and the table's, and refuses it.
    let refused = stale
        .append(vec![keyed(0..3, "a")], positions(&[("shard-0", 3)]))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("Concurrent transaction"),
        "{refused}"
    );
    // Its pipeline starts again, from the positions the table holds now.
    assert_eq!(
        sluice_error::Classify::class(&refused),
        sluice_error::Class::Unavailable
    );
    let opened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(count(&opened).await, 3, "the rows once");
    assert_eq!(opened.position("shard-0").await.unwrap(), Some(3));

    // Another partition's rows are a blind append, retried past the other's commit.
    let mut other = t.reopened().open("ticks").await.unwrap();
    owner
        .append(vec![keyed(3..4, "a")], positions(&[("shard-0", 4)]))
        .await
        .unwrap();
    other
        .append(vec![keyed(10..12, "b")], positions(&[("shard-1", 2)]))
        .await
        .unwrap();
    let opened = t.reopened().open("ticks").await.unwrap();
    assert_eq!(count(&opened).await, 6);
    assert_eq!(opened.position("shard-0").await.unwrap(), Some(4));
    assert_eq!(opened.position("shard-1").await.unwrap(), Some(2));
}

#[tokio::test]
async fn a_position_says_when_it_was_written_though_later_commits_record_others() {
    let t = TestLake::new();
    let mut ticks = table(&t.lake, "ticks").await;
    let before = chrono::Utc::now().timestamp_millis();
    ticks
        .append(
            vec![keyed(0..2, "a")],
            positions(&[("shard-0", 2), ("shard-1", 2)]),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let middle = chrono::Utc::now().timestamp_millis();
    // Another writer's commits record only its own partition.
    for n in 0..3 {
        ticks
            .append(vec![keyed(n..n + 1, "b")], positions(&[("shard-1", 3 + n)]))
            .await
            .unwrap();
    }
    let after = chrono::Utc::now().timestamp_millis();

    // A handle opened now read only the newest commit: the older ones are read back for it.
    let reopened = t.reopened().open("ticks").await.unwrap();
    let asked = ["shard-0", "shard-1", "shard-2"].map(String::from);
    let written = reopened.positions_written(&asked).await.unwrap();
    assert!(
        (before..middle).contains(&written["shard-0"]),
        "{written:?}"
    );
    assert!(
        (middle..=after).contains(&written["shard-1"]),
        "{written:?}"
    );
    assert!(!written.contains_key("shard-2"), "never recorded");
}
