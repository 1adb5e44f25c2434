//! A change stream's pipeline: the mirror holds the newest change of each key, the history
//! every change once, whatever the rounds, repeats and failures between the commits.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use sluice_pipeline::changes_table;

use super::*;

const CUSTOMERS: &str = "CREATE STREAM ticks (k TEXT NOT NULL, v BIGINT, big TEXT) \
     WITH (format = 'debezium', primary_key = 'k', shards = 2)";

/// A Debezium event.
fn event(op: &str, k: &str, row: Option<(i64, Option<&str>)>, lsn: u64) -> String {
    let big = |b: Option<&str>| b.unwrap_or("__debezium_unavailable_value").to_string();
    let after = row.map(|(v, b)| serde_json::json!({"k": k, "v": v, "big": big(b)}));
    let before = serde_json::json!({ "k": k });
    let (before, after) = match op {
        "d" => (Some(before), None),
        _ => (None, after),
    };
    serde_json::json!({"op": op, "before": before, "after": after, "source": {"lsn": lsn}})
        .to_string()
}

/// A table's rows: per key, `v` and `big`.
type Table = BTreeMap<String, (i64, String)>;

/// A seeded random history of changes of 25 keys: the events, each with its key's shard, and
/// the table they leave.
fn workload(n: usize) -> (Vec<(u32, String)>, Table) {
    let mut table = Table::new();
    let mut events = Vec::new();
    let mut seed = 7u64;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    for i in 0..n {
        let key = format!("k{}", next(25));
        let shard = key.bytes().map(u32::from).sum::<u32>() % 2;
        let lsn = 1000 + i as u64;
        let record = match table.get(&key).cloned() {
            None => {
                let big = format!("big{i}");
                table.insert(key.clone(), (i as i64, big.clone()));
                event("c", &key, Some((i as i64, Some(&big))), lsn)
            }
            Some(_) if next(4) == 0 => {
                table.remove(&key);
                event("d", &key, None, lsn)
            }
            // An update that leaves the large value out: it is unchanged.
            Some((_, big)) if next(2) == 0 => {
                table.insert(key.clone(), (i as i64, big));
                event("u", &key, Some((i as i64, None)), lsn)
            }
            Some(_) => {
                let big = format!("big{i}");
                table.insert(key.clone(), (i as i64, big.clone()));
                event("u", &key, Some((i as i64, Some(&big))), lsn)
            }
        };
        events.push((shard, record));
    }
    (events, table)
}

async fn append_events(stream: &Stream, events: &[(u32, String)]) {
    let mut batches = stream.batches();
    for (shard, record) in events {
        batches.push(*shard, b"", record.as_bytes()).unwrap();
    }
    for part in stream.append(batches).await.unwrap() {
        part.result.unwrap();
    }
}

/// The mirror's rows, by key.
async fn mirror(lake: &Lake) -> Table {
    let table = lake.open("ticks").await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.delta().table_provider().await.unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = ctx
        .sql("SELECT k, v, big FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = BTreeMap::new();
    for b in &batches {
        let text = |i: usize| cast(b.column(i), &DataType::Utf8).unwrap();
        let (k, v, big) = (text(0), text(1), text(2));
        let (k, v, big) = (
            k.as_string::<i32>(),
            v.as_string::<i32>(),
            big.as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            assert!(big.is_valid(i), "row {} lost its large value", k.value(i));
            let previous = rows.insert(
                k.value(i).to_string(),
                (v.value(i).parse().unwrap(), big.value(i).to_string()),
            );
            assert!(previous.is_none(), "key {} twice", k.value(i));
        }
    }
    rows
}

/// Runs rounds until the pipeline has taken everything, reopening it after a failed one (as
/// the runtime does).
async fn catch_up(log: &Arc<Log>, lake: &Lake, mut pipeline: RawPipeline) {
    for _ in 0..200 {
        match pipeline.round().await {
            Ok(round) if !round.committed && round.records == 0 => return,
            Ok(_) => {}
            Err(_) => pipeline = raw(log, lake, config()).await.unwrap(),
        }
    }
    panic!("200 rounds did not take everything");
}

#[tokio::test]
async fn the_mirror_is_the_newest_change_of_each_key_and_the_history_every_change_once() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream_as(&log, CUSTOMERS);
    let (events, expected) = workload(600);
    append_events(&s, &events[..300]).await;
    // The mirror's MERGE fails once, and later the history's commit: each table takes what it
    // missed from its own positions when the pipeline is opened again.
    fail::cfg("mirror::merge", "1*off->1*return").unwrap();
    catch_up(&log, &lake, raw(&log, &lake, config()).await.unwrap()).await;
    fail::cfg("mirror::merge", "off").unwrap();
    fail::cfg("raw::rows", "1*return").unwrap();
    append_events(&s, &events[300..]).await;
    // Repeats of earlier events, late: old versions, some of keys deleted since; every other
    // one in the other shard (a request sent again goes where the next one would).
    let repeats: Vec<(u32, String)> = (events.iter().step_by(7).enumerate())
        .map(|(i, (shard, record))| ((shard + i as u32) % 2, record.clone()))
        .collect();
    append_events(&s, &repeats).await;
    catch_up(&log, &lake, raw(&log, &lake, config()).await.unwrap()).await;

    assert_eq!(mirror(&lake).await, expected);
    let history = lake.open(&changes_table("ticks")).await.unwrap();
    assert_eq!(count(&history, "SELECT count(*) FROM t").await, 600);
    assert_eq!(
        count(&history, "SELECT count(DISTINCT _version) FROM t").await,
        600
    );
    let errors = lake.open(&errors_table("ticks")).await.unwrap();
    assert_eq!(count(&errors, "SELECT count(*) FROM t").await, 0);

    // A truncate empties the mirror; a late change older than it changes nothing, a newer one
    // is the mirror's one row.
    let truncate = r#"{"op":"t","source":{"lsn":5000}}"#.to_string();
    let after = [
        (0, truncate),
        (1, event("c", "late", Some((1, Some("x"))), 4000)),
        (1, event("c", "new", Some((2, Some("y"))), 6000)),
    ];
    append_events(&s, &after).await;
    catch_up(&log, &lake, raw(&log, &lake, config()).await.unwrap()).await;
    let only_new = Table::from([("new".to_string(), (2, "y".to_string()))]);
    assert_eq!(mirror(&lake).await, only_new);
    assert_eq!(count(&history, "SELECT count(*) FROM t").await, 603);

    // Opened again, it has nothing to do, and drops all three tables with the stream.
    let mut pipeline = raw(&log, &lake, config()).await.unwrap();
    assert!(!pipeline.round().await.unwrap().committed);
    drop_tables(&lake, "ticks", s.id()).await.unwrap();
    assert!(lake.table_names().is_empty(), "{:?}", lake.table_names());
    scenario.teardown();
}

#[tokio::test]
async fn a_round_of_many_keys_with_unchanged_values_takes_them_from_the_mirror() {
    // A round's keys filter the scan of the mirror's versions; delta-rs turns the filter into
    // a chain of ORs, one a key, which overflowed the stack at tens of thousands of keys.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let s = stream_as(&log, CUSTOMERS);
    let keys = 20_000;
    let shard = |k: &str| k.bytes().map(u32::from).sum::<u32>() % 2;
    let created: Vec<(u32, String)> = (0..keys)
        .map(|i| {
            let k = format!("k{i}");
            (
                shard(&k),
                event("c", &k, Some((0, Some(&format!("big{i}")))), 10 + i),
            )
        })
        .collect();
    let updated: Vec<(u32, String)> = (0..keys)
        .map(|i| {
            let k = format!("k{i}");
            (shard(&k), event("u", &k, Some((1, None)), 100_000 + i))
        })
        .collect();
    append_events(&s, &created).await;
    append_events(&s, &updated).await;
    let config = RawConfig {
        max_records_per_round: 2 * keys as usize,
        ..RawConfig::default()
    };
    catch_up(&log, &lake, raw(&log, &lake, config).await.unwrap()).await;
    let expected: Table = (0..keys)
        .map(|i| (format!("k{i}"), (1, format!("big{i}"))))
        .collect();
    assert_eq!(mirror(&lake).await, expected);
}
