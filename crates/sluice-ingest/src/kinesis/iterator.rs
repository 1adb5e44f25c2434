//! Shard iterators: opaque to clients, a position (stream, shard, sequence number) and the time
//! it was issued, checksummed so that a garbled iterator is refused rather than misread.
//!
//! `base64( "<stream id>:<shard>:<seq>:<issued ms>:<stream name>" + ":" + crc32c hex )`

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::KinesisError;

/// How long an iterator may be used, as in Kinesis.
pub const ITERATOR_TTL_MS: i64 = 5 * 60 * 1000;

/// Where a reader of one shard is: what GetShardIterator hands out and GetRecords takes
/// and moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator {
    /// The stream's name.
    pub stream: String,
    /// The stream's incarnation: an iterator does not outlive a drop and re-create.
    pub stream_id: u64,
    /// The shard within the stream.
    pub shard: u32,
    /// The sequence number the next GetRecords reads from.
    pub seq: u64,
    /// When the iterator was issued (ms since the Unix epoch): it expires
    /// [`ITERATOR_TTL_MS`] later.
    pub issued_ms: i64,
}

impl ShardIterator {
    /// The iterator as clients see it: opaque base64, checksummed.
    pub fn encode(&self) -> String {
        let body = format!(
            "{}:{}:{}:{}:{}",
            self.stream_id, self.shard, self.seq, self.issued_ms, self.stream
        );
        let crc = crc32c::crc32c(body.as_bytes());
        STANDARD.encode(format!("{body}:{crc:08x}"))
    }

    /// Reads back an iterator [`ShardIterator::encode`] made; anything else (garbled,
    /// truncated) is `InvalidArgumentException`.
    pub fn decode(text: &str) -> Result<ShardIterator, KinesisError> {
        let invalid =
            || KinesisError::invalid_argument(format!("Invalid ShardIterator: {text:.64}"));
        let bytes = STANDARD.decode(text).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (body, crc) = text.rsplit_once(':').ok_or_else(invalid)?;
        if u32::from_str_radix(crc, 16).ok() != Some(crc32c::crc32c(body.as_bytes())) {
            return Err(invalid());
        }
        let mut parts = body.splitn(5, ':');
        let mut next = || parts.next().ok_or_else(invalid);
        Ok(ShardIterator {
            stream_id: next()?.parse().map_err(|_| invalid())?,
            shard: next()?.parse().map_err(|_| invalid())?,
            seq: next()?.parse().map_err(|_| invalid())?,
            issued_ms: next()?.parse().map_err(|_| invalid())?,
            stream: next()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let it = ShardIterator {
            stream: "ticks".into(),
            stream_id: 42,
            shard: 3,
            seq: 1234,
            issued_ms: 99,
        };
        let text = it.encode();
        assert_eq!(ShardIterator::decode(&text).unwrap(), it);
        let tampered = STANDARD.encode(
            String::from_utf8(STANDARD.decode(&text).unwrap())
                .unwrap()
                .replace(":1234:", ":1235:"),
        );
        assert_eq!(
            ShardIterator::decode(&tampered).unwrap_err().kind,
            "InvalidArgumentException"
        );
        assert!(ShardIterator::decode("not base64!").is_err());
        assert!(ShardIterator::decode("").is_err());
    }
}
