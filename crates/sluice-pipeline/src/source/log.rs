//! Sluice's own streams as a source: a stream's shards are its partitions, their sequence
//! numbers its positions, and its definition decodes the records.
//!
//! Reads run on the blocking pool (they read segment files), each shard read once, then every
//! shard's records decoded apart, on every core ([`Decoder::decode_parts`]). A stream dropped
//! (or dropped and created again under its name) is gone for the source: its next `bounds`
//! fails rather than read another incarnation's records.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use sluice_log::{Log, Stream};
use sluice_sql::StreamDefinition;

use super::{Bounds, Gap, Limits, PartRead, Source, SourceRead};
use crate::decode::{Decoder, RawRecord};
use crate::exactly_once::{Partition, Positions};
use crate::{PipelineError, Result};

/// A stream of the log, as a pipeline reads it.
#[derive(Clone)]
pub struct LogSource {
    log: Arc<Log>,
    stream: Arc<Stream>,
    definition: Arc<StreamDefinition>,
    decoder: Arc<Decoder>,
}

impl LogSource {
    /// Stream `name` of `log`, decoded by its definition.
    pub fn open(log: &Arc<Log>, name: &str) -> Result<LogSource> {
        let stream = log.stream(name)?;
        let definition = StreamDefinition::from_log(&stream.meta().definition);
        let decoder = Decoder::new(&definition)?;
        Ok(LogSource {
            log: log.clone(),
            stream,
            definition: Arc::new(definition),
            decoder: Arc::new(decoder),
        })
    }

    /// The stream read.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The stream's definition (its columns, event time and watermark).
    pub fn definition(&self) -> &StreamDefinition {
        &self.definition
    }

    /// The decoder of the stream's records.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Refuses a stream that is no longer the log's (dropped, or created again).
    fn current(&self) -> Result<()> {
        match self.log.stream(self.stream.name()) {
            Ok(now) if now.meta().id == self.stream.meta().id => Ok(()),
            _ => Err(PipelineError::InputGone(format!(
                "stream '{}' was dropped",
                self.stream.name()
            ))),
        }
    }

    /// [`Source::read`] on the calling thread (it reads files: call it where blocking is fine).
    pub fn read_blocking(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
        let mut reads = Vec::with_capacity(limits.len());
        let mut backlog = false;
        for (&partition, &limit) in limits {
            let shard = self.stream.shard(partition)?;
            let at = from.get(&partition).copied();
            let read = shard.read(at.unwrap_or(0), limit, usize::MAX)?;
            backlog |= read.next_seq < read.end_seq;
            // A shard never taken starts at its oldest record: what retention deleted before
            // was never the pipeline's to lose.
            let gap = at.and(read.skipped).map(|(first, last)| Gap {
                partition,
                first,
                last,
            });
            reads.push((partition, read, gap));
        }
        let records: Vec<Vec<RawRecord<'_>>> = reads
            .iter()
            .map(|(partition, read, _)| {
                read.records
                    .iter()
                    .map(|r| RawRecord {
                        shard: *partition,
                        seq: r.seq,
                        append_ms: r.append_ms,
                        data: &r.data,
                    })
                    .collect()
            })
            .collect();
        let decoded = self.decoder.decode_parts(&records)?;
        let parts = reads
            .iter()
            .zip(decoded)
            .map(|((partition, read, gap), decoded)| PartRead {
                partition: *partition,
                rows: decoded.rows,
                errors: decoded.errors,
                records: read.records.len(),
                next: read.next_seq,
                gap: *gap,
            })
            .collect();
        Ok(SourceRead { parts, backlog })
    }
}

#[async_trait]
impl Source for LogSource {
    fn name(&self) -> &str {
        self.stream.name()
    }

    fn id(&self) -> u64 {
        self.stream.meta().id
    }

    fn schema(&self) -> &SchemaRef {
        self.decoder.schema()
    }

    async fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        self.current()?;
        Ok(self
            .stream
            .shards()
            .iter()
            .map(|shard| {
                let (oldest, next) = shard.bounds();
                (shard.id(), Bounds { oldest, next })
            })
            .collect())
    }

    async fn read(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
        let (source, from, limits) = (self.clone(), from.clone(), limits.clone());
        tokio::task::spawn_blocking(move || source.read_blocking(&from, &limits))
            .await
            .map_err(|e| PipelineError::Internal(e.to_string()))?
    }
}
