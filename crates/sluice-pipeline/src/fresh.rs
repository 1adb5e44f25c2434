//! Fresh tables: a stream's raw table (or errors table) as its committed Delta snapshot plus
//! the log's tail past the positions that snapshot recorded.
//!
//! ```text
//!  snapshot v (pinned) ──► rows committed up to positions p(v) ─┐
//!                                                               ├─► union ──► the query
//!  log, every shard from p(v) to its end ──► decode ────────────┘
//! ```
//!
//! Invariant: the positions come from the very snapshot the scan reads, so each acknowledged
//! record appears exactly once — in the snapshot if the pipeline committed it, else in the
//! tail — however the pipeline's commits interleave with the query. (The positions and the
//! reading are the pipeline's own, `exactly_once` and [`StreamSource`]: the query engine asks for
//! a fresh table and knows nothing of them.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use sluice_lake::LakeTable;
use sluice_log::Log;

use crate::exactly_once::{Partition, Positions, committed, past};
use crate::source::{Source, StreamSource};

/// The most records of one shard held as the decoded tail of a table. Past it (only when a
/// pipeline has fallen far behind) queries see the table up to that much.
const MAX_TAIL_RECORDS: u64 = 500_000;

/// Which of a stream's two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stream's table: its decoded records.
    Rows,
    /// `<stream>_errors`: the records that did not decode.
    Errors,
}

/// The decoded tails of streams' tables, kept between queries so that each query decodes only
/// what the log received since the one before. Keyed by table name.
#[derive(Debug, Default)]
pub struct Tails {
    tables: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Tail>>>>,
}

/// One table's decoded tail: per shard, the records from `start` to `next` (exclusive), in the
/// committed table's schema (so that a query only clones them).
#[derive(Debug, Default)]
struct Tail {
    /// The stream incarnation the tail belongs to.
    stream_id: u64,
    schema: Option<SchemaRef>,
    start: Positions,
    next: Positions,
    batches: Vec<RecordBatch>,
}

impl Tails {
    /// `table` (the `side` table of stream `stream` of `log`) with the log's tail past its
    /// snapshot's positions.
    pub async fn fresh_table(
        &self,
        table: &LakeTable,
        log: &Arc<Log>,
        stream: &str,
        side: Side,
    ) -> Result<Arc<dyn TableProvider>> {
        let committed = table.delta().table_provider().await?;
        // A stream whose records cannot be decoded has no raw pipeline, hence no tail.
        let Ok(source) = StreamSource::open(log, stream) else {
            return Ok(committed);
        };
        let bounds = source.bounds().await.map_err(external)?;
        let recorded = committed_positions(table, bounds.keys().copied()).await?;
        // Explicit per shard: a shard the table has not recorded starts at its oldest record.
        let positions: Positions = bounds
            .iter()
            .map(|(&p, b)| (p, recorded.get(&p).copied().unwrap_or(b.oldest)))
            .collect();
        let tail = self.tail(table.name());
        let mut tail = tail.lock().await;
        tail.advance(source, side, &committed.schema(), &positions)
            .await?;
        let batches = tail.batches.clone();
        if batches.is_empty() {
            return Ok(committed);
        }
        Ok(Arc::new(FreshTable {
            committed,
            tail: batches,
        }))
    }

    fn tail(&self, table: &str) -> Arc<tokio::sync::Mutex<Tail>> {
        let mut tables = self.tables.lock().expect("tails lock");
        tables.entry(table.to_string()).or_default().clone()
    }
}

impl Tail {
    /// Moves the tail to start at `positions` (dropping what a commit has taken) and to end at
    /// the log's end, decoding only what was not decoded before.
    async fn advance(
        &mut self,
        source: StreamSource,
        side: Side,
        schema: &SchemaRef,
        positions: &Positions,
    ) -> Result<()> {
        let behind = positions
            .iter()
            .any(|(p, at)| self.start.get(p).is_some_and(|s| at < s));
        let same_shards = positions.keys().eq(self.start.keys());
        if self.stream_id != source.id()
            || self.schema.as_ref() != Some(schema)
            || !same_shards
            || behind
        {
            // A new stream, or a query of an older snapshot than the tail's start: start over.
            *self = Tail {
                stream_id: source.id(),
                schema: Some(schema.clone()),
                start: positions.clone(),
                next: positions.clone(),
                batches: Vec::new(),
            };
        } else if *positions != self.start {
            self.batches = std::mem::take(&mut self.batches)
                .iter()
                .map(|b| past(b, positions))
                .filter(|b| !matches!(b, Ok(b) if b.num_rows() == 0))
                .collect::<Result<_, _>>()
                .map_err(external)?;
            self.start = positions.clone();
            for (p, next) in self.next.iter_mut() {
                *next = (*next).max(positions.get(p).copied().unwrap_or(0));
            }
        }
        let held = self
            .next
            .iter()
            .map(|(p, n)| n - self.start.get(p).copied().unwrap_or(*n))
            .max()
            .unwrap_or(0);
        let room = MAX_TAIL_RECORDS.saturating_sub(held) as usize;
        if room == 0 {
            return Ok(());
        }
        let from = self.next.clone();
        let limits: BTreeMap<Partition, usize> = from.keys().map(|&p| (p, room)).collect();
        let read = tokio::task::spawn_blocking(move || source.read_blocking(&from, &limits))
            .await
            .map_err(external)?
            .map_err(external)?;
        self.next.extend(read.next());
        for part in read.parts {
            let batch = match side {
                Side::Rows => part.rows,
                Side::Errors => part.errors,
            };
            if batch.num_rows() > 0 {
                self.batches.push(conform(&batch, schema)?);
            }
        }
        Ok(())
    }
}

/// The positions `table`'s snapshot recorded, as DataFusion's error.
async fn committed_positions(
    table: &LakeTable,
    partitions: impl IntoIterator<Item = Partition>,
) -> Result<Positions> {
    committed(table, partitions).await.map_err(external)
}

fn external(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DataFusionError {
    DataFusionError::External(e.into())
}

/// `batch` with the columns of `schema`, by name, in its order and types (the Delta scan may
/// read strings as views and puts partition columns last).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                DataFusionError::Internal(format!("the log's tail lacks column {}", field.name()))
            })?;
            Ok(cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A committed snapshot and the decoded tail after it, scanned as one table.
#[derive(Debug)]
struct FreshTable {
    committed: Arc<dyn TableProvider>,
    tail: Vec<RecordBatch>,
}

#[async_trait]
impl TableProvider for FreshTable {
    fn schema(&self) -> SchemaRef {
        self.committed.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// The snapshot's scan may use the filters to skip files, but the tail is not filtered:
    /// DataFusion filters the union again.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(self
            .committed
            .supports_filters_pushdown(filters)?
            .into_iter()
            .map(|p| match p {
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                p => p,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let committed = self
            .committed
            .scan(state, projection, filters, limit)
            .await?;
        let tail = MemorySourceConfig::try_new_exec(
            std::slice::from_ref(&self.tail),
            self.schema(),
            projection.cloned(),
        )?;
        UnionExec::try_new(vec![committed, tail])
    }
}
