//! One Delta table of the lake ([`LakeTable`]): appends and upserts that record their positions,
//! the rows commits added (change data feed), statistics, compaction and vacuum.
//!
//! Invariants this module keeps:
//!
//! - **Rows and positions in one commit.** [`LakeTable::append`] and [`LakeTable::upsert`] write
//!   the rows and the writer's positions (`txn` actions: application id → version) in the same
//!   Delta commit, so that after a crash either both are in the table or neither is. A commit of
//!   positions alone (no rows) adds no data file.
//! - **A position is what the newest commit recording it said.** A handle caches the positions
//!   of the commits it has read, oldest first, so that a newer commit's replaces an older one's;
//!   past a hundred commits to catch up it reads only the newest. The cache is only a shortcut:
//!   [`LakeTable::position`] asks the log (and its checkpoints) for any application id it does
//!   not hold, so every answer is the log's. Each `txn` carries when it was written
//!   (`lastUpdated`), read back by [`LakeTable::positions_written`].
//! - **Maintenance changes no row and no position.** [`LakeTable::compact`] rewrites files in a
//!   commit that changes no data (the change data feed shows none) and records no position, so
//!   those recorded before stand; [`LakeTable::vacuum`] deletes only files the current version
//!   does not read.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::Transaction;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};

use crate::{Error, Result};

/// What a compaction did: the small files it replaced and the larger ones it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Files the compaction's commit removed (they stay on the store until vacuumed).
    pub files_removed: u64,
    /// Files it wrote in their place.
    pub files_added: u64,
}

/// What a table's current version holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    /// The version described (`None` for a table without commits).
    pub version: Option<u64>,
    /// Data files.
    pub files: usize,
    /// Their size, in bytes.
    pub bytes: u64,
    /// Rows, as the files' statistics count them (Sluice always writes them).
    pub rows: u64,
}

/// How [`LakeTable::upsert`] applies its rows.
#[derive(Debug, Clone, Copy)]
pub struct Upsert<'a> {
    /// The columns that name a row.
    pub keys: &'a [String],
    /// The rows' boolean column flagging a row that deletes its key's.
    pub delete: &'a str,
    /// A column ordering a key's rows: a row whose value is below the table's row's changes
    /// nothing (a late change). `None`: every row applies.
    pub newer: Option<&'a str>,
    /// The rows' text column listing, as a JSON array, the columns a row leaves as the table
    /// has them (values its source did not send). `None`: a row sets every column.
    pub kept: Option<&'a str>,
}

impl<'a> Upsert<'a> {
    /// Every row applies, and sets every column.
    pub fn new(keys: &'a [String], delete: &'a str) -> Self {
        Self {
            keys,
            delete,
            newer: None,
            kept: None,
        }
    }
}

/// One Delta table of the lake.
#[derive(Debug, Clone)]
pub struct LakeTable {
    name: String,
    table: DeltaTable,
    /// The `txn` versions (application id → version) recorded by the commits this handle has
    /// read — its latest when it was opened, and every one since — so that a position is
    /// usually known without replaying the table's log (see [`LakeTable::position`]), with
    /// when each was written (ms since the epoch), where the commit said.
    positions: Arc<HashMap<String, (i64, Option<i64>)>>,
}

impl LakeTable {
    /// The table's name in the lake (its folder).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The delta-rs table at this handle's version: for reading it (its `table_provider()`
    /// for DataFusion), not for writing behind the handle's back.
    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// The table's version: the number of its last commit.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// `source`, as this table's error.
    pub(crate) fn error(&self, source: DeltaTableError) -> Error {
        Error::Delta {
            table: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// A property of the table's configuration (set when it was created).
    pub fn property(&self, key: &str) -> Option<String> {
        let snapshot = self.table.snapshot().ok()?;
        snapshot.metadata().configuration().get(key).cloned()
    }

    /// The table's columns, as Arrow.
    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        Ok(self
            .table
            .snapshot()
            .map_err(|e| self.error(e))?
            .snapshot()
            .arrow_schema())
    }

    /// The version the last commit recorded for application `app_id`, if any. Known at once
    /// when a commit this handle read recorded it (every commit of a pipeline records all its
    /// positions); else from the table's log.
    pub async fn position(&self, app_id: &str) -> Result<Option<i64>> {
        if let Some(&(version, _)) = self.positions.get(app_id) {
            return Ok(Some(version));
        }
        let snapshot = self.table.snapshot().map_err(|e| self.error(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.error(e))
    }

    /// When the last commits recording applications `app_ids` were written (ms since the
    /// epoch), of those recorded by a commit this handle read or by one of the hundred before
    /// its version (read newest first, until each is found), and whose `txn` said when.
    pub async fn positions_written(&self, app_ids: &[String]) -> Result<HashMap<String, i64>> {
        const MOST_COMMITS: u64 = 100;
        let mut written = HashMap::new();
        let mut missing: Vec<&String> = Vec::new();
        for app_id in app_ids {
            match self.positions.get(app_id) {
                Some(&(_, Some(at))) => {
                    written.insert(app_id.clone(), at);
                }
                Some((_, None)) => {}
                None => missing.push(app_id),
            }
        }
        let Some(newest) = self.version() else {
            return Ok(written);
        };
        let mut version = newest;
        while !missing.is_empty() && newest - version < MOST_COMMITS {
            // A commit already cleaned up: the older ones are too.
            let Some(transactions) = self.transactions(version).await? else {
                break;
            };
            for txn in transactions {
                if let Some(at) = missing.iter().position(|&a| *a == txn.app_id) {
                    let app_id = missing.swap_remove(at);
                    if let Some(written_at) = txn.last_updated {
                        written.insert(app_id.clone(), written_at);
                    }
                }
            }
            let Some(older) = version.checked_sub(1) else {
                break;
            };
            version = older;
        }
        Ok(written)
    }

    /// A handle on `table` that knows the positions its latest commit recorded.
    pub(crate) async fn new(name: &str, table: DeltaTable) -> Result<LakeTable> {
        let mut handle = LakeTable {
            name: name.to_string(),
            table,
            positions: Arc::default(),
        };
        if let Some(version) = handle.version() {
            handle.read_positions(version..=version).await?;
        }
        Ok(handle)
    }

    /// The `txn` actions of commit `version`, in order; none if the commit was cleaned up.
    async fn transactions(&self, version: u64) -> Result<Option<Vec<Txn>>> {
        #[derive(serde::Deserialize)]
        struct Action {
            txn: Option<Txn>,
        }
        let entry = self
            .table
            .log_store()
            .read_commit_entry(version)
            .await
            .map_err(|e| self.error(e))?;
        Ok(entry.map(|entry| {
            entry
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|line| serde_json::from_slice::<Action>(line).ok()?.txn)
                .collect()
        }))
    }

    /// Reads the `txn` actions of the commits `versions`, oldest first.
    async fn read_positions(&mut self, versions: std::ops::RangeInclusive<u64>) -> Result<()> {
        let mut positions = HashMap::clone(&self.positions);
        for version in versions {
            // A commit already cleaned up (after a checkpoint): its positions come from the
            // log when asked.
            for txn in self.transactions(version).await?.unwrap_or_default() {
                positions.insert(txn.app_id, (txn.version, txn.last_updated));
            }
        }
        self.positions = Arc::new(positions);
        Ok(())
    }

    /// `batches` with the metadata of the table's own fields, which a write must match (Delta
    /// keeps a field's metadata in the table's schema, and delta-rs refuses to merge two
    /// values of one key): a field marked since the table was made (a JSON column's marker)
    /// is written as the table has it.
    fn conformed(&self, batches: impl Iterator<Item = RecordBatch>) -> Result<Vec<RecordBatch>> {
        let table = self.arrow_schema()?;
        batches
            .map(|batch| {
                let schema = batch.schema();
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|field| match table.field_with_name(field.name()) {
                        Ok(own) if own.data_type() == field.data_type() => {
                            field.as_ref().clone().with_metadata(own.metadata().clone())
                        }
                        _ => field.as_ref().clone(),
                    })
                    .collect();
                let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
                RecordBatch::try_new(Arc::new(schema), batch.columns().to_vec())
                    .map_err(|e| self.error(e.into()))
            })
            .collect()
    }

    /// Appends `batches` and records `positions` (application id, version) in one commit.
    /// Positions must only grow: the caller resumes from them after a crash. With no rows, the
    /// commit records the positions alone (so that a source of nothing but bad records is not
    /// read again from the start after every restart).
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        positions: Vec<(String, i64)>,
    ) -> Result<()> {
        let batches = self.conformed(batches.into_iter().filter(|b| b.num_rows() > 0))?;
        if batches.is_empty() && positions.is_empty() {
            return Ok(());
        }
        let transactions = positions
            .into_iter()
            .map(|(app, version)| Transaction::new_with_last_update(app, version, now_ms()))
            .collect();
        let props = CommitProperties::default().with_application_transactions(transactions);
        if batches.is_empty() {
            let snapshot = self.table.snapshot().map_err(|e| self.error(e))?;
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            };
            CommitBuilder::from(props)
                .with_actions(vec![])
                .build(Some(snapshot), self.table.log_store(), operation)
                .await
                .map_err(|e| self.error(e))?;
            return self.refresh().await;
        }
        let before = self.version();
        let table = self
            .table
            .clone()
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await
            .map_err(|e| self.error(e))?;
        self.table = table;
        self.caught_up(before).await
    }

    /// Upserts `rows` as `how` says, recording `positions`, in one commit (Delta MERGE): a row
    /// whose key the table holds replaces that row, the others are inserted; a row flagged as a
    /// delete deletes its key's row instead. A key compares equal to the same key, NULL to NULL
    /// (in a column that may hold NULL). At most one row a key.
    pub async fn upsert(
        &mut self,
        rows: Vec<RecordBatch>,
        how: &Upsert<'_>,
        positions: Vec<(String, i64)>,
    ) -> Result<()> {
        use deltalake::datafusion::common::Column;
        use deltalake::datafusion::logical_expr::expr::Like;
        use deltalake::datafusion::logical_expr::{Expr, Operator, binary_expr, lit, not, when};
        use deltalake::datafusion::prelude::SessionContext;

        let rows = self.conformed(rows.into_iter().filter(|b| b.num_rows() > 0))?;
        if rows.is_empty() {
            return self.append(Vec::new(), positions).await;
        }
        let Upsert {
            keys,
            delete,
            newer,
            kept,
        } = *how;
        let source = |name: &str| Expr::Column(Column::new(Some("source"), name));
        let target = |name: &str| Expr::Column(Column::new(Some("target"), name));
        // A key column that holds no null compares with `=` (which delta-rs uses to skip the
        // files without the keys); one that may, NULL equal to NULL.
        let schema = self.arrow_schema()?;
        let nullable = |k: &str| schema.field_with_name(k).map_or(true, |f| f.is_nullable());
        let predicate = keys
            .iter()
            .map(|k| {
                let equal = match nullable(k) {
                    true => Operator::IsNotDistinctFrom,
                    false => Operator::Eq,
                };
                binary_expr(target(k), equal, source(k))
            })
            .reduce(Expr::and)
            .unwrap_or(lit(true));
        let columns: Vec<String> = self
            .table
            .snapshot()
            .map_err(|e| self.error(e))?
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        let values: Vec<&String> = columns.iter().filter(|c| !keys.contains(c)).collect();
        // A matched row applies only if it is not older than the table's.
        let matched = |condition: Expr| match newer {
            Some(newer) => condition.and(binary_expr(source(newer), Operator::GtEq, target(newer))),
            None => condition,
        };
        let frame = SessionContext::new()
            .read_batches(rows)
            .map_err(|e| self.error(e.into()))?;
        let transactions = positions
            .into_iter()
            .map(|(app, version)| Transaction::new_with_last_update(app, version, now_ms()))
            .collect();
        let mut merge = self
            .table
            .clone()
            .merge(frame, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_commit_properties(
                CommitProperties::default().with_application_transactions(transactions),
            )
            .when_matched_delete(|d| d.predicate(matched(source(delete))))
            .map_err(|e| self.error(e))?;
        if !values.is_empty() {
            // A column the row lists as kept keeps the table's value.
            let value = |c: &str| match kept {
                None => source(c),
                Some(kept) => {
                    let quoted = serde_json::Value::from(c).to_string();
                    let escaped = (quoted.replace('\\', "\\\\"))
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    let pattern = lit(format!("%{escaped}%"));
                    let listed = Expr::Like(Like::new(
                        false,
                        Box::new(source(kept)),
                        Box::new(pattern),
                        Some('\\'),
                        false,
                    ));
                    when(listed, target(c))
                        .otherwise(source(c))
                        .expect("a CASE with one branch and an ELSE")
                }
            };
            merge = merge
                .when_matched_update(|update| {
                    values
                        .iter()
                        .fold(update.predicate(matched(not(source(delete)))), |u, c| {
                            u.update(c.as_str(), value(c))
                        })
                })
                .map_err(|e| self.error(e))?;
        }
        let (table, _) = merge
            .when_not_matched_insert(|insert| {
                columns
                    .iter()
                    .fold(insert.predicate(not(source(delete))), |i, c| {
                        i.set(c.as_str(), source(c))
                    })
            })
            .map_err(|e| self.error(e))?
            .await
            .map_err(|e| self.error(e))?;
        let before = self.version();
        self.table = table;
        self.caught_up(before).await
    }

    /// The rows the commits `from..=to` added, read through Delta's change data feed (the
    /// table must have been created with `delta.enableChangeDataFeed`): inserts only, each with
    /// the `_commit_version` and `_commit_timestamp` of the commit that added it. Commits that
    /// change no data (a compaction) add none.
    pub async fn appended(&self, from: u64, to: u64) -> Result<Vec<RecordBatch>> {
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::compute::filter_record_batch;
        use deltalake::datafusion::physical_plan::collect;
        use deltalake::datafusion::prelude::SessionContext;

        let ctx = SessionContext::new();
        let plan = self
            .table
            .clone()
            .scan_cdf()
            .with_starting_version(from)
            .with_ending_version(to)
            .build(&ctx.state(), None)
            .await
            .map_err(|e| self.error(e))?;
        let batches = collect(plan, ctx.task_ctx())
            .await
            .map_err(|e| self.error(e.into()))?;
        batches
            .into_iter()
            .map(|batch| {
                let Some(change) = batch.column_by_name("_change_type") else {
                    return Ok(batch);
                };
                let change = deltalake::arrow::compute::cast(
                    change,
                    &deltalake::arrow::datatypes::DataType::Utf8,
                )
                .map_err(|e| self.error(e.into()))?;
                let inserts: deltalake::arrow::array::BooleanArray = change
                    .as_string::<i32>()
                    .iter()
                    .map(|c| Some(c == Some("insert")))
                    .collect();
                let kept =
                    filter_record_batch(&batch, &inserts).map_err(|e| self.error(e.into()))?;
                let keep: Vec<usize> = (0..kept.num_columns())
                    .filter(|&i| kept.schema().field(i).name() != "_change_type")
                    .collect();
                kept.project(&keep).map_err(|e| self.error(e.into()))
            })
            .collect()
    }

    /// What the table's current version holds, from its log (no data file is read).
    pub fn stats(&self) -> Result<TableStats> {
        let snapshot = self.table.snapshot().map_err(|e| self.error(e))?;
        let mut stats = TableStats {
            version: self.version(),
            ..TableStats::default()
        };
        for file in snapshot.log_data().iter() {
            stats.files += 1;
            stats.bytes += file.size().max(0) as u64;
            stats.rows += file.num_records().unwrap_or(0) as u64;
        }
        Ok(stats)
    }

    /// Adds to the table the columns of `schema` it lacks, which must be nullable (its rows so
    /// far hold null in them), in one commit that changes no row and records no position.
    /// Nothing to add: no commit.
    pub async fn add_columns(&mut self, schema: &Schema) -> Result<()> {
        let have = self.arrow_schema()?;
        let missing: Vec<&Field> = (schema.fields().iter())
            .filter(|f| have.field_with_name(f.name()).is_err())
            .map(AsRef::as_ref)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(required) = missing.iter().find(|f| !f.is_nullable()) {
            return Err(Error::RequiredColumn {
                table: self.name.clone(),
                column: required.name().clone(),
            });
        }
        let added: deltalake::kernel::StructType =
            (&Schema::new(missing.into_iter().cloned().collect::<Vec<_>>()))
                .try_into_kernel()
                .map_err(|e| self.error(e.into()))?;
        let added: Vec<_> = added.fields().cloned().collect();
        let before = self.version();
        self.table = (self.table.clone().add_columns())
            .with_fields(added)
            .await
            .map_err(|e| self.error(e))?;
        self.caught_up(before).await
    }

    /// Deletes the rows `predicate` (SQL over the table's columns) selects, in one commit (Delta
    /// DELETE), recording no position.
    pub async fn delete(&mut self, predicate: &str) -> Result<()> {
        let before = self.version();
        let (table, _) = self
            .table
            .clone()
            .delete()
            .with_predicate(predicate.to_string())
            .await
            .map_err(|e| self.error(e))?;
        self.table = table;
        self.caught_up(before).await
    }

    /// Rewrites the table's small files into fewer, larger ones (Delta OPTIMIZE, bin-packing) in
    /// one commit that changes no row and keeps every recorded position. Readers of older
    /// versions keep their files until they are vacuumed.
    pub async fn compact(&mut self) -> Result<Compaction> {
        let (table, metrics) = self
            .table
            .clone()
            .optimize()
            .with_type(deltalake::operations::optimize::OptimizeType::Compact)
            .with_max_concurrent_tasks(1)
            .await
            .map_err(|e| self.error(e))?;
        self.table = table;
        Ok(Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
        })
    }

    /// Deletes the data files that no version younger than `retain` (default: the table's
    /// `deletedFileRetentionDuration`, 7 days) reads, and that the current version does not
    /// read. Time travel to older versions stops working. Returns the files deleted (or that
    /// would be, with `dry_run`).
    pub async fn vacuum(
        &mut self,
        retain: Option<std::time::Duration>,
        dry_run: bool,
    ) -> Result<Vec<String>> {
        let mut vacuum = self.table.clone().vacuum().with_dry_run(dry_run);
        if let Some(retain) = retain {
            let retain = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
            vacuum = vacuum
                .with_retention_period(retain)
                .with_enforce_retention_duration(false);
        }
        let (table, metrics) = vacuum.await.map_err(|e| self.error(e))?;
        self.table = table;
        Ok(metrics.files_deleted)
    }

    /// Reloads the table to its latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        let before = self.version();
        let name = self.name.clone();
        self.table
            .update_incremental(None)
            .await
            .map_err(|source| Error::Delta {
                table: name,
                source: Box::new(source),
            })?;
        self.caught_up(before).await
    }

    /// Reads the positions of the commits after `before` up to the table's version. Past a
    /// hundred commits, only the newest is read (every commit of a pipeline records all its
    /// positions), and what it does not record comes from the log when asked.
    async fn caught_up(&mut self, before: Option<u64>) -> Result<()> {
        const MOST_COMMITS: u64 = 100;
        let Some(now) = self.version() else {
            return Ok(());
        };
        let from = before.map_or(0, |b| b + 1);
        if from > now {
            return Ok(());
        }
        if now - from >= MOST_COMMITS {
            self.positions = Arc::default();
            return self.read_positions(now..=now).await;
        }
        self.read_positions(from..=now).await
    }
}

/// Now, as a `txn` records when it was written: ms since the Unix epoch.
fn now_ms() -> Option<i64> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.ok().map(|d| d.as_millis() as i64)
}

/// A `txn` action of a commit.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Txn {
    app_id: String,
    version: i64,
    last_updated: Option<i64>,
}
