use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};

use super::*;

async fn engine(dir: &std::path::Path) -> QueryEngine {
    let lake = Lake::local(dir.join("lake")).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ticker", DataType::Utf8, false),
        Field::new("price", DataType::Float64, true),
    ]));
    let mut table = lake
        .open_or_create("ticks", &schema, &[], &[])
        .await
        .unwrap();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["A", "B", "A"])),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(2.5)])),
        ],
    )
    .unwrap();
    table
        .append(vec![batch], vec![("shard-0".into(), 3)])
        .await
        .unwrap();
    let log = Log::open(dir.join("log"), sluice_log::LogConfig::default()).unwrap();
    QueryEngine::new(lake, Arc::new(log))
}

/// Parses as the server does (time travel rewritten), then runs.
async fn run(engine: &QueryEngine, sql: &str) -> Result<QueryOutput> {
    let sluice_sql::Statement::Sql(statement) = sluice_sql::parse(sql).unwrap().remove(0) else {
        panic!("{sql} is a stream statement")
    };
    engine.execute(*statement).await
}

#[tokio::test]
async fn queries_read_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let out = run(&engine, "SELECT ticker, count(*) AS n, sum(price) AS total FROM ticks GROUP BY ticker ORDER BY ticker")
        .await
        .unwrap();
    let names: Vec<_> = out
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["ticker", "n", "total"]);
    let b = &out.batches[0];
    assert_eq!(
        b.column(1).as_primitive::<Int64Type>().values().to_vec(),
        [2, 1]
    );
    assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 4.0);
    let tables = run(&engine, "SHOW TABLES").await.unwrap();
    let listed: Vec<String> = tables
        .batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("table_name")
                .unwrap()
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(listed.contains(&"ticks".to_string()), "{listed:?}");
}

#[tokio::test]
async fn nothing_but_queries_runs_and_no_file_outside_the_lake_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let outside = dir.path().join("outside.csv");
    for sql in [
        "SET datafusion.execution.batch_size = 1",
        "DELETE FROM ticks WHERE price > 1",
        "UPDATE ticks SET price = 0",
        "CREATE VIEW v AS SELECT 1",
        "CREATE TABLE t2 (a INT)",
        "CREATE OR REPLACE TABLE t2 AS SELECT 1",
    ] {
        match run(&engine, sql).await {
            Err(QueryError::Refused(m)) => {
                assert!(
                    m.contains("allowed here") || m.contains("tables are created as"),
                    "{sql}: {m}"
                )
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    let external = format!(
        "CREATE EXTERNAL TABLE x (a INT) STORED AS TEXTFILE LOCATION '{}'",
        outside.display()
    );
    let copy = format!("COPY ticks TO '{}'", outside.display());
    let url = format!("SELECT * FROM '{}'", outside.display());
    for sql in [
        external.as_str(),
        copy.as_str(),
        url.as_str(),
        "SELECT * FROM missing",
    ] {
        assert!(run(&engine, sql).await.is_err(), "{sql} ran");
    }
    assert!(!outside.exists(), "a statement wrote outside the lake");
    let Err(e @ QueryError::Engine { .. }) = run(&engine, "SELECT * FROM missing").await else {
        panic!()
    };
    assert_eq!(
        sluice_error::Classify::class(&e),
        sluice_error::Class::UndefinedTable
    );
    assert!(e.to_string().contains("missing"), "{e}");
    assert_eq!(
        run(&engine, "SELECT count(*) FROM ticks")
            .await
            .unwrap()
            .batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        3,
        "nothing changed"
    );
}

async fn scalar(engine: &QueryEngine, sql: &str) -> i64 {
    run(engine, sql).await.unwrap().batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

/// A stream's tables show every record the log acknowledged, whether or not the pipeline has
/// committed it yet, and never one twice.
#[tokio::test]
async fn stream_tables_include_the_log_tail() {
    use sluice_pipeline::source::StreamSource;
    use sluice_pipeline::{Pipeline, RawConfig, RawPipeline};

    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let log =
        Arc::new(Log::open(dir.path().join("log"), sluice_log::LogConfig::default()).unwrap());
    let sluice_sql::Statement::CreateStream(create) = sluice_sql::parse(
        "CREATE STREAM clicks (user_id TEXT NOT NULL, n BIGINT) WITH (shards = 2)",
    )
    .unwrap()
    .remove(0) else {
        panic!()
    };
    let stream = log
        .create_stream(
            "clicks",
            sluice_log::StreamOptions {
                shards: 2,
                retention: sluice_log::Retention::default(),
                definition: create.definition.to_log(),
                elsewhere: None,
            },
        )
        .unwrap();
    let source = StreamSource::open(&log, "clicks").unwrap();
    let mut pipeline = RawPipeline::open(source, &lake, RawConfig::default())
        .await
        .unwrap();
    let engine = QueryEngine::new(lake, log);
    let append = |from: i64, to: i64| {
        let stream = stream.clone();
        async move {
            let mut batches = stream.batches();
            for i in from..to {
                let record = if i % 10 == 0 {
                    "not json".to_string()
                } else {
                    serde_json::json!({"user_id": format!("u{i}"), "n": i}).to_string()
                };
                batches
                    .push((i % 2) as u32, b"", record.as_bytes())
                    .unwrap();
            }
            for part in stream.append(batches).await.unwrap() {
                part.result.unwrap();
            }
        }
    };
    let counts = |engine: QueryEngine| async move {
        (
            scalar(&engine, "SELECT count(*) FROM clicks").await,
            scalar(&engine, "SELECT count(*) FROM clicks_errors").await,
            scalar(
                &engine,
                "SELECT count(DISTINCT user_id) FROM clicks WHERE n >= 5",
            )
            .await,
        )
    };

    append(0, 100).await;
    assert_eq!(
        counts(engine.clone()).await,
        (90, 10, 86),
        "nothing committed yet"
    );
    pipeline.round().await.unwrap();
    assert_eq!(counts(engine.clone()).await, (90, 10, 86), "all committed");
    append(100, 150).await;
    assert_eq!(
        counts(engine.clone()).await,
        (135, 15, 131),
        "committed and tail"
    );
    for sql in [
        "INSERT INTO clicks_errors SELECT * FROM clicks_errors",
        "DROP TABLE clicks",
        "CREATE TABLE clicks AS SELECT 1",
    ] {
        let e = run(&engine, sql).await.expect_err(sql);
        assert!(
            e.to_string().contains("written by stream 'clicks'"),
            "{sql}: {e}"
        );
    }
}

/// CREATE TABLE … AS, INSERT and DROP TABLE write Delta tables; each commit is a version that
/// time travel reads back.
#[tokio::test]
async fn batch_sql_writes_lake_tables_that_time_travel_reads() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let written = |out: QueryOutput| {
        out.batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
            .value(0)
    };
    let out = run(
        &engine,
        "CREATE TABLE per_ticker PARTITIONED BY (ticker) AS \
         SELECT ticker, count(*) AS n, sum(price) AS total FROM ticks GROUP BY ticker",
    )
    .await
    .unwrap();
    assert_eq!(written(out), 2);
    assert!(dir.path().join("lake/per_ticker/ticker=A").is_dir());
    let out = run(
        &engine,
        "INSERT INTO per_ticker (ticker, n) VALUES ('C', 7), ('D', 1)",
    )
    .await
    .unwrap();
    assert_eq!(written(out), 2);
    assert_eq!(scalar(&engine, "SELECT sum(n) FROM per_ticker").await, 11);
    assert_eq!(
        scalar(&engine, "SELECT sum(n) FROM per_ticker VERSION AS OF 0").await,
        3
    );
    assert_eq!(
        scalar(
            &engine,
            "SELECT count(*) FROM per_ticker VERSION AS OF 1 p JOIN per_ticker q USING (ticker)"
        )
        .await,
        4
    );
    let later = "SELECT sum(n) FROM per_ticker TIMESTAMP AS OF '2999-01-01'";
    assert_eq!(scalar(&engine, later).await, 11, "the latest version then");

    let refused = [
        ("CREATE TABLE per_ticker AS SELECT 1", "already exists"),
        (
            "CREATE TABLE x PARTITIONED BY (nope) AS SELECT 1 AS a",
            "names no column",
        ),
        (
            "INSERT INTO per_ticker VERSION AS OF 0 VALUES ('E', 1, 1.0)",
            "earlier version",
        ),
        ("INSERT INTO missing VALUES (1)", "missing"),
        ("INSERT INTO per_ticker VALUES ('E')", "got 1 values"),
        ("DROP TABLE per_ticker, missing", "'missing' does not exist"),
        (
            "SELECT * FROM per_ticker VERSION AS OF 9",
            "has no version 9",
        ),
        (
            "SELECT * FROM per_ticker TIMESTAMP AS OF '2000-01-01'",
            "has no version",
        ),
        ("CREATE TABLE other.x AS SELECT 1", "not in the lake"),
    ];
    for (sql, expected) in refused {
        let e = run(&engine, sql).await.expect_err(sql);
        assert!(e.to_string().contains(expected), "{sql}: {e}");
    }
    assert_eq!(
        scalar(&engine, "SELECT sum(n) FROM per_ticker").await,
        11,
        "nothing changed"
    );
    assert_eq!(
        written(
            run(&engine, "CREATE TABLE IF NOT EXISTS per_ticker AS SELECT 1")
                .await
                .unwrap()
        ),
        0
    );
    run(&engine, "DROP TABLE per_ticker").await.unwrap();
    run(&engine, "DROP TABLE IF EXISTS per_ticker")
        .await
        .unwrap();
    assert!(!dir.path().join("lake/per_ticker").exists());
}

#[test]
fn an_answers_batches_hold_only_the_text_they_show() {
    use datafusion::arrow::array::{Array, ArrayRef, StringViewArray};

    let text: StringViewArray = (0..10_000)
        .map(|i| Some(format!("a string longer than twelve bytes {i}")))
        .collect();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "s",
        DataType::Utf8View,
        false,
    )]));
    let whole = RecordBatch::try_new(schema, vec![Arc::new(text) as ArrayRef]).unwrap();
    // Ten rows of a slice point into the whole data buffer; compacted, they hold their own.
    let ten = whole.slice(10, 10);
    assert!(ten.get_array_memory_size() > 300_000);
    let small = compacted(ten.clone()).unwrap();
    assert!(
        small.get_array_memory_size() < 2_000,
        "{}",
        small.get_array_memory_size()
    );
    assert_eq!(
        small.column(0).as_string_view().value(0),
        "a string longer than twelve bytes 10"
    );
    assert_eq!(small.column(0).len(), 10);
    // A batch that holds what it shows is kept as it is.
    assert_eq!(
        compacted(whole.clone()).unwrap().get_array_memory_size(),
        whole.get_array_memory_size()
    );
}
