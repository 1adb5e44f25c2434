//! The state of an aggregating view, and its snapshots.
//!
//! The state is Arrow: one row per open group (a window not yet emitted, or a key of an
//! updating view), in the partial-state schema of the view's aggregate (the group's columns,
//! then each aggregate's state columns, as DataFusion's `Partial` mode gives them). A round
//! merges into it only the groups its rows touched, so a round costs what it touched, not the
//! whole state; a window leaves the state when it is emitted.
//!
//! Snapshots: before the commit that records a round, the state after it is written to
//! `<dir>/<n>.arrow` (Arrow IPC; the watermarks in its schema's metadata), synced, then named
//! by the commit (`txn` app id `snapshot`, version `n`). A restart loads the snapshot the last
//! commit names, so it resumes with the state exactly as that commit left it, without reading
//! history again; snapshots no commit names (a crash before the commit) are deleted.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch, not};
use arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;

use super::plan::ViewPlan;
use super::watermark::{Micros, Watermarks};
use super::window::merge_sessions;
use crate::{PipelineError, Result};

/// An aggregating view's state between rounds.
#[derive(Debug, Clone)]
pub struct State {
    /// One row per open group, in the aggregate's partial-state schema.
    pub groups: RecordBatch,
    /// Event-time progress (windowed views).
    pub watermarks: Option<Watermarks>,
}

impl State {
    /// A view's state before its first round: no group, in the partial-state `schema`.
    pub fn empty(schema: SchemaRef, watermarks: Option<Watermarks>) -> Self {
        Self {
            groups: RecordBatch::new_empty(schema),
            watermarks,
        }
    }
}

/// Merges a round's partial states into `groups`. Returns the new groups and, of them, the
/// rows of the groups the round touched.
pub async fn absorb(
    plan: &ViewPlan,
    groups: &RecordBatch,
    partial: Vec<RecordBatch>,
) -> Result<(RecordBatch, RecordBatch)> {
    let aggregation = plan.aggregation().ok_or_else(|| {
        PipelineError::Internal("a view without an aggregate has no state".into())
    })?;
    let schema = aggregation.state_schema.clone();
    let partial = concat_batches(&schema, &partial)?;
    if partial.num_rows() == 0 {
        return Ok((groups.clone(), RecordBatch::new_empty(schema)));
    }
    let touched = touched(groups, &partial, &aggregation.keys)?;
    let untouched = filter_record_batch(groups, &not(&touched)?)?;
    let mut rows = concat_batches(&schema, [&filter_record_batch(groups, &touched)?, &partial])?;
    if let (Some((start, end)), true) = (aggregation.window, aggregation.session) {
        rows = merge_sessions(&rows, &aggregation.keys, start, end)?;
    }
    let changed = concat_batches(&schema, &plan.reduce(vec![rows]).await?)?;
    let groups = concat_batches(&schema, [&untouched, &changed])?;
    Ok((groups, changed))
}

/// Which rows of `groups` have a key (the columns `keys`) that `partial` has.
fn touched(groups: &RecordBatch, partial: &RecordBatch, keys: &[usize]) -> Result<BooleanArray> {
    if groups.num_rows() == 0 {
        return Ok(BooleanArray::from(Vec::<bool>::new()));
    }
    let converter = RowConverter::new(
        keys.iter()
            .map(|&k| SortField::new(groups.schema().field(k).data_type().clone()))
            .collect(),
    )?;
    let columns = |b: &RecordBatch| {
        keys.iter()
            .map(|&k| b.column(k).clone())
            .collect::<Vec<_>>()
    };
    let new = converter.convert_columns(&columns(partial))?;
    let seen: HashSet<&[u8]> = new.iter().map(|row| row.data()).collect();
    let old = converter.convert_columns(&columns(groups))?;
    Ok(old
        .iter()
        .map(|row| Some(seen.contains(row.data())))
        .collect())
}

/// Splits `groups` into the windows that end at or before `watermark` (done) and the others.
pub fn close(
    groups: &RecordBatch,
    end: usize,
    watermark: Option<Micros>,
) -> Result<(RecordBatch, RecordBatch)> {
    let Some(watermark) = watermark else {
        return Ok((RecordBatch::new_empty(groups.schema()), groups.clone()));
    };
    let ends = groups
        .column(end)
        .as_primitive::<TimestampMicrosecondType>();
    let done: BooleanArray = ends
        .iter()
        .map(|e| Some(e.is_some_and(|e| e <= watermark)))
        .collect();
    Ok((
        filter_record_batch(groups, &done)?,
        filter_record_batch(groups, &not(&done)?)?,
    ))
}

const WATERMARKS: &str = "sluice.watermarks";

/// Where a view's state snapshots are kept.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    /// The snapshots kept in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.arrow"))
    }

    /// Writes snapshot `number` of `state`, durably, before a commit names it.
    pub fn write(&self, number: u64, state: &State) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut metadata = state.groups.schema().metadata().clone();
        if let Some(w) = &state.watermarks {
            metadata.insert(
                WATERMARKS.to_string(),
                serde_json::to_string(w).map_err(|e| PipelineError::Internal(e.to_string()))?,
            );
        }
        let schema = Schema::new_with_metadata(state.groups.schema().fields().clone(), metadata);
        let path = self.path(number);
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut writer = FileWriter::try_new(file, &schema)?;
        writer.write(&state.groups.clone().with_schema(Arc::new(schema.clone()))?)?;
        let file = writer.into_inner()?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))
    }

    /// Reads snapshot `number`, whose groups have `schema`.
    pub fn read(&self, number: u64, schema: &SchemaRef) -> Result<State> {
        let path = self.path(number);
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        let reader = FileReader::try_new(file, None)?;
        let watermarks = match reader.schema().metadata().get(WATERMARKS) {
            Some(json) => Some(
                serde_json::from_str(json)
                    .map_err(|e| PipelineError::Internal(format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let groups = concat_batches(schema, &batches).map_err(|e| {
            PipelineError::Internal(format!(
                "{}: the snapshot does not fit the view's state ({e}): was the view's query changed?",
                path.display()
            ))
        })?;
        Ok(State { groups, watermarks })
    }

    /// Deletes every snapshot but `keep`.
    pub fn retain(&self, keep: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let keep = self.path(keep);
        for entry in entries.flatten() {
            if entry.path() != keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}
