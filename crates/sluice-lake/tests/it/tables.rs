//! The lake's tables: names, creating, opening, dropping and creating again.

use sluice_error::{Class, Classify};
use sluice_lake::Error;

use super::*;

/// Table `ticks` holding rows 0, 1 and 2, and shard-0's position 3 (version 1).
async fn three_rows(lake: &Lake) -> LakeTable {
    let mut ticks = table(lake, "ticks").await;
    ticks
        .append(vec![keyed(0..3, "a")], positions(&[("shard-0", 3)]))
        .await
        .unwrap();
    ticks
}

#[tokio::test]
async fn a_dropped_table_loses_its_files_and_its_name() {
    let t = TestLake::new();
    three_rows(&t.lake).await;
    table(&t.lake, "other").await;
    t.lake.open("ticks").await.unwrap();
    assert_eq!(t.lake.table_names(), vec!["other", "ticks"]);

    t.lake.drop_table("ticks").await.unwrap();
    assert_eq!(t.lake.table_names(), vec!["other"]);
    assert!(!t.folder("ticks").exists(), "its folder is gone");
    assert_eq!(t.reopened().table_names(), vec!["other"]);
    let open = t.lake.open("ticks").await;
    let Err(e) = open else {
        panic!("a dropped table opens")
    };
    assert!(
        matches!(e, Error::TableNotFound(ref name) if name == "ticks"),
        "{e:?}"
    );
    assert_eq!(e.class(), Class::UndefinedTable);

    // Dropping what is not there is fine.
    t.lake.drop_table("ticks").await.unwrap();
}

#[tokio::test]
async fn what_another_process_sharing_the_lake_created_and_dropped_is_known_after_a_rescan() {
    let t = TestLake::new();
    table(&t.lake, "other").await;
    let elsewhere = t.reopened();
    three_rows(&elsewhere).await;
    assert_eq!(t.lake.table_names(), vec!["other"], "not listed again yet");
    t.lake.rescan().await.unwrap();
    assert_eq!(t.lake.table_names(), vec!["other", "ticks"]);
    assert_eq!(t.lake.open("ticks").await.unwrap().version(), Some(1));

    elsewhere.drop_table("other").await.unwrap();
    t.lake.rescan().await.unwrap();
    assert_eq!(t.lake.table_names(), vec!["ticks"]);
    assert!(t.lake.open("other").await.is_err());
}

#[tokio::test]
async fn a_table_created_again_under_a_dropped_name_starts_afresh() {
    let t = TestLake::new();
    let mut ticks = three_rows(&t.lake).await;
    ticks
        .append(vec![keyed(3..4, "a")], positions(&[("shard-0", 4)]))
        .await
        .unwrap();
    // The lake keeps the handles it opened: the new table must not be mistaken for it.
    assert_eq!(t.lake.open("ticks").await.unwrap().version(), Some(2));

    t.lake.drop_table("ticks").await.unwrap();
    let again = table(&t.lake, "ticks").await;
    assert_eq!(count(&again).await, 0);
    assert_eq!(again.position("shard-0").await.unwrap(), None);
    let opened = t.lake.open("ticks").await.unwrap();
    assert_eq!(opened.version(), Some(0));
    assert_eq!(count(&opened).await, 0);
    assert_eq!(opened.position("shard-0").await.unwrap(), None);
    assert_eq!(t.reopened().open("ticks").await.unwrap().version(), Some(0));
}

#[tokio::test]
async fn open_or_create_opens_an_existing_table() {
    let t = TestLake::new();
    three_rows(&t.lake).await;

    // Other columns asked for change nothing: the table is opened as it is.
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Boolean, true)]));
    let opened = t
        .lake
        .open_or_create("ticks", &other, &[], &[])
        .await
        .unwrap();
    assert_eq!(opened.version(), Some(1));
    assert_eq!(count(&opened).await, 3);
    assert_eq!(opened.position("shard-0").await.unwrap(), Some(3));
    assert_eq!(opened.arrow_schema().unwrap().fields().len(), 2);
    assert_eq!(t.lake.table_names(), vec!["ticks"]);
}

#[tokio::test]
async fn columns_a_table_lacks_are_added_if_nullable_changing_no_row_or_position() {
    let t = TestLake::new();
    let mut ticks = three_rows(&t.lake).await;

    let wider = Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
        Field::new("x", DataType::Boolean, true),
    ]);
    ticks.add_columns(&wider).await.unwrap();
    let opened = t.lake.open("ticks").await.unwrap();
    assert_eq!(opened.version(), Some(2));
    assert_eq!(count(&opened).await, 3);
    assert_eq!(opened.position("shard-0").await.unwrap(), Some(3));
    assert_eq!(opened.arrow_schema().unwrap().fields().len(), 3);
    let nulls = query(&opened, "SELECT count(*) FROM t WHERE x IS NULL").await;
    assert_eq!(nulls[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    ticks.add_columns(&wider).await.unwrap();
    assert_eq!(ticks.version(), Some(2), "nothing more to add, no commit");

    let required = Schema::new(vec![Field::new("y", DataType::Int64, false)]);
    let refused = ticks.add_columns(&required).await;
    assert!(
        matches!(refused, Err(Error::RequiredColumn { ref column, .. }) if column == "y"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn create_makes_a_table_of_its_rows_in_one_commit() {
    let t = TestLake::new();
    let created = t
        .lake
        .create("made", &schema(), &[], vec![keyed(0..4, "a")])
        .await
        .unwrap();
    assert_eq!(created.version(), Some(0));
    assert_eq!(count(&created).await, 4);
    assert_eq!(t.lake.table_names(), vec!["made"]);
    assert_eq!(count(&t.reopened().open("made").await.unwrap()).await, 4);
}

/// `Lake::create` once appended to an existing table (delta-rs' write refuses only a loaded
/// table), replacing its schema.
#[tokio::test]
async fn create_of_an_existing_table_fails_and_leaves_it_as_it_was() {
    let t = TestLake::new();
    t.lake
        .create("made", &schema(), &[], vec![keyed(0..4, "a")])
        .await
        .unwrap();

    let again = t
        .lake
        .create("made", &schema(), &[], vec![keyed(10..12, "b")])
        .await;
    let Err(e) = again else {
        panic!("a table created over an existing one")
    };
    assert_eq!(e.class(), Class::Exists, "{e}");
    let made = t.reopened().open("made").await.unwrap();
    assert_eq!(made.version(), Some(0));
    assert_eq!(count(&made).await, 4, "the table is as it was");
}

#[tokio::test]
async fn a_name_that_is_not_one_folder_names_no_table() {
    let t = TestLake::new();
    for name in ["", ".hidden", "a/b", "../up", "tab le"] {
        let e = t.lake.open_or_create(name, &schema(), &[], &[]).await.err();
        assert!(matches!(e, Some(Error::InvalidName(_))), "{name:?}: {e:?}");
        let e = t.lake.open(name).await.err();
        assert!(matches!(e, Some(Error::InvalidName(_))), "{name:?}: {e:?}");
    }
    assert!(t.lake.table_names().is_empty());
}

/// `batch` with field `v` marked as JSON, as a JSON column's rows are.
fn marked(batch: RecordBatch) -> RecordBatch {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "v" => f.as_ref().clone().with_metadata(
                [("ARROW:extension:name".to_string(), "arrow.json".to_string())].into(),
            ),
            _ => f.as_ref().clone(),
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec()).unwrap()
}

#[tokio::test]
async fn rows_are_written_with_the_metadata_of_the_tables_fields() {
    // A table made before its column was marked (a JSON stream's data, before Sluice marked it
    // as JSON) takes marked rows, and keeps its fields as they were.
    let t = TestLake::new();
    let mut plain = table(&t.lake, "plain").await;
    plain
        .append(vec![marked(keyed(0..2, "1"))], positions(&[("shard-0", 2)]))
        .await
        .unwrap();
    plain
        .upsert(
            vec![marked(changes(&[
                (Some(1), "2", false),
                (Some(2), "2", false),
            ]))],
            &Upsert::new(&["k".into()], "deleted"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(read(&plain).await.len(), 3);
    assert!(plain.arrow_schema().unwrap().field(1).metadata().is_empty());

    // A marked table takes unmarked rows, and stays marked.
    let mut json = t
        .lake
        .open_or_create("json", marked(keyed(0..0, "")).schema_ref(), &[], &[])
        .await
        .unwrap();
    json.append(vec![keyed(0..2, "3")], vec![]).await.unwrap();
    assert_eq!(read(&json).await.len(), 2);
    let reopened = t.reopened().open("json").await.unwrap();
    assert_eq!(
        reopened
            .arrow_schema()
            .unwrap()
            .field(1)
            .extension_type_name(),
        Some("arrow.json")
    );
}
