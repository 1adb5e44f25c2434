//! The record batch: the unit the log writes, checksums, recovers and reads.
//!
//! ```text
//!  offset  size  field
//!  0       4     header_crc     CRC32C of bytes 4..32 (the rest of the header)
//!  4       4     payload_len    bytes of records that follow the header
//!  8       4     payload_crc    CRC32C of the payload
//!  12      4     count          records in the batch (>= 1)
//!  16      8     base_seq       sequence number of the first record
//!  24      8     append_ms      when the batch was made durable (ms since the Unix epoch)
//!  32      payload_len          `count` records, each:
//!                                 u32 key_len, key bytes, u32 data_len, data bytes
//! ```
//!
//! All integers are little-endian. The payload and its CRC are produced by whoever builds the
//! batch (an ingest request, on the runtime's worker threads); the shard's writer only stamps
//! `base_seq` and `append_ms` and seals the header with its own CRC, so the single writer per
//! shard does O(1) work per batch. The header CRC covers `payload_crc`, so together the two
//! checksums cover every byte of the batch.
//!
//! Decoding never trusts a length it has not checked: `payload_len` is bounded by
//! [`MAX_BATCH_PAYLOAD`] and by the bytes actually present, and the record framing must add up
//! to exactly `payload_len` with exactly `count` records.

use crate::{Error, Result};

/// Bytes of the batch header.
pub const HEADER_LEN: usize = 32;
/// Largest payload a batch may carry: a full ingest request (16 MiB) with its records' framing.
/// Bounds what recovery allocates for one batch, and how long a torn write can be.
pub const MAX_BATCH_PAYLOAD: usize = 32 << 20;
/// Largest record (its data) the log accepts: Kinesis' limit.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Longest partition key, in bytes: Kinesis' limit (256 Unicode characters, checked by the API).
pub const MAX_KEY_BYTES: usize = 1024;

/// A batch under construction for one shard: the header is reserved, records are appended to
/// the payload in order. Sequence numbers are assigned by the shard when it is written.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    /// An empty batch with room for `payload_bytes` of records, so that a request whose size
    /// is known grows its buffer once.
    pub fn with_capacity(payload_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + payload_bytes);
        buf.resize(HEADER_LEN, 0);
        Self { buf, count: 0 }
    }

    /// Appends one record; returns its index within the batch.
    pub fn push(&mut self, key: &[u8], data: &[u8]) -> Result<u32> {
        if data.len() > MAX_RECORD_BYTES {
            return Err(Error::RecordTooLarge { bytes: data.len() });
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::KeyTooLong { bytes: key.len() });
        }
        let added = 8 + key.len() + data.len();
        if self.payload_len() + added > MAX_BATCH_PAYLOAD {
            return Err(Error::BatchTooLarge {
                bytes: self.payload_len() + added,
            });
        }
        self.buf.reserve(added);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(data);
        let index = self.count;
        self.count += 1;
        Ok(index)
    }

    /// How many records the batch holds.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no record was pushed yet (an empty batch is never written).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of records so far, framing included: what counts against [`MAX_BATCH_PAYLOAD`].
    pub fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// Fills in the length, count and payload checksum. The result still needs `stamp`.
    pub fn seal(mut self) -> SealedBatch {
        let payload_crc = crc32c::crc32c(&self.buf[HEADER_LEN..]);
        let payload_len = self.payload_len() as u32;
        self.buf[4..8].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[8..12].copy_from_slice(&payload_crc.to_le_bytes());
        self.buf[12..16].copy_from_slice(&self.count.to_le_bytes());
        SealedBatch {
            bytes: self.buf,
            count: self.count,
        }
    }
}

/// A batch whose payload is checksummed, waiting for its sequence number.
#[derive(Debug)]
pub struct SealedBatch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: u32,
}

impl SealedBatch {
    /// How many records the batch holds: the sequence numbers it will take.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes the batch takes on disk, header included: what it holds of the in-flight budget.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The batch's records, `(key, data)`, in order.
    pub fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // Built by `BatchBuilder`: the framing adds up.
        Records::new(&self.bytes[HEADER_LEN..]).map_while(std::result::Result::ok)
    }

    /// The header as stamped.
    pub(crate) fn header(&self) -> Header {
        parse_header(self.bytes[..HEADER_LEN].try_into().expect("header"))
    }

    /// Assigns the batch its place in the shard and seals the header.
    pub(crate) fn stamp(&mut self, base_seq: u64, append_ms: i64) {
        let header = &mut self.bytes[..HEADER_LEN];
        header[16..24].copy_from_slice(&base_seq.to_le_bytes());
        header[24..32].copy_from_slice(&append_ms.to_le_bytes());
        let crc = crc32c::crc32c(&header[4..HEADER_LEN]);
        header[0..4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A checked batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of records after the header.
    pub payload_len: u32,
    /// CRC32C of the payload.
    pub payload_crc: u32,
    /// Records in the batch, at least one.
    pub count: u32,
    /// Sequence number of the first record; the others follow it one by one.
    pub base_seq: u64,
    /// When the batch was made durable (ms since the Unix epoch): every record's append time.
    pub append_ms: i64,
}

impl Header {
    /// Bytes the batch takes in its segment, header included: where the next batch starts.
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// The sequence number after the batch's last record: the next batch's first.
    pub fn next_seq(&self) -> u64 {
        self.base_seq + u64::from(self.count)
    }
}

/// Why bytes at some position are not a valid batch. Recovery truncates there; a reader of
/// committed data reports it as corruption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes remain than the header or the payload needs.
    Truncated,
    /// The header's CRC does not match: a torn or damaged header.
    HeaderChecksum,
    /// The payload's CRC does not match: a torn or damaged payload.
    PayloadChecksum,
    /// The header is intact but describes something impossible.
    Malformed(&'static str),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated => f.write_str("truncated batch"),
            Invalid::HeaderChecksum => f.write_str("header checksum mismatch"),
            Invalid::PayloadChecksum => f.write_str("payload checksum mismatch"),
            Invalid::Malformed(what) => write!(f, "malformed batch: {what}"),
        }
    }
}

/// Checks a header; `available` is how many bytes of the file follow its start.
pub fn decode_header(
    bytes: &[u8; HEADER_LEN],
    available: u64,
) -> std::result::Result<Header, Invalid> {
    if u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) != crc32c::crc32c(&bytes[4..]) {
        return Err(Invalid::HeaderChecksum);
    }
    let header = parse_header(bytes);
    if header.payload_len as usize > MAX_BATCH_PAYLOAD {
        return Err(Invalid::Malformed("payload length over the maximum"));
    }
    if header.count == 0 || u64::from(header.count) * 8 > u64::from(header.payload_len) {
        return Err(Invalid::Malformed("record count does not fit the payload"));
    }
    if header.total_len() > available {
        return Err(Invalid::Truncated);
    }
    Ok(header)
}

fn parse_header(bytes: &[u8; HEADER_LEN]) -> Header {
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    Header {
        payload_len: u32_at(4),
        payload_crc: u32_at(8),
        count: u32_at(12),
        base_seq: u64_at(16),
        append_ms: u64_at(24) as i64,
    }
}

/// Checks a payload against its header: checksum, then framing.
pub fn check_payload(header: &Header, payload: &[u8]) -> std::result::Result<(), Invalid> {
    if payload.len() != header.payload_len as usize {
        return Err(Invalid::Truncated);
    }
    if crc32c::crc32c(payload) != header.payload_crc {
        return Err(Invalid::PayloadChecksum);
    }
    let mut records = Records::new(payload);
    for _ in 0..header.count {
        match records.next() {
            Some(Ok(_)) => {}
            _ => return Err(Invalid::Malformed("record framing does not add up")),
        }
    }
    if !records.rest.is_empty() {
        return Err(Invalid::Malformed("bytes after the last record"));
    }
    Ok(())
}

/// Iterates the `(key, data)` pairs of a checked payload.
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    /// Iterates a payload that [`check_payload`] accepted; on any other, the framing may
    /// fail part way ([`Invalid::Malformed`]).
    pub fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    fn take_field(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (field, rest) = rest.split_at(len);
        self.rest = rest;
        Some(field)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = std::result::Result<(&'a [u8], &'a [u8]), Invalid>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let record = self
            .take_field()
            .and_then(|key| Some((key, self.take_field()?)));
        Some(record.ok_or(Invalid::Malformed("record framing does not add up")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(&[u8], &[u8])], base: u64) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        for (k, d) in records {
            b.push(k, d).unwrap();
        }
        let mut sealed = b.seal();
        sealed.stamp(base, 1234);
        sealed.bytes
    }

    #[test]
    fn round_trip() {
        let bytes = batch(&[(b"k1", b"hello"), (b"", b"world!")], 7);
        let header =
            decode_header(bytes[..HEADER_LEN].try_into().unwrap(), bytes.len() as u64).unwrap();
        assert_eq!(
            (header.base_seq, header.count, header.append_ms),
            (7, 2, 1234)
        );
        check_payload(&header, &bytes[HEADER_LEN..]).unwrap();
        let records: Vec<_> = Records::new(&bytes[HEADER_LEN..])
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            records,
            vec![(&b"k1"[..], &b"hello"[..]), (&b""[..], &b"world!"[..])]
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = batch(&[(b"key", b"some data")], 3);
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let header = decode_header(bad[..HEADER_LEN].try_into().unwrap(), bad.len() as u64);
            let ok = header.is_ok_and(|h| check_payload(&h, &bad[HEADER_LEN..]).is_ok());
            assert!(!ok, "bit {i} flipped went unnoticed");
        }
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let mut bytes = batch(&[(b"k", b"v")], 0);
        // A header claiming more payload than the file holds is truncated, not read.
        assert_eq!(
            decode_header(
                bytes[..HEADER_LEN].try_into().unwrap(),
                bytes.len() as u64 - 1
            ),
            Err(Invalid::Truncated)
        );
        // An oversized length with a valid header checksum is refused outright.
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..HEADER_LEN]);
        bytes[0..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_header(bytes[..HEADER_LEN].try_into().unwrap(), u64::MAX),
            Err(Invalid::Malformed(_))
        ));
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut b = BatchBuilder::default();
        assert!(matches!(
            b.push(b"k", &vec![0; MAX_RECORD_BYTES + 1]),
            Err(Error::RecordTooLarge { .. })
        ));
        assert!(b.push(b"k", &vec![0; MAX_RECORD_BYTES]).is_ok());
    }
}
