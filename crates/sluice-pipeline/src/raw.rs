//! The raw-table pipeline of a stream: its records, decoded, into the lake table of the same
//! name, and the records that do not decode into `<stream>_errors`.
//!
//! ```text
//!  shard 0..n ──read from the lower of the two tables' positions──► decode ──┬─► <stream>
//!                                                                            └─► <stream>_errors
//! ```
//!
//! Exactly once as `exactly_once` says: each table records its own positions in the commit
//! that adds its rows; a round reads from the lower of the two and gives each table only the
//! rows at or past its own, so a crash between the two commits (or before either) repeats
//! nothing and loses nothing. Records retention deleted before the pipeline took them are a
//! row of the errors table naming the lost range (rule 6). A partition that had records waiting
//! when the pipeline was opened (it moved here from another worker, or the server restarted)
//! says at its first commit, soon after, how long it went without one, since the last commit
//! of its position (`txn.lastUpdated`): the failover time of the status and metrics.
//!
//! A change stream (`format = 'dynamodb' | 'debezium'`) has three tables: its rows are its
//! history, `<stream>_changes` (repeats dropped: [`Repeats`]), and a third table, the mirror,
//! `<stream>`, merges the newest change of each key ([`Mirror`]), with positions of its own.
//!
//! Upkeep: one data file a commit adds up, so every `compact_every` commits the runtime
//! compacts the tables (Delta OPTIMIZE) between two rounds. Delta's post-commit hook
//! checkpoints the transaction log every 100 versions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use sluice_lake::{Lake, LakeTable};

use crate::decode::error_schema;
use crate::exactly_once::{
    self, Partition, Positions, Writer, advanced, committed, new_gaps, past,
};
use crate::mirror::{Mirror, Repeats, changes_table};
use crate::runtime::{Cadence, Kind, Pipeline, Resumed, Round};
use crate::source::{
    Bounds, Gap, Limits, SharedSource, Source, SourceRead, StreamSource, pending, shares,
};
use crate::{Result, errors_table};

/// How a raw-table pipeline runs.
#[derive(Debug, Clone)]
pub struct RawConfig {
    /// How often the pipeline commits what the log received since the last commit.
    pub commit_interval: Duration,
    /// Most records one round takes, from all shards: bounds the pipeline's memory. Shared
    /// evenly among the shards that have records, so that a hot shard gets what quiet ones
    /// leave. A round that reaches it is followed at once by the next, so a backlog is worked
    /// off without waiting.
    pub max_records_per_round: usize,
    /// Compact the tables' small files (one a commit) after this many commits.
    pub compact_every: usize,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(1),
            max_records_per_round: 200_000,
            compact_every: 100,
        }
    }
}

impl RawConfig {
    /// How often the runtime runs its rounds and compacts.
    pub fn cadence(&self) -> Cadence {
        Cadence {
            interval: self.commit_interval,
            compact_every: self.compact_every,
        }
    }
}

/// A stream's raw and errors tables, and how far each has taken the log.
pub struct RawPipeline {
    source: SharedSource,
    config: RawConfig,
    rows: LakeTable,
    errors: LakeTable,
    row_positions: Positions,
    error_positions: Positions,
    /// A change stream's mirror, and the history's memory of its events.
    change: Option<(Mirror, Repeats)>,
    /// The source's partitions when it was opened: its positions are of these.
    partitions: BTreeSet<Partition>,
    /// How long its partitions went without a commit when it was opened.
    resumed: Resumed,
}

impl RawPipeline {
    /// Opens (or creates) the tables of `source`'s stream and resumes from the positions they
    /// recorded.
    pub async fn open(source: StreamSource, lake: &Lake, config: RawConfig) -> Result<RawPipeline> {
        let name = source.name().to_string();
        let writer = Writer::Stream(source.id());
        let partition_by: Vec<String> = source
            .definition()
            .partition_by
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let is_change = source.definition().format.is_change();
        let rows_name = match is_change {
            true => changes_table(&name),
            false => name.clone(),
        };
        let rows = exactly_once::own_table(
            lake,
            &rows_name,
            source.schema(),
            &partition_by,
            writer,
            &[],
        )
        .await?;
        let errors = exactly_once::own_table(
            lake,
            &errors_table(&name),
            &error_schema(),
            &[],
            writer,
            &[],
        )
        .await?;
        behind(&rows, source.schema())?;
        let partitions: Vec<Partition> = source.bounds().await?.into_keys().collect();
        let row_positions = committed(&rows, partitions.iter().copied()).await?;
        let resumed = exactly_once::written(&rows, partitions.iter().copied()).await?;
        let error_positions = committed(&errors, partitions.iter().copied()).await?;
        let change = match is_change {
            true => {
                let history = (&rows, source.schema());
                let definition = source.definition();
                let mirror =
                    Mirror::open(lake, &name, definition, history, &partitions, writer).await?;
                Some((mirror, Repeats::of(&rows).await?))
            }
            false => None,
        };
        Ok(RawPipeline {
            source: Arc::new(source),
            config,
            rows,
            errors,
            row_positions,
            error_positions,
            change,
            partitions: partitions.into_iter().collect(),
            resumed: Resumed::new(resumed),
        })
    }

    /// The stream's table of rows (a change stream's history).
    pub fn rows_table(&self) -> &LakeTable {
        &self.rows
    }
}

#[async_trait]
impl Pipeline for RawPipeline {
    fn source(&self) -> &SharedSource {
        &self.source
    }

    fn kind(&self) -> Kind {
        Kind::Raw
    }

    fn partitions(&self) -> Option<&BTreeSet<Partition>> {
        Some(&self.partitions)
    }

    fn next_read(&self) -> Positions {
        let tables = exactly_once::lowest(&self.row_positions, &self.error_positions);
        match &self.change {
            Some((mirror, _)) => exactly_once::lowest(&tables, mirror.positions()),
            None => tables,
        }
    }

    fn limits(&self, from: &Positions, bounds: &BTreeMap<Partition, Bounds>) -> Limits {
        shares(&pending(bounds, from), self.config.max_records_per_round)
    }

    async fn process(&mut self, read: SourceRead) -> Result<Round> {
        behind(&self.rows, self.source.schema())?;
        let started = std::time::Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut rows = Vec::with_capacity(read.parts.len());
        let mut errors = vec![past(&read.gap_rows(now_ms)?, &self.error_positions)?];
        // A change stream's repeats are neither the history's nor the mirror's.
        let read_rows: Vec<RecordBatch> = read.parts.iter().map(|p| p.rows.clone()).collect();
        let read_rows = match &self.change {
            Some((_, repeats)) => repeats.firsts(&read_rows)?,
            None => read_rows,
        };
        for (part, part_rows) in read.parts.iter().zip(&read_rows) {
            rows.push(past(part_rows, &self.row_positions)?);
            errors.push(past(&part.errors, &self.error_positions)?);
        }
        let row_next = advanced(&self.row_positions, &read.next());
        let error_next = advanced(&self.error_positions, &read.next());
        let mirror_next = self.change.as_ref().and_then(|(mirror, _)| {
            let next = advanced(mirror.positions(), &read.next());
            (next != *mirror.positions()).then_some(next)
        });
        let gaps: Vec<Gap> = new_gaps(&read, &self.error_positions).collect();
        if !gaps.is_empty() {
            tracing::warn!(
                stream = self.source.name(),
                ?gaps,
                "retention deleted records before the pipeline took them"
            );
        }
        let mut round = Round {
            records: read.records(),
            rows: rows.iter().map(|b| b.num_rows()).sum(),
            errors: errors.iter().map(|b| b.num_rows()).sum(),
            lost: gaps.iter().map(Gap::records).sum(),
            gap: gaps.last().copied(),
            backlog: read.backlog,
            committed: row_next != self.row_positions
                || error_next != self.error_positions
                || mirror_next.is_some(),
            resumed_since_ms: None,
        };
        // The tables commit at once: each records its own positions, so any may land without
        // the others (as after a crash between them).
        let (rows_table, errors_table) = (&mut self.rows, &mut self.errors);
        let (rows_from, errors_from) = (&self.row_positions, &self.error_positions);
        let (rows_moved, errors_moved) = (
            row_next != self.row_positions,
            error_next != self.error_positions,
        );
        let history = rows.clone();
        let (mirror, repeats) = match &mut self.change {
            Some((mirror, repeats)) => (Some(mirror), Some(repeats)),
            None => (None, None),
        };
        let (rows_committed, errors_committed, mirror_committed) = tokio::join!(
            async {
                // Tests fail the commit of the rows here, as a crash before it would.
                fail::fail_point!("raw::rows", |_| Err(crate::PipelineError::Unavailable(
                    "injected failure of the rows' commit".into()
                )));
                match rows_moved {
                    true => exactly_once::append(rows_table, rows, rows_from, &row_next).await,
                    false => Ok(()),
                }
            },
            async {
                match errors_moved {
                    true => {
                        exactly_once::append(errors_table, errors, errors_from, &error_next).await
                    }
                    false => Ok(()),
                }
            },
            async {
                match (mirror, mirror_next) {
                    (Some(mirror), Some(next)) => mirror.apply(&read_rows, next).await.map(drop),
                    _ => Ok(()),
                }
            },
        );
        if rows_committed.is_ok() {
            round.resumed_since_ms = self.resumed.committed(&self.row_positions, &row_next);
            self.row_positions = row_next;
            if let Some(repeats) = repeats {
                history.iter().try_for_each(|b| repeats.remember(b))?;
            }
        }
        if errors_committed.is_ok() {
            self.error_positions = error_next;
        }
        rows_committed?;
        errors_committed?;
        mirror_committed?;
        tracing::debug!(
            stream = self.source.name(),
            records = round.records,
            commit_ms = started.elapsed().as_millis() as u64,
            "round committed"
        );
        Ok(round)
    }

    async fn compact(&mut self) -> Result<()> {
        self.rows.compact().await?;
        self.errors.compact().await?;
        if let Some((mirror, _)) = &mut self.change {
            mirror.compact().await?;
        }
        Ok(())
    }
}

/// The tables a stream's pipeline may write: its rows (a change stream's mirror), its errors, a
/// change stream's history.
fn tables_of(stream: &str) -> [String; 3] {
    [
        stream.to_string(),
        errors_table(stream),
        changes_table(stream),
    ]
}

/// Drops the tables of the stream `stream_id` named `stream` (a change stream's history too):
/// only those it made, so that a user's table of the same name stays.
pub async fn drop_tables(lake: &Lake, stream: &str, stream_id: u64) -> Result<()> {
    exactly_once::drop_owned(lake, &tables_of(stream), Writer::Stream(stream_id)).await
}

/// Refuses to write `table` with rows of `schema` when the table has a column they lack: the
/// stream's definition gained it on another worker of the cluster (a source's column added),
/// and this one has not followed yet — its rows would drop the column's values. Once it has,
/// the pipeline is opened again with it.
fn behind(table: &LakeTable, schema: &arrow::datatypes::Schema) -> Result<()> {
    let columns = table.arrow_schema()?;
    match columns
        .fields()
        .iter()
        .find(|f| schema.field_with_name(f.name()).is_err())
    {
        Some(column) => Err(crate::PipelineError::Unavailable(format!(
            "table '{}' has column '{}', which the stream's definition on this worker lacks yet",
            table.name(),
            column.name()
        ))),
        None => Ok(()),
    }
}

/// Where every table of the stream `stream_id` named `stream` has taken its partition
/// `partition` to, as the lake records it (`None` before each has taken some): what whichever
/// worker holds the partition has committed.
pub async fn taken(
    lake: &Lake,
    stream: &str,
    stream_id: u64,
    partition: Partition,
) -> Result<Option<u64>> {
    let tables = exactly_once::owned(lake, &tables_of(stream), Writer::Stream(stream_id)).await?;
    let mut least = None;
    for table in &tables {
        let Some(&taken) = committed(table, [partition]).await?.get(&partition) else {
            return Ok(None);
        };
        least = Some(least.map_or(taken, |l: u64| l.min(taken)));
    }
    Ok(least)
}
