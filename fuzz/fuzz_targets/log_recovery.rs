//! Recovery of a shard from whatever bytes its segment files hold.
//!
//! Input: one flags byte, then the segment bytes.
//!
//! ```text
//!  byte 0   bit 0  two segments: a sealed one (its length in the next two bytes, u16 LE) and
//!                  an active one after it (the rest)
//!           bit 1  fix up each batch's base_seq and both CRC32Cs before writing, so that the
//!                  fuzzer explores framing and counts behind the checksums
//!           bit 2  (two segments) name the active segment one past where the sealed one ends
//!           bits 4-7  page size of the paged reads (1 to 16 records)
//! ```
//!
//! The log must open whatever the active segment holds (recovery only truncates a torn tail,
//! and these inputs are far below the longest tail it may cut), keeping exactly the batches a
//! scan of its own (the public `batch` checks, below) finds valid. Two segments open only when
//! the sealed one scans cleanly and the active one continues it; otherwise the error is
//! `Corrupt`. An open log reads back every record in bounds, however it is paged, accepts an
//! append, and opens again to the same records plus the new one.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sluice_log::batch::{self, HEADER_LEN};
use sluice_log::segment::segment_path;
use sluice_log::{Error, Log, LogConfig, Record, Shard};

struct Fixture {
    root: PathBuf,
    shard_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = sluice_fuzz::scratch_dir("log_recovery");
        let log = Log::open(&root, config()).expect("open the fixture log");
        sluice_fuzz::create_one_shard_stream(&log);
        drop(log);
        Fixture {
            shard_dir: root.join("streams/s/shard-0000"),
            root,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    })
}

fn config() -> LogConfig {
    LogConfig {
        // Small, so that an append after a large recovered segment rolls to a new one.
        segment_bytes: 4096,
        // A fixed clock: the same input takes the same path every time.
        clock: Arc::new(|| 1_700_000_000_000),
        ..LogConfig::default()
    }
}

/// What a scan of `bytes` as a segment starting at `base` finds: the length of its valid
/// prefix, the sequence number after it, and whether that prefix is the whole of `bytes`.
fn model_scan(bytes: &[u8], base: u64) -> (u64, u64, bool) {
    let (mut pos, mut next) = (0usize, base);
    while pos + HEADER_LEN <= bytes.len() {
        let header_bytes: &[u8; HEADER_LEN] = bytes[pos..pos + HEADER_LEN].try_into().unwrap();
        let Ok(header) = batch::decode_header(header_bytes, (bytes.len() - pos) as u64) else {
            break;
        };
        let end = pos + header.total_len() as usize;
        if header.base_seq != next
            || batch::check_payload(&header, &bytes[pos + HEADER_LEN..end]).is_err()
        {
            break;
        }
        next = header.next_seq();
        pos = end;
    }
    (pos as u64, next, pos == bytes.len())
}

/// Makes every batch that fits in `bytes` pass its checks of base_seq and checksums (its
/// length, count and records are left as they are).
fn fix_up(bytes: &mut [u8], base: u64) {
    let (mut pos, mut next) = (0usize, base);
    while pos + HEADER_LEN <= bytes.len() {
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let payload_len = u32_at(pos + 4) as usize;
        let count = u32_at(pos + 12);
        let Some(end) = (pos + HEADER_LEN)
            .checked_add(payload_len)
            .filter(|&e| e <= bytes.len())
        else {
            return;
        };
        let payload_crc = crc32c::crc32c(&bytes[pos + HEADER_LEN..end]);
        bytes[pos + 8..pos + 12].copy_from_slice(&payload_crc.to_le_bytes());
        bytes[pos + 16..pos + 24].copy_from_slice(&next.to_le_bytes());
        let header_crc = crc32c::crc32c(&bytes[pos + 4..pos + HEADER_LEN]);
        bytes[pos..pos + 4].copy_from_slice(&header_crc.to_le_bytes());
        next = next.saturating_add(u64::from(count));
        pos = end;
    }
}

/// Every record of the shard, read in one go and checked against its bounds.
fn read_all(shard: &Shard) -> Vec<Record> {
    let (start, end) = shard.bounds();
    let read = shard
        .read(0, usize::MAX, usize::MAX)
        .expect("read everything");
    assert_eq!((read.next_seq, read.end_seq), (end, end));
    assert_eq!(read.records.len() as u64, end - start);
    for (i, record) in read.records.iter().enumerate() {
        assert_eq!(record.seq, start + i as u64);
    }
    read.records
}

/// Reads the shard again in pages of `page` records, and of about one byte, from the start and
/// from its middle: every way must give the same records.
fn check_paged_reads(shard: &Shard, all: &[Record], page: usize) {
    let (start, end) = shard.bounds();
    for (max_records, max_bytes) in [(page, usize::MAX), (usize::MAX, 1)] {
        for from in [start, start + (end - start) / 2] {
            let (mut seq, mut got) = (from, Vec::new());
            while seq < end {
                let read = shard.read(seq, max_records, max_bytes).expect("paged read");
                assert!(
                    !read.records.is_empty(),
                    "a read before the end makes progress"
                );
                assert!(read.records.len() <= max_records);
                assert_eq!(read.records[0].seq, seq);
                assert_eq!(read.next_seq, read.records.last().unwrap().seq + 1);
                seq = read.next_seq;
                got.extend(read.records);
            }
            assert_eq!(got, all[(from - start) as usize..]);
        }
    }
    let past = shard
        .read(end + 1, usize::MAX, usize::MAX)
        .expect("read past the end");
    assert!(past.records.is_empty());
}

fn open_and_check(fixture: &Fixture, expected_end: u64, page: usize, ms: i64) {
    let log = Log::open(&fixture.root, config()).expect("checked by the caller");
    let stream = log.stream("s").expect("the stream");
    let shard = stream.shard(0).expect("shard 0");
    let (start, end) = shard.bounds();
    assert_eq!((start, end), (0, expected_end));
    let all = read_all(shard);
    check_paged_reads(shard, &all, page);
    let first = shard.seq_at_time(i64::MIN).expect("seek to the start");
    assert_eq!(first, if end > start { start } else { end });
    let at = shard.seq_at_time(ms).expect("seek by time");
    assert!((start..=end).contains(&at));

    // The log takes a new record after whatever it recovered, and keeps it.
    let mut batches = stream.batches();
    batches.push(0, b"fuzz-key", b"fuzz-data").unwrap();
    let appended = fixture
        .runtime
        .block_on(stream.append(batches))
        .expect("append");
    let appended = appended[0].result.as_ref().expect("append to shard 0");
    assert_eq!((appended.first_seq(), appended.count()), (end, 1));
    let new = shard
        .read(end, usize::MAX, usize::MAX)
        .expect("read the new record");
    assert_eq!(new.records.len(), 1);
    assert_eq!(
        (&new.records[0].key[..], &new.records[0].data[..]),
        (&b"fuzz-key"[..], &b"fuzz-data"[..])
    );
    drop((stream, log));

    // Opening again (sealed segments from their index this time) finds the same records.
    let log = Log::open(&fixture.root, config()).expect("open again");
    let stream = log.stream("s").expect("the stream");
    let shard = stream.shard(0).expect("shard 0");
    assert_eq!(shard.bounds(), (0, end + 1));
    let again = read_all(shard);
    assert_eq!(again[..all.len()], all[..]);
    assert_eq!(again[all.len()], new.records[0]);
}

fn write(dir: &Path, base: u64, bytes: &[u8]) {
    std::fs::write(segment_path(dir, base), bytes).expect("write a segment");
}

fn file_lens(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let dir = &fixture.shard_dir;
    for entry in std::fs::read_dir(dir).expect("shard folder").flatten() {
        std::fs::remove_file(entry.path()).expect("clear the shard folder");
    }
    let page = 1 + usize::from(flags >> 4);
    let ms = i64::from_le_bytes(std::array::from_fn(|i| rest.get(i).copied().unwrap_or(0)));

    if flags & 1 == 0 {
        let mut active = rest.to_vec();
        if flags & 2 != 0 {
            fix_up(&mut active, 0);
        }
        write(dir, 0, &active);
        let (valid, next, _) = model_scan(&active, 0);
        // Far below the longest tail recovery may cut: opening must succeed.
        match Log::open(&fixture.root, config()) {
            Ok(log) => {
                let shard_size = log.stream("s").unwrap().shard(0).unwrap().size();
                assert_eq!(shard_size, (valid, 1), "recovery keeps the valid prefix");
                assert_eq!(file_lens(dir), valid, "recovery cuts the rest");
            }
            Err(e) => panic!("a torn active segment must be recovered, not refused: {e}"),
        }
        open_and_check(fixture, next, page, ms);
        return;
    }

    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let (sealed, active) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    let mut sealed = sealed.to_vec();
    if flags & 2 != 0 {
        fix_up(&mut sealed, 0);
    }
    let (sealed_len, sealed_next, sealed_clean) = model_scan(&sealed, 0);
    // Two segments cannot both start at 0.
    let active_base = sealed_next + u64::from(flags & 4 != 0 || sealed_next == 0);
    let mut active = active.to_vec();
    if flags & 2 != 0 {
        fix_up(&mut active, active_base);
    }
    write(dir, 0, &sealed);
    write(dir, active_base, &active);
    let (active_len, active_next, _) = model_scan(&active, active_base);
    let should_open = sealed_clean && active_base == sealed_next;
    match Log::open(&fixture.root, config()) {
        Ok(log) => {
            assert!(
                should_open,
                "opened a shard whose sealed segment is damaged or does not lead to the next"
            );
            let shard_size = log.stream("s").unwrap().shard(0).unwrap().size();
            assert_eq!(shard_size, (sealed_len + active_len, 2));
        }
        Err(Error::Corrupt { .. }) if !should_open => return,
        Err(e) => panic!("unexpected error opening a shard of two segments: {e:?}"),
    }
    open_and_check(fixture, active_next, page, ms);
});
