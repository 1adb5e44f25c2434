//! Segments: the files a shard's batches live in, their sparse index, and recovery.
//!
//! A shard is a folder of segments named by the sequence number of their first record,
//! `{base_seq:020}.seg`. Only the last segment of a shard (the active one) is ever written; the
//! others are sealed and immutable until retention deletes them whole.
//!
//! Each segment keeps a sparse index in memory: one entry (sequence number, file position,
//! append time) per [`INDEX_INTERVAL`] bytes of batches, so a reader seeks close to any sequence
//! number or time and scans at most one interval. When a segment is sealed its index is written
//! beside it as `{base_seq:020}.idx` (format below) so that opening the log need not scan sealed
//! segments; an index that is missing, fails its checksum or disagrees with the segment's length
//! is rebuilt by scanning.
//!
//! ```text
//! idx file: "SLIX" u32 version=1 | u64 base_seq | u64 len | u64 next_seq | i64 first_ms
//!           | i64 last_ms | u32 n | n × (u64 seq, u64 pos, i64 ms) | u32 CRC32C of all before
//! ```
//!
//! Recovery scans the active segment batch by batch from its start and truncates at the first
//! batch that is torn, fails a checksum, or does not continue the sequence: everything before it
//! was fsynced before being acknowledged, so only unacknowledged bytes are cut. The cut is at most
//! one group long (only the last group can be torn); a longer invalid tail is damage, reported as
//! corruption. What recovery keeps it fsyncs, since it may have been written and never synced.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, HEADER_LEN, Header, Invalid};
use crate::{Error, Result};

/// Bytes of batches between two entries of the sparse index.
pub const INDEX_INTERVAL: u64 = 64 << 10;

const INDEX_MAGIC: &[u8; 4] = b"SLIX";
const INDEX_VERSION: u32 = 1;
const INDEX_ENTRY_LEN: usize = 24;
/// Magic, version, five 8-byte fields and the entry count; the CRC follows the entries.
const INDEX_FIXED_LEN: usize = 4 + 4 + 5 * 8 + 4;

/// One entry of a segment's sparse index: where a batch starts, so that a reader seeks
/// there instead of scanning from the segment's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Base sequence number of the batch at `pos`.
    pub seq: u64,
    /// Byte position of the batch in the segment file.
    pub pos: u64,
    /// Append time of the batch, for seeking by time.
    pub append_ms: i64,
}

/// One segment file and what is known of its committed contents.
#[derive(Debug)]
pub struct Segment {
    /// Sequence number of the segment's first record; also its file name.
    pub base_seq: u64,
    /// The segment file's path, `{base_seq:020}.seg` in its shard's folder.
    pub path: PathBuf,
    /// The open file, shared with readers: one that retention deletes stays readable to them.
    pub file: Arc<File>,
    /// Bytes of committed (fsynced) batches.
    pub len: u64,
    /// Sequence number after the last committed record.
    pub next_seq: u64,
    /// Append time of the first batch (0 when empty).
    pub first_ms: i64,
    /// Append time of the last batch (0 when empty).
    pub last_ms: i64,
    /// The sparse index, one entry per [`INDEX_INTERVAL`] bytes, in file order.
    pub index: Vec<IndexEntry>,
}

/// The path of the segment starting at `base_seq` in shard folder `dir`.
pub fn segment_path(dir: &Path, base_seq: u64) -> PathBuf {
    dir.join(format!("{base_seq:020}.seg"))
}

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Parses `{base_seq:020}.seg`.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Segment {
    /// Creates an empty segment and makes its directory entry durable. On failure nothing is
    /// left behind, so that the next attempt can create it again.
    pub fn create(dir: &Path, base_seq: u64) -> Result<Segment> {
        let path = segment_path(dir, base_seq);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if let Err(e) = sync_dir(dir) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment {
            base_seq,
            path,
            file: Arc::new(file),
            len: 0,
            next_seq: base_seq,
            first_ms: 0,
            last_ms: 0,
            index: Vec::new(),
        })
    }

    /// Opens a sealed segment, from its index file when that is intact, else by scanning.
    /// A sealed segment that does not scan cleanly is corrupt: it was fsynced whole before the
    /// next segment was created, so a bad batch in it is damage, not a torn write.
    pub fn open_sealed(path: PathBuf, base_seq: u64) -> Result<Segment> {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if let Some(segment) = read_index(&path, &file, base_seq, file_len) {
            return Ok(segment);
        }
        let scan = scan(&file, base_seq, file_len).map_err(|e| Error::io(&path, e))?;
        if let Some((pos, why)) = scan.invalid {
            return Err(Error::Corrupt {
                path,
                offset: pos,
                reason: why.to_string(),
            });
        }
        let segment = scan.into_segment(path, file, base_seq);
        // Best effort: an index that fails to write is rebuilt on the next open.
        if let Err(e) = segment.write_index() {
            tracing::warn!(path = %segment.path.display(), error = %e, "could not write segment index");
        }
        Ok(segment)
    }

    /// Opens the active segment for appending, truncating a torn tail.
    ///
    /// Only the last group written can be torn, so an invalid tail longer than `max_torn` (the
    /// largest group the writer makes) is damage to acknowledged data: the segment is reported
    /// corrupt rather than cut. Whatever is kept is fsynced before anyone reads it: a group that
    /// was written but not yet fsynced when the process died is valid on disk but not durable.
    pub fn recover_active(path: PathBuf, base_seq: u64, max_torn: u64) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let scan = scan(&file, base_seq, file_len).map_err(|e| Error::io(&path, e))?;
        if let Some((pos, why)) = &scan.invalid {
            if file_len - pos > max_torn {
                return Err(Error::Corrupt {
                    path,
                    offset: *pos,
                    reason: format!(
                        "{why}, with {} bytes after it: more than one write could have torn",
                        file_len - pos
                    ),
                });
            }
            tracing::warn!(
                path = %path.display(), offset = pos, dropped_bytes = file_len - pos, reason = %why,
                "truncating the unacknowledged tail of a segment"
            );
            file.set_len(*pos).map_err(|e| Error::io(&path, e))?;
        }
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        // A stale index from an earlier seal of this segment must not outlive a truncation.
        remove_if_exists(&index_path(&path))?;
        Ok(scan.into_segment(path, file, base_seq))
    }

    /// Records a batch that was just made durable at `pos`.
    pub fn committed(&mut self, header: &Header, pos: u64) {
        let last_indexed = self.index.last().map(|e| e.pos);
        if last_indexed.is_none_or(|p| pos >= p + INDEX_INTERVAL) {
            self.index.push(IndexEntry {
                seq: header.base_seq,
                pos,
                append_ms: header.append_ms,
            });
        }
        if self.len == 0 {
            self.first_ms = header.append_ms;
        }
        self.last_ms = header.append_ms;
        self.len = pos + header.total_len();
        self.next_seq = header.next_seq();
    }

    /// The index entry to start scanning from for `seq` (a position at or before it).
    pub fn seek_seq(&self, seq: u64) -> u64 {
        let i = self.index.partition_point(|e| e.seq <= seq);
        if i == 0 { 0 } else { self.index[i - 1].pos }
    }

    /// The index entry to start scanning from for the first batch appended at or after `ms`.
    pub fn seek_time(&self, ms: i64) -> u64 {
        let i = self.index.partition_point(|e| e.append_ms < ms);
        if i == 0 { 0 } else { self.index[i - 1].pos }
    }

    /// Writes the index file of a sealed segment, atomically.
    pub fn write_index(&self) -> Result<()> {
        let mut buf = Vec::with_capacity(INDEX_FIXED_LEN + self.index.len() * INDEX_ENTRY_LEN);
        buf.extend_from_slice(INDEX_MAGIC);
        buf.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        buf.extend_from_slice(&self.base_seq.to_le_bytes());
        buf.extend_from_slice(&self.len.to_le_bytes());
        buf.extend_from_slice(&self.next_seq.to_le_bytes());
        buf.extend_from_slice(&self.first_ms.to_le_bytes());
        buf.extend_from_slice(&self.last_ms.to_le_bytes());
        buf.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for e in &self.index {
            buf.extend_from_slice(&e.seq.to_le_bytes());
            buf.extend_from_slice(&e.pos.to_le_bytes());
            buf.extend_from_slice(&e.append_ms.to_le_bytes());
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let path = index_path(&self.path);
        let tmp = path.with_extension("idx.tmp");
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Deletes the segment and its index (retention). Readers holding the file keep reading.
    pub fn delete(&self) -> Result<()> {
        remove_if_exists(&self.path)?;
        remove_if_exists(&index_path(&self.path))
    }
}

fn read_index(path: &Path, file: &File, base_seq: u64, file_len: u64) -> Option<Segment> {
    let bytes = std::fs::read(index_path(path)).ok()?;
    if bytes.len() < INDEX_FIXED_LEN + 4 || &bytes[..4] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    // Fixed fields by offset: magic, version (u32), five u64 / i64, the entry count (u32).
    let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().expect("8"));
    if u32::from_le_bytes(body[4..8].try_into().ok()?) != INDEX_VERSION {
        return None;
    }
    let (idx_base, len, next_seq) = (u64_at(8), u64_at(16), u64_at(24));
    let (first_ms, last_ms) = (u64_at(32) as i64, u64_at(40) as i64);
    let n = u32::from_le_bytes(body[48..52].try_into().ok()?) as usize;
    if idx_base != base_seq
        || len != file_len
        || body.len() != INDEX_FIXED_LEN + n * INDEX_ENTRY_LEN
    {
        return None;
    }
    let index = body[INDEX_FIXED_LEN..]
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|c| IndexEntry {
            seq: u64::from_le_bytes(c[0..8].try_into().expect("8")),
            pos: u64::from_le_bytes(c[8..16].try_into().expect("8")),
            append_ms: i64::from_le_bytes(c[16..24].try_into().expect("8")),
        })
        .collect();
    Some(Segment {
        base_seq,
        path: path.to_path_buf(),
        file: Arc::new(file.try_clone().ok()?),
        len,
        next_seq,
        first_ms,
        last_ms,
        index,
    })
}

/// What a scan of a segment found: its valid prefix, and where and why it stopped early.
struct Scan {
    valid: Vec<(Header, u64)>,
    invalid: Option<(u64, Invalid)>,
}

impl Scan {
    fn into_segment(self, path: PathBuf, file: File, base_seq: u64) -> Segment {
        let mut segment = Segment {
            base_seq,
            path,
            file: Arc::new(file),
            len: 0,
            next_seq: base_seq,
            first_ms: 0,
            last_ms: 0,
            index: Vec::new(),
        };
        for (header, pos) in &self.valid {
            segment.committed(header, *pos);
        }
        segment
    }
}

/// Reads every batch from the start, checking each header, payload and sequence continuity.
fn scan(file: &File, base_seq: u64, file_len: u64) -> std::io::Result<Scan> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut valid = Vec::new();
    let mut pos = 0u64;
    let mut expected = base_seq;
    let mut payload = Vec::new();
    let invalid = loop {
        if pos == file_len {
            break None;
        }
        let mut header_bytes = [0u8; HEADER_LEN];
        if file_len - pos < HEADER_LEN as u64 {
            break Some((pos, Invalid::Truncated));
        }
        reader.read_exact(&mut header_bytes)?;
        let header = match batch::decode_header(&header_bytes, file_len - pos) {
            Ok(h) => h,
            Err(why) => break Some((pos, why)),
        };
        if header.base_seq != expected {
            break Some((
                pos,
                Invalid::Malformed("sequence number does not continue the segment"),
            ));
        }
        payload.resize(header.payload_len as usize, 0);
        reader.read_exact(&mut payload)?;
        if let Err(why) = batch::check_payload(&header, &payload) {
            break Some((pos, why));
        }
        valid.push((header, pos));
        expected = header.next_seq();
        pos += header.total_len();
    };
    Ok(Scan { valid, invalid })
}

/// Reads `len` bytes at `pos`.
pub fn read_at(file: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, pos)?;
    Ok(buf)
}

/// Fsyncs a folder, so that files created, renamed or deleted in it stay so after a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fail::fail_point!("log::sync-dir", |_| Err(Error::io(
        dir,
        std::io::Error::other("injected directory fsync failure")
    )));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}
