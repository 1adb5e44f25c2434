//! A stream as a source: its records are the log's (its shards are the partitions, their
//! sequence numbers the positions) or, for a stream with a connector, a Kafka topic's (the
//! topic's partitions and their offsets: [`super::kafka`]) or a Kinesis stream's (its shards
//! and the ordinals of their records: [`super::kinesis`]); its definition decodes them.
//!
//! Reads run on the blocking pool (they read segment files, or wait on the Kafka consumer's
//! lock), each partition read once, then every partition's records decoded apart, on every
//! core ([`Decoder::decode_parts`]). A stream dropped (or dropped and created again under its
//! name) is gone for the source: its next `bounds` fails rather than read another
//! incarnation's records.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use sluice_log::{Log, Stream};
use sluice_sql::StreamDefinition;

use super::{Assignment, Bounds, Gap, Limits, PartRead, Source, SourceRead};
use crate::decode::{Decoder, Origin, RawRecord};
use crate::exactly_once::{Partition, Positions};
use crate::{PipelineError, Result};

/// A stream of the log, as a pipeline reads it.
#[derive(Clone)]
pub struct StreamSource {
    log: Arc<Log>,
    stream: Arc<Stream>,
    definition: Arc<StreamDefinition>,
    decoder: Arc<Decoder>,
    records: Records,
    /// The partitions this worker holds, when workers share them; all of them otherwise.
    held: Option<Arc<dyn Assignment>>,
}

/// Where a stream's records are.
#[derive(Clone)]
enum Records {
    /// The log's shards.
    Log,
    /// A Kafka topic, through the stream's shared consumer.
    #[cfg(feature = "kafka")]
    Kafka(Arc<super::kafka::Reader>),
    /// A Kinesis stream, through the stream's shared fetch.
    #[cfg(feature = "kinesis")]
    Kinesis(Arc<super::kinesis::Reader>),
}

impl StreamSource {
    /// Stream `name` of `log`, decoded by its definition.
    pub fn open(log: &Arc<Log>, name: &str) -> Result<StreamSource> {
        let stream = log.stream(name)?;
        let definition = StreamDefinition::from_log(&stream.meta().definition);
        let decoder = Decoder::new(&definition)?;
        let records = match &definition.connector {
            None => Records::Log,
            #[cfg(feature = "kafka")]
            Some(sluice_sql::Connector::Kafka(topic)) => Records::Kafka(Arc::new(
                super::kafka::Topic::reader(name, stream.id(), topic)?,
            )),
            #[cfg(feature = "kinesis")]
            Some(sluice_sql::Connector::Kinesis(source)) => Records::Kinesis(Arc::new(
                super::kinesis::Kinesis::reader(name, stream.id(), source, &log.stream_dir(name))?,
            )),
            #[allow(unreachable_patterns)]
            Some(connector) => return Err(super::not_built(name, connector)),
        };
        Ok(StreamSource {
            log: log.clone(),
            stream,
            definition: Arc::new(definition),
            decoder: Arc::new(decoder),
            records,
            held: None,
        })
    }

    /// The source restricted to the partitions `assignment` holds (none before its first
    /// assignment): what a worker sharing the stream's partitions with others reads.
    pub fn held(mut self, assignment: Arc<dyn Assignment>) -> StreamSource {
        self.held = Some(assignment);
        self
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
            Ok(now) if now.id() == self.stream.id() => Ok(()),
            _ => Err(PipelineError::InputGone(format!(
                "stream '{}' was dropped",
                self.stream.name()
            ))),
        }
    }

    /// [`Source::read`] on the calling thread (it reads files: call it where blocking is fine).
    pub fn read_blocking(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
        match &self.records {
            Records::Log => self.read_log(from, limits),
            #[cfg(feature = "kafka")]
            Records::Kafka(reader) => self.decode_fetched(&reader.read(from, limits)?),
            #[cfg(feature = "kinesis")]
            Records::Kinesis(reader) => self.decode_fetched(&reader.read(from, limits)?),
        }
    }

    fn read_log(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
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
                        origin: Origin::Log,
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

    fn bounds_blocking(&self) -> Result<BTreeMap<Partition, Bounds>> {
        let mut bounds = self.all_bounds()?;
        if let Some(assignment) = &self.held {
            let held = assignment.held().unwrap_or_default();
            bounds.retain(|p, _| held.contains(p));
        }
        Ok(bounds)
    }

    fn all_bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        match &self.records {
            Records::Log => Ok(self
                .stream
                .shards()
                .iter()
                .map(|shard| {
                    let (oldest, next) = shard.bounds();
                    (shard.id(), Bounds { oldest, next })
                })
                .collect()),
            #[cfg(feature = "kafka")]
            Records::Kafka(reader) => reader.bounds(),
            #[cfg(feature = "kinesis")]
            Records::Kinesis(reader) => reader.bounds(),
        }
    }

    /// Decodes what a reader of records elsewhere took.
    #[cfg(any(feature = "kafka", feature = "kinesis"))]
    fn decode_fetched<R: super::FetchedRecord>(
        &self,
        reads: &BTreeMap<Partition, super::Fetched<R>>,
    ) -> Result<SourceRead> {
        let records: Vec<Vec<RawRecord<'_>>> = reads
            .iter()
            .map(|(&partition, read)| read.records.iter().map(|r| r.raw(partition)).collect())
            .collect();
        let decoded = self.decoder.decode_parts(&records)?;
        let backlog = reads.values().any(|r| r.more);
        let parts = reads
            .iter()
            .zip(decoded)
            .map(|((&partition, read), decoded)| PartRead {
                partition,
                rows: decoded.rows,
                errors: decoded.errors,
                records: read.records.len(),
                next: read.next,
                gap: read.lost.map(|(first, last)| Gap {
                    partition,
                    first,
                    last,
                }),
            })
            .collect();
        Ok(SourceRead { parts, backlog })
    }
}

#[async_trait]
impl Source for StreamSource {
    fn name(&self) -> &str {
        self.stream.name()
    }

    fn id(&self) -> u64 {
        self.stream.id()
    }

    fn schema(&self) -> &SchemaRef {
        self.decoder.schema()
    }

    async fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        self.current()?;
        if matches!(self.records, Records::Log) {
            return self.bounds_blocking();
        }
        // A reader of records elsewhere takes its consumer's lock.
        let source = self.clone();
        tokio::task::spawn_blocking(move || source.bounds_blocking())
            .await
            .map_err(|e| PipelineError::Internal(e.to_string()))?
    }

    #[cfg_attr(
        not(any(feature = "kafka", feature = "kinesis")),
        allow(unused_variables)
    )]
    fn time_lag(&self, positions: &Positions) -> BTreeMap<Partition, u64> {
        match &self.records {
            Records::Log => BTreeMap::new(),
            #[cfg(feature = "kafka")]
            Records::Kafka(reader) => reader.time_lag(positions),
            #[cfg(feature = "kinesis")]
            Records::Kinesis(reader) => reader.time_lag(positions),
        }
    }

    /// Where workers share the partitions: the holder of partition 0.
    fn housekeeper(&self) -> bool {
        self.held
            .as_ref()
            .is_none_or(|assignment| assignment.held().is_some_and(|held| held.contains(&0)))
    }

    async fn read(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
        let (source, from, limits) = (self.clone(), from.clone(), limits.clone());
        tokio::task::spawn_blocking(move || source.read_blocking(&from, &limits))
            .await
            .map_err(|e| PipelineError::Internal(e.to_string()))?
    }
}
