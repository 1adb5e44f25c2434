//! Exactly once: how a pipeline knows what it has taken from its source, kept in the lake with
//! the rows it wrote. Every pipeline (a stream's raw tables, a view, and every source to come)
//! follows these rules, and this module is where they live:
//!
//! 1. **The position of record is in the lake.** Each table a pipeline writes records, in the
//!    same Delta commit as the rows it adds, the next position of every source partition the
//!    pipeline reads: a Delta `txn` action per partition, application id `shard-<n>` for
//!    partition `n`, version the next position not yet taken (a sequence number, an offset, an
//!    upstream table's version). Positions only grow. Either a commit happened (rows and
//!    positions) or it did not (neither), so nothing is counted twice or lost. A copy kept
//!    elsewhere (a Kafka consumer group's offsets) is for others' tools, never read back.
//! 2. **Resume from the lake.** On start, and after a failed round, a pipeline reads its
//!    positions back from its tables ([`committed`]) and reads its source from there.
//! 3. **Several tables, one read.** A pipeline writing several tables (a stream's rows and its
//!    errors, a view's rows and its late events) reads each partition from the lowest of their
//!    positions (`lowest`) and gives each table only the rows at or past its own ([`past`]):
//!    a crash between two commits repeats nothing and loses nothing. A view's read reaches at
//!    least as far as its errors table took ([`reaching`]), so that a round repeated after such
//!    a crash judges every record the first attempt judged, as it did.
//! 4. **State is named by the commit.** A pipeline with state (an aggregating view, a join)
//!    writes its state after a round to snapshot `n`, synced, *before* the commit that names it
//!    (`txn` application id `snapshot`, version `n`). A restart loads the snapshot its last commit
//!    names (`snapshot`); older snapshots are deleted once a commit names a newer one (as is,
//!    then, one a crash left unnamed).
//! 5. **Positions belong to one incarnation.** A table says whose pipeline writes it (table
//!    properties [`STREAM_OWNER`], [`VIEW_OWNER`], and [`VIEW_INPUT`] for the input a view's
//!    positions are of), by ids that are never reused: a stream dropped and created again (or
//!    a view over it) never adopts the old one's tables or positions (`own_table`).
//! 6. **Absent is not lost.** A partition without a recorded position has never been taken:
//!    it is read from the source's oldest record, and nothing is missing. A recorded position
//!    older than the source's oldest record *is* a loss (retention deleted records before the
//!    pipeline took them): the pipeline writes a row naming the lost range to its errors table,
//!    in the commit that moves past it, and counts it (see `source::Gap`).
//! 7. **A partition has one writer.** Workers that share a source's partitions (a Kafka
//!    consumer group's assignment, `source::Assignment`) write the same tables, each recording
//!    the partitions it holds. A commit records a partition's new position only if the table,
//!    as of the version the commit is built on, still holds the position the round read from
//!    ([`append`]); a commit of another writer's after that version that recorded the same
//!    partition makes delta-rs refuse this one (`ConcurrentTransaction`). Either way the old
//!    holder's round fails as [`PipelineError::Reassigned`] and it is opened again, from the
//!    table's positions: nothing is written twice, whichever worker lags in learning the
//!    group's news. A view with state also checks that the table still names the snapshot
//!    its state came from ([`still_named`]): a commit of another's that moved no position
//!    (windows closed as a partition idled) is not repeated. A pipeline whose partitions
//!    change is opened again too (the runtime).
//!    Tables about to be dropped while other workers may still write them are first fenced
//!    ([`fence`]: every partition recorded as taken for good).
//! 8. **A spread view takes its pieces in order.** In a cluster an aggregating view's partitions
//!    are aggregated where they are held, into a chain of pieces a partition (`view::pieces`),
//!    and one worker finishes the view from them. Its table records, beside each partition's
//!    position, the number of the next piece to take (`txn` application id `piece-<n>`) and the
//!    partition's mark after the last one taken (`mark-<n>`) ([`cursors`]). The finisher takes
//!    the pieces on from there, each only if it follows on (it starts at the recorded position
//!    and judged lateness against the recorded mark); a worker taking over a partition writes
//!    on after the last piece written. A piece is taken once: by the commit that records the
//!    number after it.

use std::collections::BTreeMap;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type};
use sluice_lake::{Lake, LakeTable};

use crate::decode;
use crate::source::{Gap, Limits, SourceRead};
use crate::view::pieces::Cursor;
use crate::{PipelineError, Result};

/// A partition of a source: a shard of a Sluice stream, a Kafka partition, a Kinesis shard (by
/// its index), the one "partition" of an upstream view.
pub type Partition = u32;

/// Per partition, the next position not yet taken. A partition absent has never been taken
/// (rule 6).
pub type Positions = BTreeMap<Partition, u64>;

/// The `txn` application id of a partition's position.
fn app_id(partition: Partition) -> String {
    format!("shard-{partition}")
}

/// The `txn` application id naming a view's state snapshot.
const SNAPSHOT: &str = "snapshot";

/// The positions `table`'s last commits recorded, of those of `partitions` it has recorded.
pub async fn committed(
    table: &LakeTable,
    partitions: impl IntoIterator<Item = Partition>,
) -> Result<Positions> {
    let mut positions = Positions::new();
    for partition in partitions {
        if let Some(version) = table.position(&app_id(partition)).await? {
            positions.insert(partition, version.max(0) as u64);
        }
    }
    Ok(positions)
}

/// Per partition of `partitions` whose position `table`'s recent commits recorded, when the
/// last of them was written (ms since the epoch).
pub(crate) async fn written(
    table: &LakeTable,
    partitions: impl IntoIterator<Item = Partition>,
) -> Result<BTreeMap<Partition, i64>> {
    let partitions: Vec<Partition> = partitions.into_iter().collect();
    let app_ids: Vec<String> = partitions.iter().map(|&p| app_id(p)).collect();
    let written = table.positions_written(&app_ids).await?;
    Ok(partitions
        .into_iter()
        .zip(&app_ids)
        .filter_map(|(p, app)| Some((p, *written.get(app)?)))
        .collect())
}

/// Appends `batches` to `table` in one commit recording the positions `to`, of a round that read
/// from `from`: refused if another worker took one of the partitions since (rule 7).
pub(crate) async fn append(
    table: &mut LakeTable,
    batches: Vec<RecordBatch>,
    from: &Positions,
    to: &Positions,
) -> Result<()> {
    still_held(table, from, to).await?;
    Ok(table.append(batches, versions(to, None)).await?)
}

/// Records every partition of `partitions` as taken for good in `table` (one commit of no
/// rows): a worker that has not heard that the table's pipeline is gone can commit to it no
/// more (rule 7), before the table is dropped.
pub(crate) async fn fence(
    table: &mut LakeTable,
    partitions: impl IntoIterator<Item = Partition>,
) -> Result<()> {
    let taken = partitions.into_iter().map(|p| (app_id(p), i64::MAX));
    Ok(table.append(Vec::new(), taken.collect()).await?)
}

/// Refuses a commit recording `to` on `table` unless the table still holds, for every
/// partition of `to`, the position `from` says the round read it from (none: from its oldest
/// record): else another worker took the partition since (rule 7).
pub(crate) async fn still_held(table: &LakeTable, from: &Positions, to: &Positions) -> Result<()> {
    for &partition in to.keys() {
        let recorded = table
            .position(&app_id(partition))
            .await?
            .map(|v| v.max(0) as u64);
        let read_from = from.get(&partition).copied();
        if recorded != read_from {
            return Err(PipelineError::Reassigned(format!(
                "partition {partition} of table '{}' is at {recorded:?}, not at {read_from:?} \
                 where this worker read it from: another worker took it",
                table.name()
            )));
        }
    }
    Ok(())
}

/// Refuses a view's commit unless `table` still names snapshot `number`, the one its state
/// came from: in a cluster, a commit of another worker's since, even one that recorded no new
/// position (windows an idle partition held open, closed), would be repeated (rule 7).
pub(crate) async fn still_named(table: &LakeTable, number: u64) -> Result<()> {
    let named = snapshot(table).await?;
    if named != number {
        return Err(PipelineError::Reassigned(format!(
            "table '{}' names state snapshot {named}, not {number} which this worker's state is: \
             another worker ran the view since",
            table.name()
        )));
    }
    Ok(())
}

/// The number of the state snapshot `table`'s last commit names (0: none).
pub(crate) async fn snapshot(table: &LakeTable) -> Result<u64> {
    Ok(table
        .position(SNAPSHOT)
        .await?
        .map_or(0, |v| v.max(0) as u64))
}

/// The `txn` actions of a commit recording `positions` (and, for a view, its `snapshot`).
pub(crate) fn versions(positions: &Positions, snapshot: Option<u64>) -> Vec<(String, i64)> {
    positions
        .iter()
        .map(|(&partition, &next)| (app_id(partition), next as i64))
        .chain(snapshot.map(|n| (SNAPSHOT.to_string(), n as i64)))
        .collect()
}

/// The `txn` application ids of a spread view's next piece and mark of a partition (rule 8).
fn piece_id(partition: Partition) -> String {
    format!("piece-{partition}")
}

fn mark_id(partition: Partition) -> String {
    format!("mark-{partition}")
}

/// Per partition of `partitions`, where a spread view's `table` is in its chain of pieces (rule
/// 8): at the start of it for a partition it has not recorded.
pub(crate) async fn cursors(
    table: &LakeTable,
    partitions: impl IntoIterator<Item = Partition>,
) -> Result<BTreeMap<Partition, Cursor>> {
    let mut cursors = BTreeMap::new();
    for partition in partitions {
        let next = table.position(&piece_id(partition)).await?;
        let position = table.position(&app_id(partition)).await?;
        let mark = table.position(&mark_id(partition)).await?;
        let cursor = Cursor {
            next: next.map_or(0, |n| n.max(0) as u64),
            position: position.map(|p| p.max(0) as u64),
            mark,
        };
        cursors.insert(partition, cursor);
    }
    Ok(cursors)
}

/// The `txn` actions recording a spread view's `cursors`, beside their positions (rule 8).
pub(crate) fn cursor_versions(cursors: &BTreeMap<Partition, Cursor>) -> Vec<(String, i64)> {
    let mut versions = Vec::new();
    for (&partition, cursor) in cursors {
        versions.push((piece_id(partition), cursor.next as i64));
        versions.extend(cursor.mark.map(|mark| (mark_id(partition), mark)));
    }
    versions
}

/// Per partition, the lower of two tables' positions: where a read serving both starts. A
/// partition one of them has not recorded is read from the start.
pub(crate) fn lowest(a: &Positions, b: &Positions) -> Positions {
    a.iter()
        .filter_map(|(partition, &at)| Some((*partition, at.min(*b.get(partition)?))))
        .collect()
}

/// The rows of `batch` (with `_shard` and `_seq` columns) at or past their partition's position
/// in `positions`; every row of a partition absent from them.
pub fn past(batch: &RecordBatch, positions: &Positions) -> Result<RecordBatch> {
    if positions.is_empty() {
        return Ok(batch.clone());
    }
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
        .map(|(&s, &q)| {
            Some(
                positions
                    .get(&(s as Partition))
                    .is_none_or(|&p| q as u64 >= p),
            )
        })
        .collect();
    if keep.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, &keep)?)
}

/// `limits` of a read from `from` raised so that each partition's read reaches at least its
/// position in `further` (another table's, ahead: rule 3). A view's round repeated after a crash
/// between its errors table's commit and its own then reads every record the first attempt
/// judged, and judges it again against the same watermark; read shorter, a record the first
/// attempt took as on time could be judged late by a later round, and the errors table, past
/// it, would not take it.
pub(crate) fn reaching(mut limits: Limits, from: &Positions, further: &Positions) -> Limits {
    for (partition, limit) in &mut limits {
        if let (Some(&at), Some(&ahead)) = (from.get(partition), further.get(partition)) {
            *limit = (*limit).max(ahead.saturating_sub(at) as usize);
        }
    }
    limits
}

/// Per partition, the further of `positions` and `read`: a table's positions after a round
/// (they never go back, even when a read for both tables ended before this one's).
pub(crate) fn advanced(positions: &Positions, read: &Positions) -> Positions {
    let mut next = positions.clone();
    for (&partition, &at) in read {
        let position = next.entry(partition).or_insert(at);
        *position = (*position).max(at);
    }
    next
}

/// The gaps `read` found that an errors table at `positions` has not recorded yet.
pub(crate) fn new_gaps<'a>(
    read: &'a SourceRead,
    positions: &'a Positions,
) -> impl Iterator<Item = Gap> + 'a {
    read.parts
        .iter()
        .filter_map(|p| p.gap)
        .filter(|g| positions.get(&g.partition).is_none_or(|&at| g.first >= at))
}

/// The table property naming the stream (by id) whose raw pipeline writes the table.
pub const STREAM_OWNER: &str = "sluice.stream.id";
/// The table property naming the view (by id) whose pipeline writes the table.
pub const VIEW_OWNER: &str = "sluice.view.id";
/// The table property naming a view's input (a stream's id, or an upstream view's): the
/// positions the view's table records are that input's, and no other incarnation's.
pub const VIEW_INPUT: &str = "sluice.view.input.id";

/// Who writes a table: the pipeline of a stream or a view, by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Writer {
    /// A stream's raw pipeline (its rows and errors tables).
    Stream(u64),
    /// A view's pipeline (its table and errors table).
    View(u64),
}

impl Writer {
    fn property(self) -> (&'static str, u64) {
        match self {
            Writer::Stream(id) => (STREAM_OWNER, id),
            Writer::View(id) => (VIEW_OWNER, id),
        }
    }
}

/// The pipeline that writes `table`, if one does: such a table is its pipeline's alone (SQL
/// may read it, never write or drop it).
pub fn writer(table: &LakeTable) -> Option<Writer> {
    let id = |key| table.property(key)?.parse().ok();
    id(STREAM_OWNER)
        .map(Writer::Stream)
        .or_else(|| id(VIEW_OWNER).map(Writer::View))
}

/// Opens or creates table `name` for `writer` (`more` properties go into a new table too),
/// adding the nullable columns of `schema` it lacks (a stream's column added since). A table
/// an earlier incarnation of the pipeline left (a crash before its tables were dropped) is
/// dropped and made anew; a table no pipeline made (`CREATE TABLE … AS`) is the user's, and
/// refused.
pub(crate) async fn own_table(
    lake: &Lake,
    name: &str,
    schema: &arrow::datatypes::SchemaRef,
    partition_by: &[String],
    writer: Writer,
    more: &[(&str, &str)],
) -> Result<LakeTable> {
    let (key, id) = writer.property();
    let id = id.to_string();
    let mut properties = vec![(key, id.as_str())];
    properties.extend_from_slice(more);
    let mut table = lake
        .open_or_create(name, schema, partition_by, &properties)
        .await?;
    match table.property(key) {
        Some(owner) if owner == id => {
            table.add_columns(schema).await?;
            Ok(table)
        }
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

/// Those of tables `names` that `writer` made (a user's table of the same name is not).
pub(crate) async fn owned(lake: &Lake, names: &[String], writer: Writer) -> Result<Vec<LakeTable>> {
    let mut owned = Vec::new();
    for name in names {
        match lake.open(name).await {
            Ok(table) if self::writer(&table) == Some(writer) => owned.push(table),
            Ok(_) | Err(sluice_lake::Error::TableNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(owned)
}

/// Drops tables `names` of those `writer` made, so that a user's table of the same name stays.
pub(crate) async fn drop_owned(lake: &Lake, names: &[String], writer: Writer) -> Result<()> {
    for table in owned(lake, names, writer).await? {
        lake.drop_table(table.name()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_read_reaches_what_the_table_ahead_took() {
        let limits = super::Limits::from([(0, 10), (1, 10), (2, 10)]);
        let from = super::Positions::from([(0, 100), (1, 100)]);
        let ahead = super::Positions::from([(0, 150), (1, 105), (2, 40)]);
        let reached = super::reaching(limits, &from, &ahead);
        // Partition 2 was never taken by the view: it reads from its oldest record anyway.
        assert_eq!(reached, super::Limits::from([(0, 50), (1, 10), (2, 10)]));
    }

    use super::*;

    #[test]
    fn a_read_for_two_tables_starts_at_the_lower_position_and_absent_means_the_start() {
        let a = Positions::from([(0, 10), (1, 5), (2, 7)]);
        let b = Positions::from([(0, 3), (1, 9)]);
        assert_eq!(lowest(&a, &b), Positions::from([(0, 3), (1, 5)]));
        assert_eq!(
            versions(&Positions::from([(0, 3), (4, 9)]), Some(2)),
            [
                ("shard-0".to_string(), 3),
                ("shard-4".to_string(), 9),
                ("snapshot".to_string(), 2)
            ]
        );
    }

    /// Rule 7's first check, alone: delta-rs lets a worker's commit of one partition move its
    /// handle past another worker's commit of another (blind appends), so only the table's
    /// position tells it that a partition it still reads was taken.
    #[tokio::test]
    async fn a_worker_whose_handle_moved_past_another_s_commit_of_its_partition_cannot_commit_it() {
        use arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path()).unwrap();
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let mut stale = own_table(&lake, "t", &schema, &[], Writer::Stream(1), &[])
            .await
            .unwrap();
        let mut other = lake.open("t").await.unwrap();
        let none = Positions::new();
        // Another worker took partition 0 and committed it.
        append(&mut other, vec![], &none, &Positions::from([(0, 10)]))
            .await
            .unwrap();
        // The stale worker commits partition 1, which it still holds: its handle is past the
        // other's commit now, without a conflict.
        append(&mut stale, vec![], &none, &Positions::from([(1, 5)]))
            .await
            .unwrap();
        // It still believes it holds partition 0, which it reads from its oldest record.
        let refused = append(&mut stale, vec![], &none, &Positions::from([(0, 4)]))
            .await
            .unwrap_err();
        assert!(matches!(refused, PipelineError::Reassigned(_)), "{refused}");
        let reopened = lake.open("t").await.unwrap();
        assert_eq!(
            committed(&reopened, [0, 1]).await.unwrap(),
            Positions::from([(0, 10), (1, 5)])
        );
    }
}
