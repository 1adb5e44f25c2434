//! A change stream's tables beyond its history: the mirror, `<stream>`, holding the current
//! row of every key of the table the changes come from; and the memory of the changes already
//! kept in the history, `<stream>_changes`, so that a repeat is kept once.
//!
//! ```text
//!  changes of a round ──► newest per key (by _version, then the log) ──► MERGE into <stream>
//!                         (values a change did not send: from the key's previous change)
//! ```
//!
//! **Newest wins.** A key's row is the change of highest `_version` (equal versions: the later
//! in the stream). The MERGE applies a change only if its version is not below the row's
//! (`Upsert::newer`), so a late change (a source that reorders, a repeat) changes nothing; a
//! delete leaves no row to compare with, so the mirror remembers each delete it saw for
//! [`DELETES_KEPT`] (by ingestion time) and drops a change older than its key's delete. A
//! truncate (`t`, a change of no key) deletes every row older than it, in a Delta DELETE before
//! the round's MERGE, and the mirror remembers the newest truncate for good: a change older than
//! it changes nothing. (A crash between the two commits repeats the round: the DELETE again
//! deletes nothing newer than the truncate.)
//!
//! **Exactly once**, as `exactly_once` says: the mirror records its positions in the commit
//! of its MERGE and takes only the rows past them. Its memory of deletes is knowledge, not
//! state: it is learnt from every row a round reads (also those the mirror already has), and
//! on start from the history's deletes, so a change it holds from a round the mirror has not
//! yet taken can only be newer than the mirror, never wrong. The history drops repeats by
//! `_event_id` among the events of the last [`REPEATS_KEPT`] it holds (learnt on start from
//! the history itself, and after each of its commits).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, filter_record_batch, take};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Int32Type, Int64Type, Schema, SchemaRef,
    TimestampMicrosecondType,
};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::prelude::SessionContext;
use sluice_lake::{Lake, LakeTable, Upsert};
use sluice_sql::{StreamDefinition, Transform};

use crate::decode::{EVENT_ID, INGESTED_AT, OP, SEQ, SHARD, SOURCE_TS, UNCHANGED, VERSION};
use crate::exactly_once::{self, Partition, Positions, Writer, committed, past};
use crate::{PipelineError, Result};

/// How long the mirror remembers a delete, in ingestion time: a change of the key older than
/// the delete and arriving within it changes nothing.
pub const DELETES_KEPT: Duration = Duration::from_secs(24 * 3600);
/// How long the history remembers the events it holds, in ingestion time: a repeat arriving
/// within it is dropped.
pub const REPEATS_KEPT: Duration = Duration::from_secs(15 * 60);

/// The flag column of the mirror's upsert rows.
const DELETE: &str = "_delete";

/// Most values of a key a scan of the mirror is filtered by (more are filtered after it):
/// delta-rs lowers an `IN` list to a chain of `OR`s, which it converts recursively, and a
/// round's tens of thousands of keys overflowed a stack.
const PUSHED_VALUES: usize = 1_000;

/// The name of a change stream's history table.
pub fn changes_table(stream: &str) -> String {
    format!("{stream}_changes")
}

/// The mirror of a change stream.
pub struct Mirror {
    table: LakeTable,
    positions: Positions,
    /// The MERGE's key: the primary key, and the partition columns derived from it (so that
    /// the MERGE reads only the partitions of the keys it changes).
    keys: Vec<String>,
    converter: RowConverter,
    /// The mirror's columns, as indexes into the history's.
    columns: Vec<usize>,
    schema: SchemaRef,
    /// Per key, the newest delete seen, and when it was ingested (µs).
    deleted: HashMap<OwnedRow, (i128, i64)>,
    /// The latest ingestion time seen (µs): what `deleted` is pruned by.
    now: i64,
    /// The version of the newest truncate seen: every change below it is erased.
    truncated: Option<i128>,
}

impl Mirror {
    /// Opens (or creates) the mirror `name` of a change stream of `definition` read from
    /// `partitions`, whose history is `history` (of `history_schema`), and learns the deletes
    /// the history holds.
    pub async fn open(
        lake: &Lake,
        name: &str,
        definition: &StreamDefinition,
        (history, history_schema): (&LakeTable, &SchemaRef),
        partitions: &[Partition],
        writer: Writer,
    ) -> Result<Mirror> {
        let mut names: Vec<&str> = definition.columns.iter().map(|c| c.name.as_str()).collect();
        names.extend([VERSION, SOURCE_TS]);
        let derived = (definition.partition_by.iter())
            .filter(|p| p.transform != Transform::Identity)
            .map(|p| p.name.as_str());
        names.extend(derived.clone());
        let columns = (names.iter())
            .map(|n| history_schema.index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<String> = (definition.primary_key.iter().map(String::as_str))
            .chain(derived)
            .map(String::from)
            .collect();
        // A mirror's key is never null (a change without one is an error row): the MERGE
        // matches keys with `=`, which lets delta-rs skip the files without them.
        let fields: Vec<Field> = (history_schema.project(&columns)?.fields().iter())
            .map(|f| {
                let key = keys.contains(f.name());
                f.as_ref().clone().with_nullable(f.is_nullable() && !key)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let partition_by: Vec<String> = definition
            .partition_by
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let table =
            exactly_once::own_table(lake, name, &schema, &partition_by, writer, &[]).await?;
        let key_fields = (keys.iter())
            .map(|k| {
                Ok(SortField::new(
                    schema.field_with_name(k)?.data_type().clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let positions = committed(&table, partitions.iter().copied()).await?;
        let mut mirror = Mirror {
            table,
            positions,
            converter: RowConverter::new(key_fields)?,
            keys,
            columns,
            schema,
            deleted: HashMap::new(),
            now: 0,
            truncated: None,
        };
        let truncates = query(
            history,
            &format!("SELECT max({VERSION}) AS {VERSION} FROM t WHERE {OP} = 't'"),
        )
        .await?;
        for batch in &truncates {
            let versions = column(batch, VERSION)?.as_primitive::<Decimal128Type>();
            mirror.truncated = versions.iter().flatten().max().max(mirror.truncated);
        }
        let key_list = mirror.key_list();
        let deletes = query(
            history,
            &format!(
                "SELECT {key_list}, {VERSION}, {INGESTED_AT} FROM t \
                 WHERE {OP} = 'd' AND {INGESTED_AT} >= \
                 (SELECT max({INGESTED_AT}) FROM t) - INTERVAL '{} seconds'",
                DELETES_KEPT.as_secs()
            ),
        )
        .await?;
        for batch in deletes {
            mirror.learn_deletes(&batch)?;
        }
        Ok(mirror)
    }

    /// The table.
    pub fn table(&self) -> &LakeTable {
        &self.table
    }

    /// The positions its last commit recorded.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Applies the changes among `read` (every row of a round, in the history's schema) past
    /// the mirror's positions, recording `next`, in one commit. The rows it merged.
    pub async fn apply(&mut self, read: &[RecordBatch], next: Positions) -> Result<usize> {
        let rows = match read.first() {
            Some(first) => concat_batches(&first.schema(), read)?,
            None => RecordBatch::new_empty(self.schema.clone()),
        };
        if rows.num_rows() > 0 {
            self.learn_deletes(&rows)?;
        }
        let changes = match rows.num_rows() {
            0 => Vec::new(),
            _ => {
                let rows = past(&rows, &self.positions)?;
                if let Some(truncated) = self.truncated
                    && text(&rows, OP)?.iter().any(|op| op == Some("t"))
                {
                    self.table
                        .delete(&format!(
                            "{VERSION} < CAST('{truncated}' AS DECIMAL(38, 0))"
                        ))
                        .await?;
                }
                let held = match text(&rows, UNCHANGED)?.null_count() < rows.num_rows() {
                    true => self.versions_held(&rows).await?,
                    false => HashMap::new(),
                };
                vec![self.newest(&rows, &held)?]
            }
        };
        let merged = changes.iter().map(RecordBatch::num_rows).sum();
        let kept = (changes.iter()).any(|b| {
            b.column_by_name(UNCHANGED)
                .is_some_and(|c| c.null_count() < c.len())
        });
        let how = Upsert {
            kept: kept.then_some(UNCHANGED),
            newer: Some(VERSION),
            ..Upsert::new(&self.keys, DELETE)
        };
        let versions = exactly_once::versions(&next, None);
        // Tests fail the MERGE here, as a crash before it would.
        fail::fail_point!("mirror::merge", |_| Err(PipelineError::Unavailable(
            "injected failure of the mirror's MERGE".into()
        )));
        self.table.upsert(changes, &how, versions).await?;
        self.positions = next;
        Ok(merged)
    }

    /// Compacts the table's small files.
    pub async fn compact(&mut self) -> Result<()> {
        self.table.compact().await?;
        Ok(())
    }

    /// The keys' columns as SQL names them.
    fn key_list(&self) -> String {
        (self.keys.iter())
            .map(|k| format!("\"{}\"", k.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `_version` of the mirror's row of each key of `rows` it holds. (A scan of the
    /// mirror's keys: only for rounds with values a change did not send, which need it.)
    async fn versions_held(&self, rows: &RecordBatch) -> Result<HashMap<OwnedRow, i128>> {
        use datafusion::common::{Column, ScalarValue};
        use datafusion::logical_expr::Expr;
        let key_arrays = self.key_arrays(rows)?;
        let wanted = self.converter.convert_columns(&key_arrays)?;
        let wanted: HashSet<OwnedRow> = wanted.iter().map(|r| r.owned()).collect();
        // Only the rows of those keys' values (a superset of the keys, for a composite key).
        let mut only = Vec::new();
        for (key, values) in self.keys.iter().zip(&key_arrays) {
            let mut list = Vec::new();
            let mut met = HashSet::new();
            for i in 0..values.len() {
                let value = ScalarValue::try_from_array(values, i)?;
                if met.insert(value.clone()) {
                    list.push(Expr::Literal(value, None));
                }
            }
            if list.len() <= PUSHED_VALUES {
                only.push(Expr::Column(Column::new_unqualified(key)).in_list(list, false));
            }
        }
        let mut columns: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        columns.push(VERSION);
        let frame = SessionContext::new().read_table(self.table.delta().table_provider().await?)?;
        let frame = match only.into_iter().reduce(Expr::and) {
            Some(only) => frame.filter(only)?,
            None => frame,
        };
        let frame = frame.select_columns(&columns)?;
        let held = frame.collect().await?;
        let mut versions = HashMap::new();
        for batch in &held {
            let keys = self.converter.convert_columns(&self.key_arrays(batch)?)?;
            let version = column(batch, VERSION)?.as_primitive::<Decimal128Type>();
            for (i, key) in keys.iter().enumerate() {
                let key = key.owned();
                if wanted.contains(&key) {
                    versions.insert(key, version.value(i));
                }
            }
        }
        Ok(versions)
    }

    /// Remembers the deletes among `rows` (with the key columns, `_version` and
    /// `_ingested_at`, and `_op` unless all are deletes) and the newest truncate, and forgets
    /// deletes past [`DELETES_KEPT`].
    fn learn_deletes(&mut self, rows: &RecordBatch) -> Result<()> {
        let deletes = match rows.column_by_name(OP) {
            Some(_) => {
                let op = text(rows, OP)?;
                let versions = column(rows, VERSION)?.as_primitive::<Decimal128Type>();
                let truncates = (op.iter().zip(versions.iter()))
                    .filter_map(|(op, v)| v.filter(|_| op == Some("t")));
                self.truncated = truncates.max().max(self.truncated);
                let is_delete: BooleanArray = op.iter().map(|o| Some(o == Some("d"))).collect();
                filter_record_batch(rows, &is_delete)?
            }
            None => rows.clone(),
        };
        let keys = self
            .converter
            .convert_columns(&self.key_arrays(&deletes)?)?;
        let versions = column(&deletes, VERSION)?.as_primitive::<Decimal128Type>();
        let ingested = column(&deletes, INGESTED_AT)?.as_primitive::<TimestampMicrosecondType>();
        for i in 0..deletes.num_rows() {
            let (version, at) = (versions.value(i), ingested.value(i));
            self.now = self.now.max(at);
            let seen = self
                .deleted
                .entry(keys.row(i).owned())
                .or_insert((version, at));
            *seen = (seen.0.max(version), seen.1.max(at));
        }
        let oldest = self.now - DELETES_KEPT.as_micros() as i64;
        self.deleted.retain(|_, (_, at)| *at >= oldest);
        Ok(())
    }

    /// The key columns of `rows`, as the mirror types them (a query may give views of text).
    fn key_arrays(&self, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        (self.keys.iter())
            .map(|k| {
                let own = self.schema.field_with_name(k)?.data_type();
                Ok(cast(column(rows, k)?, own)?)
            })
            .collect()
    }

    /// The newest change of each key of `rows`, as the mirror's upsert rows: the mirror's
    /// columns, the [`DELETE`] flag and what stays [`UNCHANGED`]. A value the newest change did
    /// not send comes from the key's latest earlier change in `rows` that did and is newer
    /// than the mirror's row (`held`: a repeat of a change the mirror has taken is not; none
    /// past a delete); one none sent stays listed, for the MERGE to keep the mirror's. A
    /// change older than its key's latest delete, or than the latest truncate, is no row (nor is
    /// a truncate: `apply` has done its work).
    fn newest(&self, rows: &RecordBatch, held: &HashMap<OwnedRow, i128>) -> Result<RecordBatch> {
        let keys = self.converter.convert_columns(&self.key_arrays(rows)?)?;
        let version = column(rows, VERSION)?.as_primitive::<Decimal128Type>();
        let shard = column(rows, SHARD)?.as_primitive::<Int32Type>();
        let seq = column(rows, SEQ)?.as_primitive::<Int64Type>();
        let op = text(rows, OP)?;
        let unchanged = text(rows, UNCHANGED)?;
        let listed = |i: usize| -> HashSet<String> {
            match unchanged.is_valid(i) {
                true => serde_json::from_str(unchanged.value(i)).unwrap_or_default(),
                false => HashSet::new(),
            }
        };
        // At equal versions a delete is the newer (a DynamoDB REMOVE carries the version of
        // the write it deletes); else the later in its shard.
        let mut order: Vec<usize> = (0..rows.num_rows()).collect();
        order.sort_by(|&a, &b| {
            (keys.row(a).cmp(&keys.row(b)))
                .then(version.value(a).cmp(&version.value(b)))
                .then((op.value(a) == "d").cmp(&(op.value(b) == "d")))
                .then(shard.value(a).cmp(&shard.value(b)))
                .then(seq.value(a).cmp(&seq.value(b)))
        });
        let names: Vec<&String> = self.schema.fields().iter().map(|f| f.name()).collect();
        let mut takes: Vec<Vec<u32>> = vec![Vec::new(); self.columns.len()];
        let (mut deletes, mut missing) = (Vec::new(), Vec::new());
        let erased =
            |r: usize| op.value(r) == "t" || self.truncated.is_some_and(|t| version.value(r) < t);
        order.retain(|&r| !erased(r));
        for group in order.chunk_by(|&a, &b| keys.row(a) == keys.row(b)) {
            let (&newest, earlier) = group.split_last().expect("a group has a row");
            let delete = op.value(newest) == "d";
            let deleted_after = self
                .deleted
                .get(&keys.row(newest).owned())
                .is_some_and(|&(v, _)| v >= version.value(newest));
            if !delete && deleted_after {
                continue;
            }
            let mut left = listed(newest);
            let newer_than_held =
                |r: usize| (held.get(&keys.row(r).owned())).is_none_or(|&v| version.value(r) > v);
            for (c, name) in names.iter().enumerate() {
                let mut from = newest;
                if left.contains(*name) {
                    let sent = earlier
                        .iter()
                        .rev()
                        .take_while(|&&r| op.value(r) != "d" && newer_than_held(r))
                        .find(|&&r| !listed(r).contains(*name));
                    if let Some(&r) = sent {
                        from = r;
                        left.remove(*name);
                    }
                }
                takes[c].push(from as u32);
            }
            deletes.push(Some(delete));
            missing.push((!left.is_empty()).then(|| {
                let mut left: Vec<String> = left.into_iter().collect();
                left.sort();
                serde_json::Value::from(left).to_string()
            }));
        }
        let mut columns = (self.columns.iter().zip(takes))
            .map(|(&c, at)| Ok(take(rows.column(c), &UInt32Array::from(at), None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        columns.push(Arc::new(BooleanArray::from(deletes)));
        columns.push(Arc::new(StringArray::from(missing)));
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(DELETE, DataType::Boolean, false));
        fields.push(Field::new(UNCHANGED, DataType::Utf8, true));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// The memory of the events the history holds, and where each came first: a change whose
/// `_event_id` came first at another place in the stream is a repeat, kept by neither the
/// history nor the mirror. (The record that came first is no repeat when read again, as after
/// a crash: the tables' own positions say whether they have it.)
#[derive(Default)]
pub struct Repeats {
    /// Per event, where it came first (shard, sequence number) and when it was ingested (µs).
    seen: HashMap<String, (i32, i64, i64)>,
    now: i64,
}

impl Repeats {
    /// The events `history` holds of its last [`REPEATS_KEPT`] (by ingestion time).
    pub async fn of(history: &LakeTable) -> Result<Repeats> {
        let held = query(
            history,
            &format!(
                "SELECT {EVENT_ID}, {SHARD}, {SEQ}, {INGESTED_AT} FROM t \
                 WHERE {EVENT_ID} IS NOT NULL AND {INGESTED_AT} >= \
                 (SELECT max({INGESTED_AT}) FROM t) - INTERVAL '{} seconds'",
                REPEATS_KEPT.as_secs()
            ),
        )
        .await?;
        let mut repeats = Repeats::default();
        for batch in &held {
            repeats.remember(batch)?;
        }
        Ok(repeats)
    }

    /// `parts` (a round's rows, in the history's schema) without the repeats: of events that
    /// came first elsewhere, before or earlier in `parts`.
    pub fn firsts(&self, parts: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let mut met: HashMap<String, (i32, i64)> = HashMap::new();
        parts
            .iter()
            .map(|rows| {
                let ids = text(rows, EVENT_ID)?;
                if ids.null_count() == ids.len() {
                    return Ok(rows.clone());
                }
                let shard = column(rows, SHARD)?.as_primitive::<Int32Type>();
                let seq = column(rows, SEQ)?.as_primitive::<Int64Type>();
                let keep: BooleanArray = (0..rows.num_rows())
                    .map(|i| {
                        let here = (shard.value(i), seq.value(i));
                        Some(match ids.is_valid(i) {
                            false => true,
                            true => match self.seen.get(ids.value(i)) {
                                Some(&(s, q, _)) => (s, q) == here,
                                None => {
                                    *met.entry(ids.value(i).to_string()).or_insert(here) == here
                                }
                            },
                        })
                    })
                    .collect();
                Ok(filter_record_batch(rows, &keep)?)
            })
            .collect()
    }

    /// Remembers the events of `rows` (committed to the history), and forgets those past
    /// [`REPEATS_KEPT`].
    pub fn remember(&mut self, rows: &RecordBatch) -> Result<()> {
        let ids = text(rows, EVENT_ID)?;
        let shard = cast(column(rows, SHARD)?, &DataType::Int32)?;
        let shard = shard.as_primitive::<Int32Type>();
        let seq = cast(column(rows, SEQ)?, &DataType::Int64)?;
        let seq = seq.as_primitive::<Int64Type>();
        let ingested = column(rows, INGESTED_AT)?.as_primitive::<TimestampMicrosecondType>();
        for i in (0..rows.num_rows()).filter(|&i| ids.is_valid(i)) {
            let at = ingested.value(i);
            self.now = self.now.max(at);
            self.seen
                .entry(ids.value(i).to_string())
                .or_insert((shard.value(i), seq.value(i), at));
        }
        let oldest = self.now - REPEATS_KEPT.as_micros() as i64;
        self.seen.retain(|_, (_, _, at)| *at >= oldest);
        Ok(())
    }
}

/// The rows `sql` selects from `table` (named `t` in it).
async fn query(table: &LakeTable, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    ctx.register_table("t", table.delta().table_provider().await?)?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Column `name` of `rows` as text (a query may give a view of text).
fn text(rows: &RecordBatch, name: &str) -> Result<StringArray> {
    Ok(cast(column(rows, name)?, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

fn column<'a>(rows: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    rows.column_by_name(name)
        .ok_or_else(|| PipelineError::Internal(format!("change rows lack {name}")))
}
