//! The writer's failure paths, with faults injected at its file operations (fail points): a full
//! disk, a failed fsync, an undo that fails too, a segment roll that fails, a slow disk.
//! Each test runs in its own process (nextest), so fail points do not leak between tests.

use std::time::Duration;

use sluice_log::{Error, Log, LogConfig, Stream};

use crate::{
    ManualClock, data_after_reopen, multi_thread_runtime, open, options, read_all, runtime,
    small_config,
};

fn stream(log: &Log) -> std::sync::Arc<Stream> {
    log.create_stream("s", options(1)).unwrap()
}

fn append(stream: &Stream, rt: &tokio::runtime::Runtime, data: &[u8]) -> Result<u64, Error> {
    let mut b = stream.batches();
    b.push(0, b"k", data).unwrap();
    let outcome = rt.block_on(stream.append(b))?;
    outcome
        .into_iter()
        .next()
        .unwrap()
        .result
        .map(|a| a.first_seq())
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("streams/s/shard-0000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn a_full_disk_fails_the_write_and_the_next_one_succeeds() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = open(dir.path(), LogConfig::default());
    let s = stream(&log);
    assert_eq!(append(&s, &rt, b"one").ok(), Some(0));
    fail::cfg("log::write", "1*return").unwrap();
    let e = append(&s, &rt, b"lost").unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.is_retryable(), "{e}");
    assert_eq!(
        append(&s, &rt, b"two").ok(),
        Some(1),
        "the failed write took no sequence number"
    );
    drop((s, log));
    assert_eq!(
        data_after_reopen(dir.path(), LogConfig::default()),
        [&b"one"[..], b"two"]
    );
    scenario.teardown();
}

#[test]
fn a_failed_fsync_is_undone_before_anything_else_is_written() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = open(dir.path(), LogConfig::default());
    let s = stream(&log);
    append(&s, &rt, b"one").unwrap();
    let before = segment_bytes(dir.path());
    fail::cfg("log::sync", "1*return").unwrap();
    // The bytes reached the file before the fsync failed: the undo must take them out again.
    assert!(matches!(
        append(&s, &rt, b"written, not synced"),
        Err(Error::Io { .. })
    ));
    assert_eq!(segment_bytes(dir.path()), before);
    assert_eq!(append(&s, &rt, b"two").ok(), Some(1));
    drop((s, log));
    assert_eq!(
        data_after_reopen(dir.path(), LogConfig::default()),
        [&b"one"[..], b"two"]
    );
    scenario.teardown();
}

#[test]
fn an_undo_that_fails_makes_the_outcome_unknown_and_stops_the_shard_until_recovery() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = open(dir.path(), LogConfig::default());
    let s = stream(&log);
    append(&s, &rt, b"one").unwrap();
    fail::cfg("log::sync", "1*return").unwrap();
    fail::cfg("log::undo", "1*return").unwrap();
    let e = append(&s, &rt, b"maybe").unwrap_err();
    assert!(
        matches!(e, Error::Indeterminate(_)) && !e.is_retryable(),
        "{e}"
    );
    let e = append(&s, &rt, b"refused").unwrap_err();
    assert!(
        matches!(e, Error::Unavailable(_)),
        "the shard refuses writes it cannot make safely: {e}"
    );
    drop((s, log));
    // Recovery decides: the unknown record is there (its bytes were whole), and writing goes on.
    let log = open(dir.path(), LogConfig::default());
    let s = log.stream("s").unwrap();
    assert_eq!(append(&s, &rt, b"two").ok(), Some(2));
    let data: Vec<_> = read_all(s.shard(0).unwrap())
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_eq!(data, [&b"one"[..], b"maybe", b"two"]);
    scenario.teardown();
}

#[test]
fn a_segment_roll_that_fails_leaves_nothing_behind_and_the_next_roll_works() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let clock = ManualClock::at(1);
    let log = open(dir.path(), small_config(&clock));
    let s = stream(&log);
    append(&s, &rt, &[1; 700]).unwrap(); // over the 600-byte segment size: the next append rolls
    fail::cfg("log::sync-dir", "1*return").unwrap();
    assert!(matches!(append(&s, &rt, &[2; 10]), Err(Error::Io { .. })));
    assert_eq!(s.shard(0).unwrap().size().1, 1, "no half-created segment");
    assert_eq!(append(&s, &rt, &[3; 10]).ok(), Some(1));
    assert_eq!(s.shard(0).unwrap().size().1, 2);
    drop((s, log));
    let log = open(dir.path(), small_config(&clock));
    assert_eq!(
        read_all(log.stream("s").unwrap().shard(0).unwrap()).len(),
        2
    );
    scenario.teardown();
}

#[test]
fn a_slow_disk_holds_producers_back_with_bounded_memory() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let rt = multi_thread_runtime();
    let config = LogConfig {
        inflight_bytes: 1 << 20,
        backpressure_wait: Duration::from_millis(50),
        ..LogConfig::default()
    };
    let log = open(dir.path(), config);
    let s = stream(&log);
    fail::cfg("log::sync", "sleep(400)").unwrap();
    let (first, second) = rt.block_on(async {
        let slow = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut b = s.batches();
                b.push(0, b"k", &vec![0; 800 << 10]).unwrap();
                s.append(b).await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut b = s.batches();
        b.push(0, b"k", &vec![0; 800 << 10]).unwrap();
        let second = s.append(b).await;
        (slow.await.unwrap(), second)
    });
    assert!(first.unwrap()[0].result.is_ok(), "the slow write completes");
    assert!(
        matches!(second, Err(Error::Backpressure)),
        "the second waits, then is told to slow down"
    );
    scenario.teardown();
}
