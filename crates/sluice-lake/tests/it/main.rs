//! The lake against real Delta tables in a temporary folder, read back with DataFusion and, for
//! what a commit records, from the table's log itself.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only; this whole crate is tests,
// helpers included, and a failed unwrap is the test failing with the value in its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use sluice_lake::{Lake, LakeTable, Upsert};

mod change_feed;
mod documents;
mod errors;
mod maintenance;
mod positions;
mod tables;
mod time_travel;
mod upsert;

/// A lake in a temporary folder (dropped with the folder).
struct TestLake {
    dir: tempfile::TempDir,
    lake: Lake,
}

impl TestLake {
    fn new() -> TestLake {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path().join("lake")).unwrap();
        TestLake { dir, lake }
    }

    /// The lake opened again from its folder: nothing cached, as after a restart.
    fn reopened(&self) -> Lake {
        Lake::local(self.root()).unwrap()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    /// Table `name`'s folder.
    fn folder(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// The actions commit `version` of table `name` wrote, from its log file.
    fn commit(&self, name: &str, version: u64) -> Vec<serde_json::Value> {
        let file = self
            .folder(name)
            .join("_delta_log")
            .join(format!("{version:020}.json"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The data files in table `name`'s folder, whether a version reads them or not.
    fn data_files(&self, name: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "parquet")
                    && !path.to_string_lossy().contains("_delta_log")
                {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.folder(name), &mut found);
        found.sort();
        found
    }
}

/// The `txn` actions (application id, version) among `actions`, sorted.
fn txns(actions: &[serde_json::Value]) -> Vec<(String, i64)> {
    let mut txns: Vec<(String, i64)> = actions
        .iter()
        .filter_map(|a| a.get("txn"))
        .map(|t| {
            (
                t["appId"].as_str().unwrap().to_string(),
                t["version"].as_i64().unwrap(),
            )
        })
        .collect();
    txns.sort();
    txns
}

/// How many data files `actions` add.
fn adds(actions: &[serde_json::Value]) -> usize {
    actions.iter().filter(|a| a.get("add").is_some()).count()
}

/// Positions as [`LakeTable::append`] takes them.
fn positions(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|&(app, v)| (app.to_string(), v)).collect()
}

/// The columns of the tests' tables: a key and a value, both nullable.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]))
}

/// One batch of `(k, v)` rows.
fn rows(rows: &[(Option<i64>, &str)]) -> RecordBatch {
    let keys: Int64Array = rows.iter().map(|r| r.0).collect();
    let values: StringArray = rows.iter().map(|r| Some(r.1)).collect();
    RecordBatch::try_new(schema(), vec![Arc::new(keys), Arc::new(values)]).unwrap()
}

/// Rows `k = keys`, each valued `value`.
fn keyed(keys: std::ops::Range<i64>, value: &str) -> RecordBatch {
    let keyed: Vec<(Option<i64>, &str)> = keys.map(|k| (Some(k), value)).collect();
    rows(&keyed)
}

/// The rows the handle's version of the table holds (not refreshed), as `(k, v)`, sorted.
async fn read(table: &LakeTable) -> Vec<(Option<i64>, Option<String>)> {
    let batches = query(table, "SELECT k, v FROM t ORDER BY k NULLS FIRST, v").await;
    let mut read = Vec::new();
    for batch in batches {
        let keys = batch.column(0).as_primitive::<Int64Type>().iter();
        read.extend(keys.zip(string_column(batch.column(1))));
    }
    read
}

/// `sql` over the handle's version of the table, registered as `t`.
async fn query(table: &LakeTable, sql: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    ctx.register_table("t", table.delta().table_provider().await.unwrap())
        .unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// The rows of the handle's version.
async fn count(table: &LakeTable) -> i64 {
    let batches = query(table, "SELECT count(*) FROM t").await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// A string column of any of Arrow's string types, as owned strings.
fn string_column(column: &ArrayRef) -> Vec<Option<String>> {
    let column = datafusion::arrow::compute::cast(column, &DataType::Utf8).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

/// Rows for [`LakeTable::upsert`]: `(k, v)` and the delete flag `deleted`.
fn changes(rows: &[(Option<i64>, &str, bool)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
        Field::new("deleted", DataType::Boolean, false),
    ]));
    let keys: Int64Array = rows.iter().map(|r| r.0).collect();
    let values: StringArray = rows.iter().map(|r| Some(r.1)).collect();
    let deleted: BooleanArray = rows.iter().map(|r| Some(r.2)).collect();
    RecordBatch::try_new(
        schema,
        vec![Arc::new(keys), Arc::new(values), Arc::new(deleted)],
    )
    .unwrap()
}

/// Table `name` with the tests' columns, new and empty (version 0).
async fn table(lake: &Lake, name: &str) -> LakeTable {
    let table = lake
        .open_or_create(name, &schema(), &[], &[])
        .await
        .unwrap();
    assert_eq!(table.version(), Some(0));
    table
}
