//! The documents kept beside the tables: created once, replaced, listed, deleted, shared by
//! every opening of the lake, and never taken for a table.

use sluice_lake::Error;

use super::*;

#[tokio::test]
async fn documents_are_created_once_replaced_listed_and_deleted() {
    let t = TestLake::new();
    let boards = t.lake.documents("dashboards");
    assert!(boards.list().await.unwrap().is_empty());
    assert_eq!(boards.get("market").await.unwrap(), None);

    assert!(boards.put("market", b"one".to_vec(), true).await.unwrap());
    assert!(
        !boards.put("market", b"two".to_vec(), true).await.unwrap(),
        "a document to create that exists is not written"
    );
    assert_eq!(boards.get("market").await.unwrap().unwrap(), b"one");
    assert!(boards.put("market", b"two".to_vec(), false).await.unwrap());
    assert!(boards.put("clicks", b"three".to_vec(), true).await.unwrap());

    // Another opening of the lake (another process sharing it) sees them at once.
    let other = t.reopened().documents("dashboards");
    let listed = other.list().await.unwrap();
    let expected = vec![
        ("clicks".to_string(), b"three".to_vec()),
        ("market".to_string(), b"two".to_vec()),
    ];
    assert_eq!(listed, expected);
    assert!(
        t.lake.documents("other").list().await.unwrap().is_empty(),
        "kinds are apart"
    );

    // Never a table, whatever the lake lists.
    table(&t.lake, "ticks").await;
    assert_eq!(t.reopened().table_names(), vec!["ticks"]);

    assert!(other.delete("market").await.unwrap());
    assert!(!other.delete("market").await.unwrap(), "deleted already");
    assert_eq!(boards.get("market").await.unwrap(), None);
    assert_eq!(boards.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_document_name_is_one_file_of_its_folder() {
    let t = TestLake::new();
    let boards = t.lake.documents("dashboards");
    for name in ["", "../escape", "a/b", ".hidden", &"x".repeat(200)] {
        let e = boards.put(name, b"{}".to_vec(), true).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName(_)), "{name:?}: {e:?}");
        assert!(boards.get(name).await.is_err(), "{name:?}");
    }
}

#[tokio::test]
async fn a_documents_tag_changes_when_it_is_written_anew_and_only_then() {
    let t = TestLake::new();
    let streams = t.lake.documents("streams");
    streams.put("clicks", b"one".to_vec(), true).await.unwrap();
    streams.put("ticks", b"two".to_vec(), true).await.unwrap();
    let first = streams.tags().await.unwrap();
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["clicks", "ticks"]);
    assert_eq!(
        streams.tags().await.unwrap(),
        first,
        "nothing written: same tags"
    );

    // Deleted and created again (as a stream dropped and created again under its name).
    std::thread::sleep(std::time::Duration::from_millis(20));
    streams.delete("clicks").await.unwrap();
    streams
        .put("clicks", b"three, longer".to_vec(), true)
        .await
        .unwrap();
    let second = streams.tags().await.unwrap();
    assert_ne!(second[0], first[0], "clicks was written anew");
    assert_eq!(second[1], first[1], "ticks was not");
}
