//! The state of an aggregating view, and its snapshots.
//!
//! The state is Arrow: one row per open group (a window not yet emitted, or a key of an
//! updating view), in the partial-state schema of the view's aggregate (the group's columns,
//! then each aggregate's state columns, as DataFusion's `Partial` mode gives them). A round
//! merges into it only the groups its rows touched, so a round costs what it touched, not the
//! whole state; a window leaves the state when it is emitted.
//!
//! Snapshots: before the commit that records a round, the state after it is written as snapshot
//! `n` (Arrow IPC; the watermarks in its schema's metadata), durably, then named by the commit
//! (`txn` app id `snapshot`, version `n`). A restart loads the snapshot the last commit names,
//! so it resumes with the state exactly as that commit left it, without reading history again;
//! snapshots older than the one named are deleted.
//!
//! A single Sluice keeps them in its data directory (`<dir>/<n>.arrow`, synced); a cluster's
//! workers in the lake (`.sluice/cluster-<name>-states/<view>-<id>-<n>.arrow`), where whichever
//! worker runs the view next finds them. There a worker that has not yet heard that the view
//! moved may write a snapshot while the new runner writes its own: a number is never written
//! twice (its low bits are random, and it is written with a conditional put), so neither
//! overwrites the other's, and the view's table takes only one of their commits.

use std::collections::HashSet;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch, not};
use arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use sluice_lake::Documents;

use super::plan::ViewPlan;
use super::watermark::{Micros, Watermarks};
use super::window::merge_sessions;
use crate::{PipelineError, Result, blocking};

/// An aggregating view's state between rounds.
#[derive(Debug, Clone)]
pub struct State {
    /// One row per open group, in the aggregate's partial-state schema.
    pub groups: RecordBatch,
    /// Event-time progress (windowed views).
    pub watermarks: Option<Watermarks>,
    /// Event-time progress of each input of a join (`super::join`); empty for other views.
    pub sides: Vec<Watermarks>,
}

impl State {
    /// A view's state before its first round: no group, in the partial-state `schema`.
    pub fn empty(schema: SchemaRef, watermarks: Option<Watermarks>) -> Self {
        Self {
            groups: RecordBatch::new_empty(schema),
            watermarks,
            sides: Vec::new(),
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
const SIDES: &str = "sluice.join.watermarks";

/// How many low bits of a snapshot's number are random: the rest count the view's snapshots.
const RANDOM_BITS: u32 = 20;

/// Where a view's state snapshots are kept (see the module docs).
#[derive(Debug, Clone)]
pub enum Snapshots {
    /// A folder of the data directory: `<n>.arrow`, synced.
    Dir(PathBuf),
    /// A cluster's folder in the lake: `<prefix>-<n>.arrow`, the prefix naming the view and
    /// its incarnation.
    Lake {
        /// The cluster's snapshots.
        files: Documents,
        /// What this view's snapshots' names start with.
        prefix: String,
    },
}

impl Snapshots {
    /// The snapshots of view `view` incarnation `id`, among a cluster's `files`.
    pub fn in_lake(files: Documents, view: &str, id: u64) -> Self {
        Snapshots::Lake {
            files,
            prefix: format!("{view}-{id:016x}"),
        }
    }

    fn path(dir: &Path, number: u64) -> PathBuf {
        dir.join(format!("{number:020}.arrow"))
    }

    fn name(prefix: &str, number: u64) -> String {
        format!("{prefix}-{number:020}")
    }

    /// Writes the snapshot that follows snapshot `after` (0: none), durably, before a commit
    /// names it; returns its number.
    pub async fn write(&self, after: u64, state: &State) -> Result<u64> {
        let bytes = encode(state)?;
        loop {
            let number = ((after >> RANDOM_BITS) + 1) << RANDOM_BITS
                | sluice_log::new_id()? & ((1 << RANDOM_BITS) - 1);
            let written = match self {
                Snapshots::Dir(dir) => {
                    let (dir, bytes) = (dir.clone(), bytes.clone());
                    blocking(move || write_synced(&dir, &Self::path(&dir, number), &bytes)).await?;
                    true
                }
                Snapshots::Lake { files, prefix } => {
                    files
                        .put(&Self::name(prefix, number), bytes.clone(), true)
                        .await?
                }
            };
            // Taken by another writer of the view (one that has not heard it moved): another.
            if written {
                return Ok(number);
            }
        }
    }

    /// Reads snapshot `number`, whose groups have `schema`.
    pub async fn read(&self, number: u64, schema: &SchemaRef) -> Result<State> {
        let (bytes, origin) = match self {
            Snapshots::Dir(dir) => {
                let path = Self::path(dir, number);
                let origin = path.display().to_string();
                (
                    blocking(move || std::fs::read(&path).map_err(|e| io(&path, e))).await?,
                    origin,
                )
            }
            Snapshots::Lake { files, prefix } => {
                let name = Self::name(prefix, number);
                let bytes = files.get(&name).await?.ok_or_else(|| {
                    PipelineError::Internal(format!("the view's snapshot {name} is missing"))
                })?;
                (bytes, name)
            }
        };
        decode(bytes, schema, &origin)
    }

    /// Deletes the snapshots older than `keep`.
    pub async fn retain(&self, keep: u64) -> Result<()> {
        let older = move |name: &str| name.parse::<u64>().is_ok_and(|n| n < keep);
        match self {
            Snapshots::Dir(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        return Ok(());
                    };
                    for entry in entries.flatten() {
                        let name = entry.file_name();
                        let name = name.to_string_lossy();
                        let number = name.strip_suffix(".arrow").unwrap_or(&name);
                        // A snapshot being written when the process died: unnamed.
                        if older(number) || name.ends_with(".tmp") {
                            let _ = std::fs::remove_file(entry.path());
                        }
                    }
                    Ok(())
                })
                .await
            }
            Snapshots::Lake { files, prefix } => {
                let start = format!("{prefix}-");
                for (name, _) in files.tags().await? {
                    if name.strip_prefix(&start).is_some_and(older) {
                        files.delete(&name).await?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A state as a snapshot's bytes: Arrow IPC, the watermarks in the schema's metadata.
fn encode(state: &State) -> Result<Vec<u8>> {
    let mut metadata = state.groups.schema().metadata().clone();
    if let Some(w) = &state.watermarks {
        metadata.insert(WATERMARKS.to_string(), to_json(w)?);
    }
    if !state.sides.is_empty() {
        metadata.insert(SIDES.to_string(), to_json(&state.sides)?);
    }
    let schema = Schema::new_with_metadata(state.groups.schema().fields().clone(), metadata);
    let mut writer = FileWriter::try_new(Vec::new(), &schema)?;
    writer.write(&state.groups.clone().with_schema(Arc::new(schema.clone()))?)?;
    Ok(writer.into_inner()?)
}

/// The state snapshot `origin` holds, its groups in `schema`.
fn decode(bytes: Vec<u8>, schema: &SchemaRef, origin: &str) -> Result<State> {
    let reader = FileReader::try_new(Cursor::new(bytes), None)?;
    let metadata = reader.schema().metadata().clone();
    let from_json = |key: &str| metadata.get(key).cloned();
    let watermarks = from_json(WATERMARKS)
        .map(|json| serde_json::from_str(&json))
        .transpose();
    let sides = from_json(SIDES)
        .map(|json| serde_json::from_str(&json))
        .transpose();
    let corrupt = |e: serde_json::Error| PipelineError::Internal(format!("{origin}: {e}"));
    let (watermarks, sides) = (
        watermarks.map_err(corrupt)?,
        sides.map_err(corrupt)?.unwrap_or_default(),
    );
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let groups = concat_batches(schema, &batches).map_err(|e| {
        PipelineError::Internal(format!(
            "{origin}: the snapshot does not fit the view's state ({e}): was the view's query \
             changed?"
        ))
    })?;
    Ok(State {
        groups,
        watermarks,
        sides,
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| PipelineError::Internal(e.to_string()))
}

/// Writes `bytes` to `path` in `dir` durably: a temporary file synced, renamed, the folder synced.
fn write_synced(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn io(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}
