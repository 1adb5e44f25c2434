//! Upserts (Delta MERGE): a row per key, the delete flag, NULL keys, positions.

use super::*;

/// Upserts `rows` into `table` by the key `k`, without positions.
async fn upsert(table: &mut LakeTable, rows: &[(Option<i64>, &str, bool)]) {
    table
        .upsert(
            vec![changes(rows)],
            &Upsert::new(&["k".into()], "deleted"),
            Vec::new(),
        )
        .await
        .unwrap();
}

fn row(k: i64, v: &str) -> (Option<i64>, Option<String>) {
    (Some(k), Some(v.to_string()))
}

#[tokio::test]
async fn an_upsert_inserts_new_keys_and_replaces_existing_ones() {
    let t = TestLake::new();
    let mut latest = table(&t.lake, "latest").await;
    upsert(&mut latest, &[(Some(1), "a", false), (Some(2), "b", false)]).await;
    assert_eq!(read(&latest).await, vec![row(1, "a"), row(2, "b")]);

    upsert(&mut latest, &[(Some(2), "B", false), (Some(3), "c", false)]).await;
    assert_eq!(latest.version(), Some(2), "one commit an upsert");
    assert_eq!(
        read(&latest).await,
        vec![row(1, "a"), row(2, "B"), row(3, "c")]
    );
}

#[tokio::test]
async fn the_delete_flag_deletes_a_key() {
    let t = TestLake::new();
    let mut latest = table(&t.lake, "latest").await;
    upsert(&mut latest, &[(Some(1), "a", false), (Some(2), "b", false)]).await;

    upsert(
        &mut latest,
        &[(Some(1), "gone", true), (Some(7), "never", true)],
    )
    .await;
    assert_eq!(
        read(&latest).await,
        vec![row(2, "b")],
        "key 1 deleted, and the deletion of a key the table lacks inserts nothing"
    );
}

#[tokio::test]
async fn null_keys_match_null_keys() {
    let t = TestLake::new();
    let mut latest = table(&t.lake, "latest").await;
    upsert(&mut latest, &[(None, "x", false), (Some(1), "a", false)]).await;
    upsert(&mut latest, &[(None, "y", false)]).await;
    assert_eq!(
        read(&latest).await,
        vec![(None, Some("y".to_string())), row(1, "a")],
        "the NULL key's row replaced, not a second one"
    );

    upsert(&mut latest, &[(None, "", true)]).await;
    assert_eq!(read(&latest).await, vec![row(1, "a")]);
}

#[tokio::test]
async fn every_key_column_must_match() {
    let t = TestLake::new();
    let mut latest = table(&t.lake, "latest").await;
    let both = ["k".to_string(), "v".to_string()];
    latest
        .upsert(
            vec![changes(&[(Some(1), "a", false), (Some(1), "b", false)])],
            &Upsert::new(&both, "deleted"),
            Vec::new(),
        )
        .await
        .unwrap();
    latest
        .upsert(
            vec![changes(&[(Some(1), "a", true), (Some(2), "a", false)])],
            &Upsert::new(&both, "deleted"),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(read(&latest).await, vec![row(1, "b"), row(2, "a")]);
}

#[tokio::test]
async fn an_upsert_records_its_positions_in_its_commit() {
    let t = TestLake::new();
    let mut latest = table(&t.lake, "latest").await;
    latest
        .upsert(
            vec![changes(&[(Some(1), "a", false)])],
            &Upsert::new(&["k".into()], "deleted"),
            positions(&[("shard-0", 4)]),
        )
        .await
        .unwrap();
    assert_eq!(latest.version(), Some(1));
    let commit = t.commit("latest", 1);
    assert_eq!(adds(&commit), 1);
    assert_eq!(txns(&commit), positions(&[("shard-0", 4)]));
    assert_eq!(latest.position("shard-0").await.unwrap(), Some(4));

    // No rows: the positions alone.
    latest
        .upsert(
            Vec::new(),
            &Upsert::new(&["k".into()], "deleted"),
            positions(&[("shard-0", 6)]),
        )
        .await
        .unwrap();
    assert_eq!(latest.version(), Some(2));
    assert_eq!(adds(&t.commit("latest", 2)), 0);
    let reopened = t.reopened().open("latest").await.unwrap();
    assert_eq!(reopened.position("shard-0").await.unwrap(), Some(6));
    assert_eq!(read(&reopened).await, vec![row(1, "a")]);
}
