//! Writes the seed inputs of the `log_recovery` target: segments written by the real log (so that
//! their checksums hold), whole, torn and damaged, in the target's input format (a flags byte,
//! then the segment bytes; see fuzz_targets/log_recovery.rs).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus/log_recovery
//! ```
//!
//! Its output is committed; run it again only when the segment format changes.

use std::path::Path;
use std::sync::Arc;

use sluice_log::{Log, LogConfig};

/// The segments a shard holds after appending each group of `(key, data)` records in turn.
fn segments(groups: &[Vec<(&[u8], Vec<u8>)>], segment_bytes: u64) -> Vec<Vec<u8>> {
    let root = sluice_fuzz::scratch_dir("seeds");
    let config = LogConfig {
        segment_bytes,
        clock: Arc::new(|| 1_700_000_000_000),
        ..LogConfig::default()
    };
    let log = Log::open(&root, config).unwrap();
    let stream = sluice_fuzz::create_one_shard_stream(&log);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for group in groups {
        let mut batches = stream.batches();
        for (key, data) in group {
            batches.push(0, key, data).unwrap();
        }
        let appended = runtime.block_on(stream.append(batches)).unwrap();
        appended[0].result.as_ref().unwrap();
    }
    drop((stream, log));
    let dir = root.join("streams/s/shard-0000");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    let segments = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    std::fs::remove_dir_all(&root).unwrap();
    segments
}

fn records(n: usize, key: &'static [u8], data_len: usize) -> Vec<(&'static [u8], Vec<u8>)> {
    (0..n)
        .map(|i| {
            let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(data_len));
            (key, data.into_bytes())
        })
        .collect()
}

fn one_segment(groups: &[Vec<(&[u8], Vec<u8>)>]) -> Vec<u8> {
    let mut segs = segments(groups, u64::MAX);
    assert_eq!(segs.len(), 1);
    segs.pop().unwrap()
}

fn input(flags: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend(parts.concat());
    out
}

fn two_segments(flags: u8, sealed: &[u8], active: &[u8]) -> Vec<u8> {
    let len = u16::try_from(sealed.len()).expect("a sealed seed under 64 KiB");
    let mut out = vec![flags | 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(sealed);
    out.extend_from_slice(active);
    out
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/log_recovery".into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();

    let one = one_segment(&[vec![(b"k", b"{\"a\":1}".to_vec())]]);
    let three = one_segment(&[
        records(1, b"", 0),
        vec![(b"ticker", b"AAPL".to_vec()), (b"", Vec::new())],
        records(3, b"key-3", 10),
    ]);
    let mut flipped = three.clone();
    let at = flipped.len() - 5;
    flipped[at] ^= 0x10;
    let many = one_segment(&(0..40).map(|_| records(8, b"k", 240)).collect::<Vec<_>>());
    let split = segments(
        &[
            records(2, b"a", 4),
            records(1, b"b", 0),
            records(3, b"c", 8),
        ],
        64,
    );
    assert!(split.len() >= 2, "small segments roll");
    let (sealed, active) = (&split[0], &split[1]);

    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![0]),
        ("one-record", input(0, &[&one])),
        ("three-batches", input(0, &[&three])),
        ("three-batches-paged", input(0xf0, &[&three])),
        ("three-batches-fix-up", input(2, &[&three])),
        ("torn-tail", input(0, &[&three[..three.len() - 7]])),
        ("torn-header", input(0x10, &[&one, &three[..20]])),
        ("zero-tail", input(0, &[&one, &[0; 64]])),
        ("flipped-bit", input(0, &[&flipped])),
        ("flipped-bit-fix-up", input(2, &[&flipped])),
        ("many-batches-indexed", input(0x30, &[&many])),
        ("two-segments", two_segments(0, sealed, active)),
        ("two-segments-fix-up", two_segments(2, sealed, active)),
        ("two-segments-gap", two_segments(4, sealed, active)),
        (
            "two-segments-torn-sealed",
            two_segments(0, &sealed[..sealed.len() - 3], active),
        ),
        (
            "two-segments-torn-active",
            two_segments(0, sealed, &active[..active.len() - 3]),
        ),
    ];
    for (name, bytes) in seeds {
        assert!(bytes.len() < 100 << 10, "{name} is too large for a seed");
        std::fs::write(out.join(name), &bytes).unwrap();
        println!("{name}: {} bytes", bytes.len());
    }
}
