//! Sources: where a pipeline's records come from — a set of partitions, each an ordered
//! sequence of records with positions, read decoded.
//!
//! ```text
//!  Source ── bounds(): the partitions now, each with its oldest and next position
//!         ── read(from, limits): per partition, decoded rows and error rows, the position
//!                                after them, and the range retention deleted, if any
//! ```
//!
//! A stream is a source ([`StreamSource`]: the shards of the log, the partitions of the Kafka
//! topic it reads, `kafka`, or the shards of the Kinesis stream, `kinesis`), and so is an append-only view that other views read
//! ([`UpstreamView`]: its change data feed). Change-data sources plug in here too: the
//! runtime, the exactly-once rules and the status are theirs unchanged. A source's partitions
//! may change between reads (partitions added to a topic, shards split, partitions moving
//! between workers): every read says which partitions it read, and a partition new to a
//! pipeline is read from its oldest record (`exactly_once`, rule 6).
//!
//! A read is the unit of parallel work: each partition is read and decoded apart from the
//! others (one core each, as many at once as there are cores), and a view runs the part of its
//! query below the aggregate on each partition's rows apart.

#[cfg(any(feature = "kafka", feature = "kinesis"))]
mod elsewhere;
pub mod joined;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;
#[cfg(feature = "kafka")]
pub mod membership;
#[cfg(feature = "kafka")]
mod produce;
mod stream;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use sluice_sql::{Connector, CreateStream, StreamDefinition};

pub use self::joined::Joined;
pub use self::stream::StreamSource;
pub use self::view::UpstreamView;
pub(crate) use self::view::rows_schema;
use crate::Result;
use crate::decode::error_schema;
use crate::exactly_once::{Partition, Positions};

/// Where a pipeline's records come from (see the module's documentation).
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The source's name, as SQL names it (a stream's, a view's).
    fn name(&self) -> &str;

    /// The incarnation whose positions these are: a stream's id, an upstream view's.
    fn id(&self) -> u64;

    /// The columns of the rows a read gives (a stream's declared columns, then `_shard`,
    /// `_seq`, `_ingested_at`, then the derived ones).
    fn schema(&self) -> &SchemaRef;

    /// The partitions now, each with its bounds. Fails when the source is gone (a stream
    /// dropped) or cannot be reached.
    async fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>>;

    /// Reads each partition of `limits` from its position in `from` (from its oldest record
    /// when it has none), at most its limit of records, and decodes them.
    async fn read(&self, from: &Positions, limits: &Limits) -> Result<SourceRead>;

    /// Per partition, how far the record at its position in `positions` is behind the newest
    /// record, in ms of the records' own times — where the source keeps such times at hand (a
    /// Kafka topic's timestamps); none otherwise.
    fn time_lag(&self, positions: &Positions) -> BTreeMap<Partition, u64> {
        let _ = positions;
        BTreeMap::new()
    }

    /// Whether this reader of the source keeps its pipelines' tables (compacts them): the one
    /// holding partition 0 when workers share the partitions, else always.
    fn housekeeper(&self) -> bool {
        true
    }
}

/// Which of a source's partitions this worker holds, when workers share them (a Kafka consumer
/// group's assignment: [`membership::Membership`]). A partition is held by one worker at a
/// time; one that moves is read by its new holder from its tables' positions, and a commit of
/// its old holder's is refused by the tables (`exactly_once`, rule 7).
pub trait Assignment: Send + Sync + 'static {
    /// The partitions held now; none before the first assignment.
    fn held(&self) -> Option<std::collections::BTreeSet<Partition>>;
}

/// Where a cluster keeps the records of a stream declared without a connector: a topic of its
/// own on the cluster's brokers, `<cluster>.<stream>`, created with the stream and deleted
/// with it.
#[derive(Debug, Clone)]
pub struct TopicHome {
    /// The bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The cluster's name.
    pub cluster: String,
}

/// Readies a new stream of a connector for the log: its records checked to be readable, where
/// reading starts fixed, and (a Kafka topic's) as many shards as the topic has partitions,
/// which the doors of a cluster produce into. Returns where its records come from, when not
/// from the log's doors (what those doors tell producers). Blocking: it asks the brokers.
pub fn prepare_stream(create: &mut CreateStream) -> Result<Option<String>> {
    let name = create.name.as_str();
    let Some(connector) = &mut create.definition.connector else {
        return Ok(None);
    };
    let elsewhere = connector.produce_to();
    match connector {
        #[cfg(feature = "kafka")]
        Connector::Kafka(topic) => {
            let partitions = kafka::prepare(name, topic)?;
            create.shards = partitions.clamp(1, sluice_log::MAX_SHARDS);
        }
        #[cfg(feature = "kinesis")]
        Connector::Kinesis(stream) => kinesis::prepare(name, stream)?,
        #[allow(unreachable_patterns)]
        other => return Err(not_built(name, other)),
    }
    Ok(Some(elsewhere))
}

/// A new topic for stream `stream` in `home`, with `partitions` partitions, created: the
/// connector of a cluster's stream declared without one. Blocking.
pub fn new_topic(home: &TopicHome, stream: &str, partitions: u32) -> Result<Connector> {
    #[cfg(feature = "kafka")]
    return Ok(Connector::Kafka(Box::new(produce::create_topic(
        home, stream, partitions,
    )?)));
    #[cfg(not(feature = "kafka"))]
    Err(crate::PipelineError::Unsupported(format!(
        "stream '{stream}' would read a topic of its own on {} ({partitions} partitions): this \
         Sluice was built without the 'kafka' feature",
        home.brokers
    )))
}

/// What a stream dropped, or not created after [`new_topic`], leaves to clean: the topic
/// Sluice created for it, deleted. Blocking.
pub fn retire_stream(name: &str, definition: &StreamDefinition) -> Result<()> {
    match &definition.connector {
        #[cfg(feature = "kafka")]
        Some(Connector::Kafka(topic)) => produce::delete_topic(name, topic),
        _ => Ok(()),
    }
}

/// The tail of partition `partition` of the topic `stream` reads; `None` for a stream whose
/// records the log keeps. Blocking.
pub fn topic_tail(
    stream: &sluice_log::Stream,
    partition: Partition,
) -> Result<Option<sluice_log::Tail>> {
    match StreamDefinition::from_log(&stream.meta().definition).connector {
        #[cfg(feature = "kafka")]
        Some(Connector::Kafka(topic)) => Ok(Some(kafka::tail(stream.name(), &topic, partition)?)),
        Some(other) => Err(not_built(stream.name(), &other)),
        None => Ok(None),
    }
}

/// Where the doors of a cluster's workers send appends to its streams: their Kafka topics.
pub fn forward_appends() -> Result<Arc<dyn sluice_log::Forward>> {
    #[cfg(feature = "kafka")]
    return Ok(Arc::new(produce::Producers::default()));
    #[cfg(not(feature = "kafka"))]
    Err(crate::PipelineError::Unsupported(
        "a cluster's streams are Kafka topics: this Sluice was built without the 'kafka' feature"
            .into(),
    ))
}

/// Why a stream of `connector` cannot be read by this build.
pub(crate) fn not_built(stream: &str, connector: &Connector) -> crate::PipelineError {
    crate::PipelineError::Unsupported(format!(
        "stream '{stream}' reads {}: this Sluice was built without the '{}' feature",
        connector.produce_to(),
        connector.kind()
    ))
}

/// What a reader of records elsewhere (a Kafka topic, a Kinesis stream) took from one
/// partition.
#[derive(Debug)]
pub struct Fetched<R> {
    /// The records, in order.
    pub records: Vec<Arc<R>>,
    /// The position after them (where the reader's next read starts).
    pub next: u64,
    /// Whether the reader's buffer, or the source, holds more past them.
    pub more: bool,
    /// The positions the source's retention deleted after the reader's position, before it
    /// took them: first and last.
    pub lost: Option<(u64, u64)>,
}

impl<R> Fetched<R> {
    /// Nothing, at `next`.
    pub fn nothing(next: u64) -> Fetched<R> {
        Fetched {
            records: Vec::new(),
            next,
            more: false,
            lost: None,
        }
    }
}

/// A record read from elsewhere, as the decoder takes it.
pub trait FetchedRecord {
    /// The record, read from `partition`.
    fn raw(&self, partition: Partition) -> crate::decode::RawRecord<'_>;
}

/// A source shared by a pipeline and the reads it starts ahead.
pub type SharedSource = Arc<dyn Source>;

/// Per partition, the most records a read takes.
pub type Limits = BTreeMap<Partition, usize>;

/// A partition's positions: the oldest record it holds, and the position after its newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// The position of the oldest record the partition still holds.
    pub oldest: u64,
    /// The position its next record will take: the end of what it holds.
    pub next: u64,
}

/// What a read took.
#[derive(Debug)]
pub struct SourceRead {
    /// One per partition read, in partition order.
    pub parts: Vec<PartRead>,
    /// Some partition holds more than the read took.
    pub backlog: bool,
}

/// What a read took from one partition.
#[derive(Debug)]
pub struct PartRead {
    /// The partition read.
    pub partition: Partition,
    /// The records that decoded, in the source's schema.
    pub rows: RecordBatch,
    /// The records that did not, as rows of an errors table (`decode::error_schema`).
    pub errors: RecordBatch,
    /// Records read (rows + errors).
    pub records: usize,
    /// The position after the last record read.
    pub next: u64,
    /// Records the read was asked for that retention had deleted.
    pub gap: Option<Gap>,
}

/// Records a pipeline never saw: retention deleted positions `first..=last` of a partition
/// before the pipeline took them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The partition the records were lost from.
    pub partition: Partition,
    /// The first position lost.
    pub first: u64,
    /// The last position lost.
    pub last: u64,
}

impl Gap {
    /// How many records were lost.
    pub fn records(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The reason of its row in an errors table.
    pub fn reason(&self) -> String {
        format!(
            "lost: retention deleted shard {} sequence numbers {} to {} ({} records) before \
             the pipeline took them",
            self.partition,
            self.first,
            self.last,
            self.records()
        )
    }
}

impl SourceRead {
    /// Per partition read, the position after it.
    pub fn next(&self) -> Positions {
        self.parts.iter().map(|p| (p.partition, p.next)).collect()
    }

    /// Records read, over every partition.
    pub fn records(&self) -> usize {
        self.parts.iter().map(|p| p.records).sum()
    }

    /// The gaps the read found, as rows of an errors table (at `now_ms`: see [`gap_rows`]).
    pub fn gap_rows(&self, now_ms: i64) -> Result<RecordBatch> {
        gap_rows(self.parts.iter().filter_map(|p| p.gap), now_ms)
    }
}

/// `gaps` as rows of an errors table (at `now_ms`): raw empty, the reason naming the range,
/// `_shard` the partition, `_seq` its first lost position.
pub fn gap_rows(gaps: impl IntoIterator<Item = Gap>, now_ms: i64) -> Result<RecordBatch> {
    let gaps: Vec<Gap> = gaps.into_iter().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![""; gaps.len()])),
        Arc::new(StringArray::from_iter_values(gaps.iter().map(Gap::reason))),
        Arc::new(Int32Array::from_iter_values(
            gaps.iter().map(|g| g.partition as i32),
        )),
        Arc::new(Int64Array::from_iter_values(
            gaps.iter().map(|g| g.first as i64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(vec![now_ms.saturating_mul(1000); gaps.len()])
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(error_schema(), columns)?)
}

/// Splits `budget` records among partitions with `pending` records each: evenly, and what a
/// partition does not need goes to the others (water-filling). Every partition may take at
/// least one.
pub(crate) fn shares(pending: &BTreeMap<Partition, u64>, budget: usize) -> Limits {
    let mut order: Vec<(Partition, u64)> = pending.iter().map(|(&p, &n)| (p, n)).collect();
    order.sort_by_key(|&(_, n)| n);
    let mut limits = Limits::new();
    let mut left = budget;
    let count = order.len();
    for (k, (partition, pending)) in order.into_iter().enumerate() {
        let fair = left / (count - k);
        let take = (pending.min(fair as u64) as usize).max(1);
        limits.insert(partition, take);
        left = left.saturating_sub(take);
    }
    limits
}

/// Per partition, what `bounds` holds past `from` (past the oldest record, when `from` has no
/// position for it).
pub(crate) fn pending(
    bounds: &BTreeMap<Partition, Bounds>,
    from: &Positions,
) -> BTreeMap<Partition, u64> {
    bounds
        .iter()
        .map(|(&partition, b)| {
            let at = from
                .get(&partition)
                .map_or(b.oldest, |&at| at.max(b.oldest));
            (partition, b.next.saturating_sub(at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pending: &[u64]) -> BTreeMap<Partition, u64> {
        pending
            .iter()
            .enumerate()
            .map(|(p, &n)| (p as Partition, n))
            .collect()
    }

    fn limits(limits: &Limits) -> Vec<usize> {
        limits.values().copied().collect()
    }

    #[test]
    fn a_read_shares_its_budget_evenly_and_gives_what_quiet_partitions_leave_to_busy_ones() {
        assert_eq!(
            limits(&shares(&of(&[1000, 1000, 1000, 1000]), 200)),
            [50, 50, 50, 50]
        );
        assert_eq!(
            limits(&shares(&of(&[0, 10, 1000, 5000]), 200)),
            [1, 10, 94, 95]
        );
        assert_eq!(limits(&shares(&of(&[0, 0, 0, 5000]), 200)), [1, 1, 1, 197]);
        assert_eq!(limits(&shares(&of(&[3, 2, 1, 0]), 200)), [3, 2, 1, 1]);
    }

    #[test]
    fn what_is_pending_counts_from_the_position_or_the_oldest_record() {
        let bounds = BTreeMap::from([
            (
                0,
                Bounds {
                    oldest: 0,
                    next: 10,
                },
            ),
            (
                1,
                Bounds {
                    oldest: 50,
                    next: 80,
                },
            ),
            (2, Bounds { oldest: 5, next: 9 }),
        ]);
        // Partition 1's position was deleted by retention; partition 2 is new.
        let from = Positions::from([(0, 4), (1, 20)]);
        assert_eq!(pending(&bounds, &from), of(&[6, 30, 4]));
    }

    #[test]
    fn a_gap_names_its_partition_and_exact_range() {
        let gap = Gap {
            partition: 2,
            first: 100,
            last: 4999,
        };
        assert_eq!(gap.records(), 4900);
        assert!(
            gap.reason()
                .contains("shard 2 sequence numbers 100 to 4999")
        );
    }
}
