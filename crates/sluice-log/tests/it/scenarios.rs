//! Targeted scenarios of the log: concurrency, time seeks, index rebuilds, limits, lifecycle.

use std::sync::Arc;
use std::time::Duration;

use sluice_log::{Error, LogConfig, Retention, StreamOptions};

use crate::{ManualClock, multi_thread_runtime, open, options, read_all, runtime, small_config};

#[test]
fn concurrent_producers_get_contiguous_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = multi_thread_runtime();
    let log = Arc::new(open(
        dir.path(),
        LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        },
    ));
    let stream = log.create_stream("s", options(1)).unwrap();
    let acks: Vec<(u64, u32, usize)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for producer in 0..8usize {
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for n in 0..50usize {
                    let mut b = stream.batches();
                    for i in 0..(n % 5 + 1) {
                        b.push(0, b"", format!("{producer}-{n}-{i}").as_bytes())
                            .unwrap();
                    }
                    let out = stream.append(b).await.unwrap();
                    let a = out[0].result.as_ref().unwrap();
                    acks.push((a.first_seq(), a.count(), producer));
                }
                acks
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let mut ranges: Vec<_> = acks
        .iter()
        .map(|&(first, count, _)| (first, count))
        .collect();
    ranges.sort();
    let mut next = 0;
    for (first, count) in ranges {
        assert_eq!(first, next, "no gap, no overlap");
        next += u64::from(count);
    }
    let records = read_all(stream.shard(0).unwrap());
    assert_eq!(records.len() as u64, next);
    assert!(records.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    // Each producer's records are in the order it sent them.
    for producer in 0..8 {
        let mine: Vec<_> = records
            .iter()
            .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
            .filter(|d| d.starts_with(&format!("{producer}-")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_by_key(|d| {
            d.split('-')
                .skip(1)
                .map(|x| x.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(mine, sorted);
    }
}

#[test]
fn seek_by_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let clock = ManualClock::at(10_000);
    let log = open(dir.path(), small_config(&clock));
    let stream = log.create_stream("s", options(1)).unwrap();
    for _ in 0..40 {
        clock.advance(100);
        let mut b = stream.batches();
        b.push(0, b"k", &[7u8; 50]).unwrap();
        rt.block_on(stream.append(b)).unwrap();
    }
    let shard = stream.shard(0).unwrap();
    // Record i was appended at 10_100 + 100 i.
    assert_eq!(shard.seq_at_time(0).unwrap(), 0);
    assert_eq!(shard.seq_at_time(10_100).unwrap(), 0);
    assert_eq!(shard.seq_at_time(10_101).unwrap(), 1);
    assert_eq!(shard.seq_at_time(12_100).unwrap(), 20);
    assert_eq!(shard.seq_at_time(14_000).unwrap(), 39);
    assert_eq!(shard.seq_at_time(99_999).unwrap(), 40);
    let (_, segments) = shard.size();
    assert!(segments > 3, "the test spans several segments");
}

#[test]
fn lost_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let clock = ManualClock::at(1);
    let log = open(dir.path(), small_config(&clock));
    let stream = log.create_stream("s", options(1)).unwrap();
    for i in 0..30u32 {
        let mut b = stream.batches();
        b.push(0, b"k", &i.to_le_bytes().repeat(20)).unwrap();
        rt.block_on(stream.append(b)).unwrap();
    }
    let before = read_all(stream.shard(0).unwrap());
    drop(stream);
    drop(log);
    let shard_dir = dir.path().join("streams/s/shard-0000");
    let mut idx: Vec<_> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    idx.sort();
    assert!(idx.len() >= 3);
    std::fs::remove_file(&idx[0]).unwrap();
    let mut bytes = std::fs::read(&idx[1]).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&idx[1], bytes).unwrap();
    let log = open(dir.path(), small_config(&clock));
    assert_eq!(read_all(log.stream("s").unwrap().shard(0).unwrap()), before);
    assert!(idx[0].exists(), "the missing index was written again");
}

#[test]
fn a_damaged_sealed_segment_is_reported_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let clock = ManualClock::at(1);
    let log = open(dir.path(), small_config(&clock));
    let stream = log.create_stream("s", options(1)).unwrap();
    for _ in 0..10 {
        let mut b = stream.batches();
        b.push(0, b"k", &[1u8; 200]).unwrap();
        rt.block_on(stream.append(b)).unwrap();
    }
    drop(stream);
    drop(log);
    let first = dir
        .path()
        .join("streams/s/shard-0000/00000000000000000000.seg");
    std::fs::remove_file(first.with_extension("idx")).unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    match sluice_log::Log::open(dir.path(), small_config(&clock)) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, first),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a damaged sealed segment went unnoticed"),
    }
    assert_eq!(
        std::fs::read(&first).unwrap(),
        bytes,
        "the damaged segment was left as it was"
    );
}

#[test]
fn appends_beyond_the_in_flight_budget_get_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let config = LogConfig {
        inflight_bytes: 100,
        backpressure_wait: Duration::from_millis(20),
        ..LogConfig::default()
    };
    let log = open(dir.path(), config);
    let stream = log.create_stream("s", options(1)).unwrap();
    let mut b = stream.batches();
    b.push(0, b"k", &[0u8; 200]).unwrap();
    let err = rt.block_on(stream.append(b)).unwrap_err();
    assert!(matches!(err, Error::Backpressure));
    assert!(err.is_retryable());
    assert_eq!(
        stream.shard(0).unwrap().bounds(),
        (0, 0),
        "nothing was written"
    );
    let mut b = stream.batches();
    b.push(0, b"k", &[0u8; 20]).unwrap();
    rt.block_on(stream.append(b)).unwrap();
}

#[test]
fn streams_survive_restarts_and_drops_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = open(dir.path(), LogConfig::default());
    let s = log.create_stream("ticks", options(3)).unwrap();
    let meta = s.meta().clone();
    let mut b = s.batches();
    b.push(s.shard_for_key(b"AAPL"), b"AAPL", b"{}").unwrap();
    rt.block_on(s.append(b)).unwrap();
    drop(s);
    assert!(matches!(
        log.create_stream("ticks", options(3)),
        Err(Error::StreamExists(_))
    ));
    assert!(matches!(
        log.create_stream("../x", options(3)),
        Err(Error::InvalidName(_))
    ));
    assert!(matches!(
        log.create_stream("x", options(0)),
        Err(Error::InvalidShardCount(0))
    ));
    log.create_stream("gone", options(1)).unwrap();
    log.drop_stream("gone").unwrap();
    assert!(matches!(
        log.drop_stream("gone"),
        Err(Error::StreamNotFound(_))
    ));
    drop(log);

    let log = open(dir.path(), LogConfig::default());
    let names: Vec<_> = log.streams().iter().map(|s| s.name().to_string()).collect();
    assert_eq!(names, ["ticks"]);
    let s = log.stream("ticks").unwrap();
    assert_eq!(s.meta(), meta);
    let shard = s.shard(s.shard_for_key(b"AAPL")).unwrap();
    assert_eq!(read_all(shard).len(), 1);
    assert!(!dir.path().join("streams/gone").exists());
    let again = log.create_stream("gone", options(1)).unwrap();
    assert_eq!(
        again.shard(0).unwrap().bounds(),
        (0, 0),
        "a recreated stream starts empty"
    );
}

#[test]
fn retention_by_size_deletes_the_oldest_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let clock = ManualClock::at(1);
    let log = open(dir.path(), small_config(&clock));
    let stream = log
        .create_stream(
            "s",
            StreamOptions {
                shards: 1,
                retention: Retention {
                    max_age_ms: None,
                    max_bytes_per_shard: Some(2000),
                },
                definition: serde_json::Value::Null,
                elsewhere: None,
            },
        )
        .unwrap();
    for _ in 0..50 {
        let mut b = stream.batches();
        b.push(0, b"k", &[3u8; 100]).unwrap();
        rt.block_on(stream.append(b)).unwrap();
    }
    let shard = stream.shard(0).unwrap();
    assert!(shard.size().0 > 2000);
    assert!(log.enforce_retention().unwrap() > 0);
    let (bytes, _) = shard.size();
    assert!(bytes <= 2000 && bytes > 2000 - 700, "kept {bytes} bytes");
    let (start, end) = shard.bounds();
    assert_eq!(end, 50);
    let records = read_all(shard);
    assert_eq!(records.first().unwrap().seq, start);
    // A reader positioned before the retained range continues at the oldest record, and is
    // told exactly which records it will never see.
    let r = shard.read(0, 1, 1 << 20).unwrap();
    assert_eq!(r.records[0].seq, start);
    assert_eq!(r.skipped, Some((0, start - 1)));
    let r = shard.read(start, 1, 1 << 20).unwrap();
    assert_eq!(r.skipped, None);
}

#[test]
fn reads_respect_record_and_byte_limits() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = open(dir.path(), LogConfig::default());
    let stream = log.create_stream("s", options(1)).unwrap();
    let mut b = stream.batches();
    for i in 0..100u8 {
        b.push(0, b"", &[i; 1000]).unwrap();
    }
    rt.block_on(stream.append(b)).unwrap();
    let shard = stream.shard(0).unwrap();
    let r = shard.read(10, 5, 1 << 20).unwrap();
    assert_eq!(
        (r.records.len(), r.records[0].seq, r.next_seq, r.end_seq),
        (5, 10, 15, 100)
    );
    let r = shard.read(10, 1000, 3500).unwrap();
    assert_eq!((r.records.len(), r.next_seq), (3, 13));
    // One record always comes back, even over the byte limit.
    let r = shard.read(99, 1000, 10).unwrap();
    assert_eq!((r.records.len(), r.next_seq), (1, 100));
    let r = shard.read(100, 1000, 10).unwrap();
    assert_eq!((r.records.len(), r.next_seq), (0, 100));
}

#[test]
fn recovery_cuts_a_torn_last_write_but_reports_damage_further_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = open(dir.path(), LogConfig::default());
    let stream = log.create_stream("s", options(1)).unwrap();
    // 40 MiB in the active segment: more than any one write (group or batch) can be.
    for i in 0..40u8 {
        let mut b = stream.batches();
        b.push(0, b"k", &vec![i; 1 << 20]).unwrap();
        rt.block_on(stream.append(b)).unwrap();
    }
    drop(stream);
    drop(log);
    let path = dir
        .path()
        .join("streams/s/shard-0000/00000000000000000000.seg");
    let original = std::fs::read(&path).unwrap();

    // Damage in the last batch: a torn write, cut; the 39 before it stay.
    let mut torn = original.clone();
    let at = torn.len() - 100;
    torn[at] ^= 1;
    std::fs::write(&path, &torn).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.stream("s").unwrap().shard(0).unwrap().bounds(), (0, 39));
    drop(log);

    // Damage 39 MiB before the end: acknowledged data follows it, so nothing is cut.
    let mut damaged = original.clone();
    damaged[100] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    match sluice_log::Log::open(dir.path(), LogConfig::default()) {
        Err(Error::Corrupt {
            path: p, offset, ..
        }) => assert_eq!((p, offset), (path.clone(), 0)),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("damage far from the end was taken for a torn write"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "the damaged segment was left as it was"
    );
}

#[test]
fn a_dropped_stream_leaves_a_new_one_of_the_same_name_alone() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let clock = ManualClock::at(1);
    let log = open(dir.path(), small_config(&clock));
    let old = log.create_stream("s", options(1)).unwrap();
    log.drop_stream("s").unwrap();
    // The old stream is still referenced (as by a request in flight): it refuses appends
    // instead of writing into what is now another stream's folder.
    let mut b = old.batches();
    b.push(0, b"k", &[0u8; 700]).unwrap();
    let outcome = rt.block_on(old.append(b)).unwrap();
    assert!(matches!(outcome[0].result, Err(Error::Closed)));
    let new = log.create_stream("s", options(1)).unwrap();
    for _ in 0..5 {
        let mut b = new.batches();
        b.push(0, b"k", &[1u8; 700]).unwrap();
        rt.block_on(new.append(b)).unwrap();
    }
    drop((old, new));
    drop(log);
    let log = open(dir.path(), small_config(&clock));
    let records = read_all(log.stream("s").unwrap().shard(0).unwrap());
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r.data[0] == 1));
}
