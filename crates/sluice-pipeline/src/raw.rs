//! The raw-table pipeline of a stream: its records, decoded, into the lake table of the same
//! name, and the records that do not decode into `<stream>_errors`.
//!
//! ```text
//!  shard 0..n ──read from the lower of the two tables' positions──► decode ──┬─► <stream>
//!                                                                            └─► <stream>_errors
//! ```
//!
//! Exactly once: each table records, in the same Delta commit as its rows, the next sequence
//! number of every shard (`txn` app id `shard-<n>`). A round reads each shard from the lower of
//! the two tables' positions and gives each table only the rows at or past its own, so a crash
//! between the two commits (or before either) repeats nothing and loses nothing.
//!
//! Upkeep: one data file a commit adds up, so every `compact_every` commits the pipeline
//! compacts its tables (Delta OPTIMIZE) between two rounds — it is their only writer, so the
//! compaction races none of its appends. Delta's post-commit hook checkpoints the transaction
//! log every 100 versions.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type};
use sluice_lake::{Lake, LakeTable};
use sluice_log::Stream;
use sluice_sql::StreamDefinition;
use tokio::sync::watch;

use crate::decode::{self, Decoded, Decoder, RawRecord};
use crate::{PipelineError, Result};

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

/// The name of a stream's errors table.
pub fn errors_table(stream: &str) -> String {
    format!("{stream}{ERRORS_SUFFIX}")
}

/// The stream an errors table's name belongs to, if it is one's (`ticks_errors` → `ticks`).
pub fn errors_table_stream(table: &str) -> Option<&str> {
    table.strip_suffix(ERRORS_SUFFIX)
}

const ERRORS_SUFFIX: &str = "_errors";

/// The table property naming the stream (by its id, which no other stream ever has) whose
/// pipeline writes the table.
const OWNER: &str = "sluice.stream.id";

/// Opens or creates table `name` for the pipeline `id` (of a stream or a view: the table
/// property `owner_key` holds the id; `more` properties go into a new table too). A table another incarnation of the pipeline left (a crash
/// before its tables were dropped) is dropped and made anew; a table no pipeline made (`CREATE
/// TABLE … AS`) is the user's, and refused.
pub(crate) async fn own_table(
    lake: &Lake,
    name: &str,
    schema: &arrow::datatypes::SchemaRef,
    partition_by: &[String],
    (owner_key, id): (&str, u64),
    more: &[(&str, &str)],
) -> Result<LakeTable> {
    let owner = id.to_string();
    let mut properties = vec![(owner_key, owner.as_str())];
    properties.extend_from_slice(more);
    let table = lake
        .open_or_create(name, schema, partition_by, &properties)
        .await?;
    match table.property(owner_key) {
        Some(id) if id == owner => Ok(table),
        Some(_) => {
            lake.drop_table(name).await?;
            Ok(lake
                .open_or_create(name, schema, partition_by, &properties)
                .await?)
        }
        None => Err(PipelineError::Unsupported(format!(
            "table '{name}' exists and was not made by this stream or view: drop it (DROP TABLE) \
             or choose another name"
        ))),
    }
}

/// Drops the tables of the stream `stream_id` named `stream`: only those it made, so that a
/// user's table of the same name stays.
pub async fn drop_tables(lake: &Lake, stream: &str, stream_id: u64) -> Result<()> {
    drop_owned(lake, stream, OWNER, stream_id).await
}

/// Drops table `name` and its errors table if the pipeline `id` made them (its id under the
/// table property `owner_key`).
pub(crate) async fn drop_owned(lake: &Lake, name: &str, owner_key: &str, id: u64) -> Result<()> {
    for name in [name.to_string(), errors_table(name)] {
        let owned = match lake.open(&name).await {
            Ok(table) => table.property(owner_key) == Some(id.to_string()),
            Err(sluice_lake::Error::TableNotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if owned {
            lake.drop_table(&name).await?;
        }
    }
    Ok(())
}

fn app_id(shard: usize) -> String {
    format!("shard-{shard}")
}

/// A stream's raw and errors tables, and how far each has taken the log.
pub struct RawPipeline {
    stream: Arc<Stream>,
    decoder: Arc<Decoder>,
    config: RawConfig,
    rows: LakeTable,
    errors: LakeTable,
    /// Per shard: the next sequence number each table has not yet taken.
    row_positions: Vec<u64>,
    error_positions: Vec<u64>,
    health: Arc<Health>,
}

/// How a pipeline's rounds are going, for status: the last failure, while they fail.
#[derive(Debug, Default)]
pub struct Health {
    last_error: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// The error of the last round, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("health lock").clone()
    }

    fn set(&self, error: Option<String>) {
        *self.last_error.lock().expect("health lock") = error;
    }
}

/// The longest wait between failed rounds: failures (an unreachable S3, a full disk) back off,
/// doubling from the commit interval up to this.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub records: usize,
    pub rows: usize,
    pub errors: usize,
    /// Some shard had more than the round could take.
    pub backlog: bool,
    /// The round committed (rows, errors or positions).
    pub committed: bool,
}

impl RawPipeline {
    /// Opens (or creates) the stream's tables and resumes from the positions they recorded.
    pub async fn open(stream: Arc<Stream>, lake: &Lake, config: RawConfig) -> Result<RawPipeline> {
        let definition = StreamDefinition::from_log(&stream.meta().definition);
        let decoder = Arc::new(Decoder::new(&definition)?);
        let partition_by: Vec<String> = definition
            .partition_by
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let id = stream.meta().id;
        let rows = own_table(
            lake,
            stream.name(),
            decoder.schema(),
            &partition_by,
            (OWNER, id),
            &[],
        )
        .await?;
        let errors = own_table(
            lake,
            &errors_table(stream.name()),
            &decode::error_schema(),
            &[],
            (OWNER, id),
            &[],
        )
        .await?;
        let row_positions = positions(&rows, stream.shards().len()).await?;
        let error_positions = positions(&errors, stream.shards().len()).await?;
        Ok(RawPipeline {
            stream,
            decoder,
            config,
            rows,
            errors,
            row_positions,
            error_positions,
            health: Arc::default(),
        })
    }

    /// How its rounds are going, readable while it runs.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn rows_table(&self) -> &LakeTable {
        &self.rows
    }

    /// Takes what the log holds past the tables' positions (within the per-round limits),
    /// decodes it and commits both tables.
    pub async fn round(&mut self) -> Result<Round> {
        let read = joined(self.read_from(self.next_read()).await)?;
        self.commit(read).await
    }

    /// Per shard, where the next read starts: the lower of the two tables' positions.
    fn next_read(&self) -> Vec<u64> {
        self.row_positions
            .iter()
            .zip(&self.error_positions)
            .map(|(r, e)| *r.min(e))
            .collect()
    }

    /// Reads and decodes the log from `from`, on the blocking pool.
    fn read_from(&self, from: Vec<u64>) -> tokio::task::JoinHandle<Result<LogRead>> {
        let (stream, decoder) = (self.stream.clone(), self.decoder.clone());
        let pending: Vec<u64> = stream
            .shards()
            .iter()
            .zip(&from)
            .map(|(shard, &from)| shard.bounds().1.saturating_sub(from))
            .collect();
        let limits = shares(&pending, self.config.max_records_per_round);
        tokio::task::spawn_blocking(move || read(&stream, &decoder, &from, &limits, usize::MAX))
    }

    /// Commits what `read` decoded: each table the rows at or past its own positions, with the
    /// positions after them.
    async fn commit(&mut self, read: LogRead) -> Result<Round> {
        let started = std::time::Instant::now();
        let LogRead {
            decoded,
            next,
            records,
            backlog,
        } = read;
        let rows = past(&decoded.rows, &self.row_positions)?;
        let errors = past(&decoded.errors, &self.error_positions)?;
        let round = Round {
            records,
            rows: rows.num_rows(),
            errors: errors.num_rows(),
            backlog,
            committed: next != self.row_positions || next != self.error_positions,
        };
        // The two tables commit at once: each records its own positions, so either may land
        // without the other (as after a crash between them).
        let versions = as_versions(&next);
        let (rows_table, errors_table) = (&mut self.rows, &mut self.errors);
        let (rows_committed, errors_committed) = tokio::join!(
            async {
                match next != self.row_positions {
                    true => rows_table.append(vec![rows], versions.clone()).await,
                    false => Ok(()),
                }
            },
            async {
                match next != self.error_positions {
                    true => errors_table.append(vec![errors], versions.clone()).await,
                    false => Ok(()),
                }
            },
        );
        if rows_committed.is_ok() {
            self.row_positions = next.clone();
        }
        if errors_committed.is_ok() {
            self.error_positions = next;
        }
        rows_committed?;
        errors_committed?;
        tracing::debug!(
            stream = self.stream.name(),
            records,
            commit_ms = started.elapsed().as_millis() as u64,
            "round committed"
        );
        Ok(round)
    }

    /// Compacts both tables' small files (see [`LakeTable::compact`]); returns the files removed.
    pub async fn compact(&mut self) -> Result<u64> {
        Ok(self.rows.compact().await?.files_removed + self.errors.compact().await?.files_removed)
    }

    /// Runs a round every commit interval (at once after a round that left a backlog) until
    /// `stop` turns true. A failed round is logged, shown in [`Health`], counted in
    /// `sluice_pipeline_failures_total`, and retried after a backoff that doubles up to
    /// [`MAX_BACKOFF`]: the positions in the tables make the retry exact.
    ///
    /// While a backlog lasts, the next round's read and decode run during this round's commit
    /// (one core decodes while the other writes Parquet). The read ahead starts where this
    /// round ends; it is used only if the tables' positions are there when the commit is done,
    /// and dropped otherwise (after a failure).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut rounds = crate::Rounds::every(self.config.commit_interval);
        let mut backlog = false;
        let mut commits = 0;
        let mut ahead: Option<(Vec<u64>, tokio::task::JoinHandle<Result<LogRead>>)> = None;
        let mut backoff = self.config.commit_interval;
        while rounds.next(backlog, &mut stop).await {
            let from = self.next_read();
            let read = joined(match ahead.take() {
                Some((start, reading)) if start == from => reading.await,
                _ => self.read_from(from).await,
            });
            let committed = match read {
                Ok(read) => {
                    if read.backlog {
                        ahead = Some((read.next.clone(), self.read_from(read.next.clone())));
                    }
                    self.commit(read).await
                }
                Err(e) => Err(e),
            };
            backlog = match committed {
                Ok(round) => {
                    self.health.set(None);
                    backoff = self.config.commit_interval;
                    commits += usize::from(round.committed);
                    if commits >= self.config.compact_every {
                        commits = 0;
                        // Between rounds: the pipeline is its tables' only writer, so the
                        // compaction commit races no append of its own.
                        if let Err(e) = self.compact().await {
                            tracing::warn!(stream = self.stream.name(), error = %e, "compaction failed");
                            let _ = self.reopen().await;
                        }
                    }
                    round.backlog
                }
                Err(e) => {
                    tracing::error!(stream = self.stream.name(), error = %e, retry_in = ?backoff, "raw table commit failed");
                    self.health.set(Some(e.to_string()));
                    metrics::counter!("sluice_pipeline_failures_total", "stream" => self.stream.name().to_string())
                        .increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if let Err(e) = self.reopen().await {
                        tracing::error!(stream = self.stream.name(), error = %e, "cannot reload the raw tables");
                        self.health.set(Some(e.to_string()));
                    }
                    false
                }
            };
        }
    }

    /// Reloads the tables and their positions after a failure, whatever it left behind.
    async fn reopen(&mut self) -> Result<()> {
        self.rows.refresh().await?;
        self.errors.refresh().await?;
        let shards = self.stream.shards().len();
        self.row_positions = positions(&self.rows, shards).await?;
        self.error_positions = positions(&self.errors, shards).await?;
        Ok(())
    }
}

/// The result of a read on the blocking pool.
fn joined(read: Result<Result<LogRead>, tokio::task::JoinError>) -> Result<LogRead> {
    read.map_err(|e| PipelineError::Internal(e.to_string()))?
}

/// What [`read`] took from the log.
#[derive(Debug)]
pub struct LogRead {
    pub decoded: Decoded,
    /// Per shard: the sequence number after the last record read.
    pub next: Vec<u64>,
    pub records: usize,
    /// Some shard holds more than the limits let through.
    pub backlog: bool,
}

/// Splits `budget` records among shards with `pending` records each: evenly, and what a shard
/// does not need goes to the others (water-filling). Every shard may take at least one.
pub(crate) fn shares(pending: &[u64], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pending.len()).collect();
    order.sort_by_key(|&i| pending[i]);
    let mut limits = vec![1; pending.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (pending.len() - k);
        let take = (pending[i].min(fair as u64) as usize).max(1);
        limits[i] = take;
        left = left.saturating_sub(take);
    }
    limits
}

/// Reads every shard of `stream` from its position in `from` — at most `max_records[i]`
/// records of shard `i` and `max_bytes` bytes a shard — and decodes what it read. Blocking
/// (disk reads).
pub fn read(
    stream: &Stream,
    decoder: &Decoder,
    from: &[u64],
    max_records: &[usize],
    max_bytes: usize,
) -> Result<LogRead> {
    let mut read = Vec::new();
    let mut next = Vec::with_capacity(from.len());
    let mut backlog = false;
    for ((shard, &from), &max_records) in stream.shards().iter().zip(from).zip(max_records) {
        let r = shard.read(from, max_records, max_bytes)?;
        backlog |= r.next_seq < r.end_seq;
        next.push(r.next_seq);
        read.push((shard.id(), r.records));
    }
    let raw: Vec<RawRecord<'_>> = read
        .iter()
        .flat_map(|(shard, records)| {
            records.iter().map(|r| RawRecord {
                shard: *shard,
                seq: r.seq,
                append_ms: r.append_ms,
                data: &r.data,
            })
        })
        .collect();
    Ok(LogRead {
        decoded: decoder.decode_parallel(&raw)?,
        next,
        records: raw.len(),
        backlog,
    })
}

/// Per shard, the next sequence number `table` has not taken: the positions its last commit
/// recorded (0 for a shard it never recorded).
pub async fn positions(table: &LakeTable, shards: usize) -> Result<Vec<u64>> {
    let mut positions = Vec::with_capacity(shards);
    for shard in 0..shards {
        positions.push(
            table
                .position(&app_id(shard))
                .await?
                .map_or(0, |v| v.max(0) as u64),
        );
    }
    Ok(positions)
}

pub(crate) fn as_versions(next: &[u64]) -> Vec<(String, i64)> {
    next.iter()
        .enumerate()
        .map(|(shard, &seq)| (app_id(shard), seq as i64))
        .collect()
}

/// The rows whose `_seq` is at or past their shard's position.
pub fn past(batch: &RecordBatch, positions: &[u64]) -> Result<RecordBatch> {
    let shard = batch
        .column_by_name(decode::SHARD)
        .map(|c| c.as_primitive::<Int32Type>());
    let seq = batch
        .column_by_name(decode::SEQ)
        .map(|c| c.as_primitive::<Int64Type>());
    let (Some(shard), Some(seq)) = (shard, seq) else {
        return Err(PipelineError::Internal(
            "a decoded batch lacks _shard or _seq".into(),
        ));
    };
    let keep: BooleanArray = shard
        .values()
        .iter()
        .zip(seq.values())
        .map(|(&s, &q)| Some(q as u64 >= positions[s as usize]))
        .collect();
    if keep.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, &keep)?)
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn a_round_shares_its_budget_evenly_and_gives_what_quiet_shards_leave_to_busy_ones() {
        assert_eq!(shares(&[1000, 1000, 1000, 1000], 200), [50, 50, 50, 50]);
        assert_eq!(shares(&[0, 10, 1000, 5000], 200), [1, 10, 94, 95]);
        assert_eq!(shares(&[0, 0, 0, 5000], 200), [1, 1, 1, 197]);
        assert_eq!(shares(&[3, 2, 1, 0], 200), [3, 2, 1, 1]);
    }
}
