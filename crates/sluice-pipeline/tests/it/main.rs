//! The raw-table pipeline against a real log and a real lake (Delta tables on disk), read back
//! with DataFusion.

// Helpers unwrap as tests do: a test fails on a bad unwrap, with the value in its message.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use sluice_lake::{Lake, LakeTable};
use sluice_log::{Log, LogConfig, Retention, Stream, StreamOptions};
use sluice_pipeline::raw::drop_tables;
use sluice_pipeline::source::StreamSource;
use sluice_pipeline::{Pipeline, RawConfig, RawPipeline, errors_table};

mod changes;
#[cfg(feature = "kafka")]
mod kafka;
mod plans;
mod runtime;
mod views;

const TICKS: &str = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL) WITH (shards = 2";

fn stream(log: &Log) -> Arc<Stream> {
    stream_as(log, &format!("{TICKS})"))
}

/// Stream `ticks` (two shards) as `create` declares it.
fn stream_as(log: &Log, create: &str) -> Arc<Stream> {
    let sluice_sql::Statement::CreateStream(c) = sluice_sql::parse(create).unwrap().remove(0)
    else {
        panic!()
    };
    log.create_stream(
        "ticks",
        StreamOptions {
            shards: 2,
            retention: Retention::default(),
            definition: c.definition.to_log(),
            elsewhere: None,
        },
    )
    .unwrap()
}

/// Appends `n` records to each shard, every `bad_every`-th one malformed; returns (good, bad).
async fn append(stream: &Stream, from: usize, n: usize, bad_every: usize) -> (usize, usize) {
    let mut batches = stream.batches();
    let (mut good, mut bad) = (0, 0);
    for shard in 0..2 {
        for i in from..from + n {
            let record = if i % bad_every == 0 {
                bad += 1;
                format!(r#"{{"ticker":"T{i}","ts":"not a time"}}"#)
            } else {
                good += 1;
                format!(r#"{{"ticker":"T{i}","price":{i}.5,"ts":"2026-01-05T14:30:00Z"}}"#)
            };
            batches.push(shard, b"", record.as_bytes()).unwrap();
        }
    }
    for part in stream.append(batches).await.unwrap() {
        part.result.unwrap();
    }
    (good, bad)
}

async fn count(table: &LakeTable, sql: &str) -> i64 {
    let mut table = table.clone();
    table.refresh().await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.delta().table_provider().await.unwrap())
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .first()
        .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0))
}

/// The raw pipeline of stream `ticks`.
async fn raw(
    log: &Arc<Log>,
    lake: &Lake,
    config: RawConfig,
) -> sluice_pipeline::Result<RawPipeline> {
    RawPipeline::open(StreamSource::open(log, "ticks")?, lake, config).await
}

fn config() -> RawConfig {
    RawConfig {
        max_records_per_round: 140,
        ..RawConfig::default()
    }
}

#[tokio::test]
async fn partitioned_streams_land_in_hive_folders_of_their_derived_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream_as(
        &log,
        &format!("{TICKS}, partition_by = 'date(ts), hour(ts) AS h, ticker')"),
    );
    let mut batches = s.batches();
    for (i, ts) in [
        "2026-01-05T23:59:59Z",
        "2026-01-06T00:00:00Z",
        "2026-01-06T00:30:00+01:00",
    ]
    .iter()
    .enumerate()
    {
        let record = format!(r#"{{"ticker":"T{}","price":1.5,"ts":"{ts}"}}"#, i % 2);
        batches.push(0, b"", record.as_bytes()).unwrap();
    }
    for part in s.append(batches).await.unwrap() {
        part.result.unwrap();
    }
    let mut pipeline = raw(&log, &lake, config()).await.unwrap();
    assert_eq!(pipeline.round().await.unwrap().rows, 3);

    let root = dir.path().join("lake/ticks");
    for folder in [
        "ts_date=2026-01-05/h=23/ticker=T0",
        "ts_date=2026-01-06/h=0/ticker=T1",
    ] {
        assert!(root.join(folder).is_dir(), "{folder} missing");
    }
    let rows = lake.open("ticks").await.unwrap();
    assert_eq!(
        count(
            &rows,
            "SELECT count(*) FROM t WHERE ts_date = DATE '2026-01-05' AND h = 23 \
             AND CAST(ts AS DATE) = ts_date"
        )
        .await,
        2,
        "the partition values are the UTC date and hour of ts"
    );
}

#[tokio::test]
async fn records_land_in_the_raw_and_errors_tables_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream(&log);
    let (good, bad) = append(&s, 0, 100, 10).await;

    let mut pipeline = raw(&log, &lake, config()).await.unwrap();
    // 200 records, at most 140 a round (70 a shard, both busy): three rounds take the backlog.
    let mut taken = 0;
    while taken < 200 {
        let round = pipeline.round().await.unwrap();
        assert!(round.records > 0, "a round with a backlog takes records");
        taken += round.records;
        assert_eq!(
            round.backlog,
            taken < 200,
            "a round says whether the log holds more"
        );
    }
    assert_eq!(taken, 200);
    let version = pipeline.rows_table().version();
    assert_eq!(pipeline.round().await.unwrap().records, 0);
    assert_eq!(
        pipeline.rows_table().version(),
        version,
        "nothing new, nothing committed"
    );

    let rows = lake.open("ticks").await.unwrap();
    let errors = lake.open(&errors_table("ticks")).await.unwrap();
    assert_eq!(count(&rows, "SELECT count(*) FROM t").await, good as i64);
    assert_eq!(count(&errors, "SELECT count(*) FROM t").await, bad as i64);
    assert_eq!(
        count(
            &errors,
            "SELECT count(*) FROM t WHERE reason LIKE 'field ''ts''%'"
        )
        .await,
        bad as i64
    );
    assert_eq!(
        count(&rows, "SELECT count(DISTINCT (_shard, _seq)) FROM t").await,
        good as i64
    );

    // A new pipeline (a restart) resumes where the tables say: nothing is taken twice.
    let (more_good, more_bad) = append(&s, 100, 20, 10).await;
    let mut restarted = raw(&log, &lake, config()).await.unwrap();
    assert_eq!(restarted.round().await.unwrap().records, 40);
    assert_eq!(
        count(&rows, "SELECT count(*) FROM t").await,
        (good + more_good) as i64
    );
    assert_eq!(
        count(&errors, "SELECT count(*) FROM t").await,
        (bad + more_bad) as i64
    );
}

#[tokio::test]
async fn a_crash_between_the_two_commits_repeats_nothing_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream(&log);
    let (good, bad) = append(&s, 0, 30, 3).await;
    let mut pipeline = raw(&log, &lake, RawConfig::default()).await.unwrap();
    pipeline.round().await.unwrap();
    drop(pipeline);

    // As if the process died after the raw table's commit and before the errors table's: the
    // errors table's last commit never happened.
    let errors_log = dir
        .path()
        .join("lake")
        .join(errors_table("ticks"))
        .join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&errors_log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    std::fs::remove_file(commits.last().unwrap()).unwrap();
    let errors = lake.open(&errors_table("ticks")).await.unwrap();
    assert_eq!(count(&errors, "SELECT count(*) FROM t").await, 0);

    let mut restarted = raw(&log, &lake, RawConfig::default()).await.unwrap();
    restarted.round().await.unwrap();
    let rows = lake.open("ticks").await.unwrap();
    assert_eq!(
        count(&rows, "SELECT count(*) FROM t").await,
        good as i64,
        "no raw row twice"
    );
    assert_eq!(
        count(&errors, "SELECT count(*) FROM t").await,
        bad as i64,
        "no error row lost"
    );
}

#[tokio::test]
async fn a_pipeline_opened_on_records_waiting_says_how_long_they_went_without_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream(&log);
    append(&s, 0, 10, 1000).await;
    // The first pipeline's partitions had no commit before: no failover to speak of.
    let mut first = raw(&log, &lake, config()).await.unwrap();
    let round = first.round().await.unwrap();
    assert!(
        round.committed && round.resumed_since_ms.is_none(),
        "{round:?}"
    );
    let committed_ms = chrono::Utc::now().timestamp_millis();
    drop(first);

    // Opened again (a restart, a partition moved here) with records waiting: its first commit
    // of each says when that partition was last committed, its next commits nothing.
    append(&s, 10, 10, 1000).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut second = raw(&log, &lake, config()).await.unwrap();
    let round = second.round().await.unwrap();
    let since = round.resumed_since_ms.expect("the failover of a partition");
    assert!(
        since <= committed_ms && committed_ms - since < 5_000,
        "{since} {committed_ms}"
    );
    append(&s, 20, 10, 1000).await;
    assert_eq!(second.round().await.unwrap().resumed_since_ms, None);

    // Opened again with nothing waiting: records that come seconds later (past the time a
    // moved partition's backlog takes to be read) came after an idle spell, no failover.
    drop(second);
    let mut third = raw(&log, &lake, config()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    append(&s, 30, 10, 1000).await;
    let round = third.round().await.unwrap();
    assert!(
        round.committed && round.resumed_since_ms.is_none(),
        "{round:?}"
    );
}

/// A column added to a stream on another worker of a cluster reaches the lake's tables before
/// this worker has followed it: its raw pipeline, reading with the definition before, commits
/// nothing (its rows would drop the column's values) and does not open until it has.
#[tokio::test]
async fn a_raw_pipeline_behind_its_table_s_columns_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream(&log);
    append(&s, 0, 10, 1000).await;
    let before = StreamSource::open(&log, "ticks").unwrap();
    let mut behind = RawPipeline::open(before.clone(), &lake, config())
        .await
        .unwrap();
    assert!(behind.round().await.unwrap().committed);

    // Another worker's pipeline takes the column to the tables.
    let with_note = TICKS.replace("ts TIMESTAMP", "note TEXT, ts TIMESTAMP") + ")";
    let sluice_sql::Statement::CreateStream(c) = sluice_sql::parse(&with_note).unwrap().remove(0)
    else {
        panic!()
    };
    log.redefine_stream("ticks", s.id(), c.definition.to_log())
        .unwrap();
    raw(&log, &lake, config())
        .await
        .unwrap()
        .round()
        .await
        .unwrap();

    append(&s, 10, 10, 1000).await;
    assert!(
        behind.round().await.is_err(),
        "a round of the definition before"
    );
    let refused = RawPipeline::open(before, &lake, config())
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("'note'"), "{refused}");
    // The one that follows takes them (opened again, as the runtime does after a round that
    // met another's commit).
    let mut followed = raw(&log, &lake, config()).await.unwrap();
    assert_eq!(followed.round().await.unwrap().rows, 20);
    let rows = lake.open("ticks").await.unwrap();
    assert_eq!(count(&rows, "SELECT count(*) FROM t").await, 38);
}

#[tokio::test]
async fn compaction_merges_the_small_files_and_changes_no_row_or_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream(&log);
    let mut pipeline = raw(&log, &lake, config()).await.unwrap();
    let (mut good, mut bad) = (0, 0);
    for round in 0..5 {
        let (g, b) = append(&s, round * 10, 10, 4).await;
        (good, bad) = (good + g, bad + b);
        assert!(pipeline.round().await.unwrap().committed);
    }
    let files = pipeline.rows_table().stats().unwrap().files;
    assert!(files >= 5, "one file a commit at least: {files}");
    pipeline.compact().await.unwrap();
    assert_eq!(pipeline.rows_table().stats().unwrap().files, 1);

    let rows = lake.open("ticks").await.unwrap();
    let errors = lake.open(&errors_table("ticks")).await.unwrap();
    assert_eq!(count(&rows, "SELECT count(*) FROM t").await, good as i64);
    assert_eq!(count(&errors, "SELECT count(*) FROM t").await, bad as i64);
    // The positions survive the compaction commit: a restart takes nothing twice.
    let mut restarted = raw(&log, &lake, config()).await.unwrap();
    assert_eq!(restarted.round().await.unwrap().records, 0);
    assert_eq!(count(&rows, "SELECT count(*) FROM t").await, good as i64);
}

#[tokio::test]
async fn a_stream_takes_only_its_own_tables() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();

    // A table no stream made (CREATE TABLE … AS) is the user's: refused, and left alone.
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new(
            "a",
            datafusion::arrow::datatypes::DataType::Int64,
            true,
        ),
    ]));
    lake.open_or_create("ticks", &schema, &[], &[])
        .await
        .unwrap();
    let s = stream(&log);
    let refused = raw(&log, &lake, config()).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("not made by this stream")),
        "{:?}",
        refused.err()
    );
    drop_tables(&lake, "ticks", s.id()).await.unwrap();
    assert!(lake.open("ticks").await.is_ok(), "the user's table stays");
    lake.drop_table("ticks").await.unwrap();

    // The tables an earlier incarnation left (a crash before they were dropped) are made anew:
    // the new stream's sequence numbers start at 0 again, and none is skipped.
    let mut pipeline = raw(&log, &lake, config()).await.unwrap();
    append(&s, 0, 50, 1000).await;
    pipeline.round().await.unwrap();
    drop(pipeline);
    log.drop_stream("ticks").unwrap();
    let again = stream(&log);
    append(&again, 0, 10, 1000).await;
    let mut pipeline = raw(&log, &lake, config()).await.unwrap();
    assert_eq!(pipeline.round().await.unwrap().records, 20);
    let rows = lake.open("ticks").await.unwrap();
    assert_eq!(
        count(&rows, "SELECT count(*) FROM t").await,
        18,
        "20 records, 2 bad"
    );

    // Dropping the old incarnation's tables now drops nothing; the new one's, both.
    drop_tables(&lake, "ticks", s.id()).await.unwrap();
    assert!(lake.open("ticks").await.is_ok());
    drop_tables(&lake, "ticks", again.id()).await.unwrap();
    assert!(lake.table_names().is_empty(), "{:?}", lake.table_names());
}
