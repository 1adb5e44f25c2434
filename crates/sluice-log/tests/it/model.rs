//! The log against a model: random appends, reads, retention and crashes at arbitrary byte
//! offsets. After every recovery each shard must equal the model's acknowledged records.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sluice_log::{Log, Retention, StreamOptions};

use crate::{ManualClock, open, read_all, runtime, small_config};

const SHARDS: u32 = 2;
const MAX_AGE_MS: u64 = 10_000;

#[derive(Debug, Clone)]
enum Op {
    /// Append records to a shard; acknowledged.
    Append { shard: u32, records: Vec<Vec<u8>> },
    /// Append records, then crash before the write was durable: the file keeps only
    /// `cut` of the group's bytes (a fraction in 1/256ths), followed by `garbage`.
    TornAppend {
        shard: u32,
        records: Vec<Vec<u8>>,
        cut: u8,
        garbage: Vec<u8>,
    },
    /// A clean restart.
    Reopen,
    /// Read a range of a shard and compare.
    Read { shard: u32, from: u8, max: u8 },
    /// Time passes, then retention runs.
    Retention { advance_ms: u16 },
}

fn records() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..6)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SHARDS, records()).prop_map(|(shard, records)| Op::Append { shard, records }),
        2 => (0..SHARDS, records(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(shard, records, cut, garbage)| Op::TornAppend { shard, records, cut, garbage }),
        1 => Just(Op::Reopen),
        2 => (0..SHARDS, any::<u8>(), 1..20u8).prop_map(|(shard, from, max)| Op::Read { shard, from, max }),
        1 => (0..6000u16).prop_map(|advance_ms| Op::Retention { advance_ms }),
    ]
}

/// The acknowledged records of one shard: (sequence number, append time, key, data).
#[derive(Default, Debug)]
struct ModelShard {
    first_seq: u64,
    records: Vec<(u64, i64, Vec<u8>, Vec<u8>)>,
}

fn active_segment(shard_dir: &Path) -> (PathBuf, u64) {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let path = segs.pop().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    (path, len)
}

fn append(log: &Log, shard: u32, records: &[Vec<u8>], rt: &tokio::runtime::Runtime) -> u64 {
    let stream = log.stream("s").unwrap();
    let mut batches = stream.batches();
    for (i, data) in records.iter().enumerate() {
        batches
            .push(shard, format!("k{i}").as_bytes(), data)
            .unwrap();
    }
    let outcome = rt.block_on(stream.append(batches)).unwrap();
    assert_eq!(outcome.len(), 1);
    outcome[0].result.as_ref().unwrap().first_seq()
}

fn check(log: &Log, model: &[ModelShard]) {
    let stream = log.stream("s").unwrap();
    for (id, m) in model.iter().enumerate() {
        let shard = stream.shard(id as u32).unwrap();
        let got: Vec<_> = read_all(shard)
            .into_iter()
            .map(|r| (r.seq, r.append_ms, r.key.to_vec(), r.data.to_vec()))
            .collect();
        let want: Vec<_> = m
            .records
            .iter()
            .filter(|r| r.0 >= m.first_seq)
            .cloned()
            .collect();
        assert_eq!(got, want, "shard {id}");
        let end = m.records.last().map_or(0, |r| r.0 + 1);
        assert_eq!(shard.bounds().1, end, "end of shard {id}");
    }
}

fn run(ops: Vec<Op>) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_000_000);
    let mut log = open(dir.path(), small_config(&clock));
    log.create_stream(
        "s",
        StreamOptions {
            shards: SHARDS,
            retention: Retention {
                max_age_ms: Some(MAX_AGE_MS),
                max_bytes_per_shard: None,
            },
            definition: serde_json::Value::Null,
            elsewhere: None,
        },
    )
    .unwrap();
    let mut model: Vec<ModelShard> = (0..SHARDS).map(|_| ModelShard::default()).collect();
    for op in ops {
        match op {
            Op::Append { shard, records } => {
                clock.advance(7);
                let first = append(&log, shard, &records, &rt);
                let m = &mut model[shard as usize];
                assert_eq!(
                    first,
                    m.records.last().map_or(0, |r| r.0 + 1),
                    "sequence numbers continue"
                );
                let ms = clock.now().max(m.records.last().map_or(0, |r| r.1));
                for (i, data) in records.into_iter().enumerate() {
                    m.records
                        .push((first + i as u64, ms, format!("k{i}").into_bytes(), data));
                }
            }
            Op::TornAppend {
                shard,
                records,
                cut,
                garbage,
            } => {
                let shard_dir = dir
                    .path()
                    .join("streams/s")
                    .join(format!("shard-{shard:04}"));
                let (before_path, before_len) = active_segment(&shard_dir);
                let first = append(&log, shard, &records, &rt);
                drop(log);
                let (path, len) = active_segment(&shard_dir);
                let start = if path == before_path { before_len } else { 0 };
                let group = len - start;
                let keep = group * u64::from(cut) / 256;
                // Garbage that happens to complete the batch byte for byte makes it a whole write.
                let written = std::fs::read(&path).unwrap()[start as usize..].to_vec();
                let mut tail = written[..keep as usize].to_vec();
                tail.extend_from_slice(&garbage);
                if tail.starts_with(&written) {
                    let m = &mut model[shard as usize];
                    let ms = clock.now().max(m.records.last().map_or(0, |r| r.1));
                    for (i, data) in records.into_iter().enumerate() {
                        m.records
                            .push((first + i as u64, ms, format!("k{i}").into_bytes(), data));
                    }
                }
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(start + keep).unwrap();
                use std::io::{Seek, Write};
                let mut f = f;
                f.seek(std::io::SeekFrom::End(0)).unwrap();
                f.write_all(&garbage).unwrap();
                log = open(dir.path(), small_config(&clock));
                check(&log, &model);
            }
            Op::Reopen => {
                drop(log);
                log = open(dir.path(), small_config(&clock));
                check(&log, &model);
            }
            Op::Read { shard, from, max } => {
                let s = log.stream("s").unwrap();
                let m = &model[shard as usize];
                let from = u64::from(from);
                let r = s
                    .shard(shard)
                    .unwrap()
                    .read(from, usize::from(max), 1 << 20)
                    .unwrap();
                let want: Vec<_> = m
                    .records
                    .iter()
                    .filter(|r| r.0 >= from.max(m.first_seq))
                    .take(usize::from(max))
                    .map(|r| (r.0, r.3.clone()))
                    .collect();
                let got: Vec<_> = r.records.iter().map(|r| (r.seq, r.data.to_vec())).collect();
                assert_eq!(got, want);
            }
            Op::Retention { advance_ms } => {
                clock.advance(i64::from(advance_ms));
                log.enforce_retention().unwrap();
                let cutoff = clock.now() - MAX_AGE_MS as i64;
                let s = log.stream("s").unwrap();
                for (id, m) in model.iter_mut().enumerate() {
                    let (start, _) = s.shard(id as u32).unwrap().bounds();
                    // Only expired records go (whole segments of them; never the active segment,
                    // which may however be empty, so every record may have expired).
                    for r in m.records.iter().filter(|r| r.0 < start) {
                        assert!(r.1 < cutoff, "record {} deleted before it expired", r.0);
                    }
                    m.first_seq = start;
                }
                check(&log, &model);
            }
        }
    }
    drop(log);
    let log = open(dir.path(), small_config(&clock));
    check(&log, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_equals_the_acknowledged_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
