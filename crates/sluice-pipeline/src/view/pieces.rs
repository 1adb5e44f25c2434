//! The pieces of a view spread over a cluster's workers: what one round of one worker took from
//! one partition of the view's input, on its way to the worker that finishes the view.
//!
//! Each partition has a chain of pieces in the lake, numbered from 0
//! (`.sluice/cluster-<name>-pieces/<view>-<id>-<partition>-<n>.arrow`). A piece holds the
//! Partial states of the round's on-time rows, its late rows (and the ranges retention deleted)
//! as rows of the view's errors table, the positions it covers (`from..to`), the partition's
//! mark before and after it (its watermark: see `spread`), and whether the partition was idle.
//! A piece is written with a conditional put: each number is written once, by whoever came
//! first, so a chain is one sequence that every worker sees alike.
//!
//! A piece is two Arrow IPC files, one after the other: the states, its header (JSON) in their
//! schema's metadata, then the errors table's rows; the first file's length comes first (eight
//! bytes, little-endian).

use std::collections::BTreeMap;
use std::io::Cursor as Bytes;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};
use sluice_lake::Documents;

use super::watermark::Micros;
use crate::decode;
use crate::exactly_once::Partition;
use crate::{PipelineError, Result};

/// Where a spread view is in one partition's chain: the next piece to take, the position after
/// the last piece taken, and the partition's mark after it. What the view's table records for
/// the finisher (`exactly_once`, rule 8); what a worker holding the partition goes on from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The number of the next piece.
    pub next: u64,
    /// The position after the pieces before it (none: the partition was never read).
    pub position: Option<u64>,
    /// The partition's mark after them (none: no event time yet).
    pub mark: Option<Micros>,
}

impl Cursor {
    /// The cursor after `piece` (the one at `self.next`).
    pub fn after(&self, piece: &Header) -> Cursor {
        let moved = piece.records > 0 || piece.to != piece.from;
        Cursor {
            next: self.next + 1,
            // A partition never read stays so past a piece of no records.
            position: match (self.position, moved) {
                (None, false) => None,
                _ => Some(piece.to),
            },
            mark: piece.mark,
        }
    }

    /// Whether `piece`, found at `self.next`, goes on from here: it starts at this position and
    /// judged lateness against this mark. One that does not was written by a worker that had
    /// lost the partition without having heard (see `spread`).
    pub fn followed_by(&self, piece: &Header) -> bool {
        self.position.is_none_or(|at| at == piece.from) && self.mark == piece.judged
    }
}

/// What a piece says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The position of its first record.
    pub from: u64,
    /// The position after its last record (`from` for a piece of no records).
    pub to: u64,
    /// The mark its records were judged against (late: older than it).
    pub judged: Option<Micros>,
    /// The partition's mark after it.
    pub mark: Option<Micros>,
    /// How many records it took.
    pub records: u64,
    /// Whether the partition had received nothing for the idle timeout.
    pub idle: bool,
}

/// A piece of a partition's chain.
#[derive(Debug, Clone)]
pub struct Piece {
    /// What it says about itself.
    pub header: Header,
    /// The Partial states of its on-time rows, in the view's state schema.
    pub states: RecordBatch,
    /// Its late rows and lost ranges, as rows of the errors table.
    pub errors: RecordBatch,
}

impl Piece {
    /// The finisher's piece of no records after `at`, with the partition's mark `mark`: a
    /// chain's seed, or a marker raising an `idle` partition's mark.
    pub fn marker(at: &Cursor, mark: Option<Micros>, idle: bool, schema: &SchemaRef) -> Piece {
        Piece {
            header: Header {
                from: at.position.unwrap_or(0),
                to: at.position.unwrap_or(0),
                judged: at.mark,
                mark,
                records: 0,
                idle,
            },
            states: RecordBatch::new_empty(schema.clone()),
            errors: RecordBatch::new_empty(decode::error_schema()),
        }
    }

    /// Whether it took no records and moved no position (an idle partition's, or the
    /// finisher's raising its mark).
    pub fn empty(&self) -> bool {
        self.header.records == 0 && self.header.from == self.header.to
    }
}

/// The chains of one view's pieces, among a cluster's.
#[derive(Debug, Clone)]
pub struct Pieces {
    files: Documents,
    /// What this view's pieces' names start with.
    prefix: String,
}

const HEADER: &str = "sluice.piece";

impl Pieces {
    /// The pieces of view `view` incarnation `id`, among a cluster's `files`.
    pub fn new(files: Documents, view: &str, id: u64) -> Pieces {
        Pieces {
            files,
            prefix: format!("{view}-{id:016x}-"),
        }
    }

    fn name(&self, partition: Partition, number: u64) -> String {
        format!("{}{partition}-{number:020}", self.prefix)
    }

    /// Writes `piece` as number `number` of `partition`'s chain, unless that number is
    /// written: whether it was.
    pub async fn put(&self, partition: Partition, number: u64, piece: &Piece) -> Result<bool> {
        let bytes = encode(piece)?;
        Ok(self
            .files
            .put(&self.name(partition, number), bytes, true)
            .await?)
    }

    /// Piece `number` of `partition`'s chain, if it is written; its states in `schema`.
    pub async fn get(
        &self,
        partition: Partition,
        number: u64,
        schema: &SchemaRef,
    ) -> Result<Option<Piece>> {
        let name = self.name(partition, number);
        match self.files.get(&name).await? {
            Some(bytes) => Ok(Some(decode(&bytes, schema, &name)?)),
            None => Ok(None),
        }
    }

    /// Deletes the pieces before `before`'s number of each partition it names (or, with none,
    /// every piece of the view).
    pub async fn delete(&self, before: Option<&BTreeMap<Partition, u64>>) -> Result<()> {
        for (name, _) in self.files.tags().await? {
            let Some(rest) = name.strip_prefix(&self.prefix) else {
                continue;
            };
            let numbered = rest
                .split_once('-')
                .and_then(|(p, n)| Some((p.parse::<Partition>().ok()?, n.parse::<u64>().ok()?)));
            let taken = match (before, numbered) {
                (None, _) => true,
                (Some(before), Some((p, n))) => before.get(&p).is_some_and(|&next| n < next),
                (Some(_), None) => false,
            };
            if taken {
                self.files.delete(&name).await?;
            }
        }
        Ok(())
    }
}

fn encode(piece: &Piece) -> Result<Vec<u8>> {
    let header =
        serde_json::to_string(&piece.header).map_err(|e| PipelineError::Internal(e.to_string()))?;
    let mut metadata = piece.states.schema().metadata().clone();
    metadata.insert(HEADER.to_string(), header);
    let schema = Arc::new(Schema::new_with_metadata(
        piece.states.schema().fields().clone(),
        metadata,
    ));
    let states = ipc(&piece.states.clone().with_schema(schema)?)?;
    let errors = ipc(&piece.errors)?;
    let mut bytes = Vec::with_capacity(8 + states.len() + errors.len());
    bytes.extend_from_slice(&(states.len() as u64).to_le_bytes());
    bytes.extend(states);
    bytes.extend(errors);
    Ok(bytes)
}

fn ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut writer = FileWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

/// The piece `origin` holds, its states in `schema`.
fn decode(bytes: &[u8], schema: &SchemaRef, origin: &str) -> Result<Piece> {
    let broken = |why: String| PipelineError::Internal(format!("piece {origin}: {why}"));
    let (length, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| broken("too short".into()))?;
    let length = u64::from_le_bytes(*length) as usize;
    if length > rest.len() {
        return Err(broken("too short".into()));
    }
    let (states, errors) = rest.split_at(length);
    let reader = FileReader::try_new(Bytes::new(states), None)?;
    let header: Header = reader
        .schema()
        .metadata()
        .get(HEADER)
        .map(|json| serde_json::from_str(json).map_err(|e| broken(e.to_string())))
        .transpose()?
        .ok_or_else(|| broken("no header".into()))?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let states = concat_batches(schema, &batches).map_err(|e| {
        broken(format!(
            "its states do not fit the view's ({e}): was the view's query changed?"
        ))
    })?;
    let reader = FileReader::try_new(Bytes::new(errors), None)?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let errors = concat_batches(&decode::error_schema(), &batches)?;
    Ok(Piece {
        header,
        states,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};

    #[tokio::test]
    async fn a_number_is_written_once_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lake = sluice_lake::Lake::local(dir.path()).unwrap();
        let pieces = Pieces::new(lake.files("pieces", "arrow"), "v", 7);
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let states =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        let piece = Piece {
            header: Header {
                from: 10,
                to: 12,
                judged: None,
                mark: Some(5),
                records: 2,
                idle: false,
            },
            states,
            errors: RecordBatch::new_empty(decode::error_schema()),
        };
        assert!(pieces.put(3, 0, &piece).await.unwrap());
        let other = Piece::marker(&Cursor::default(), Some(9), true, &schema);
        let idle = Cursor::default().after(&other.header);
        assert_eq!(idle.position, None, "a partition never read stays so");
        assert!(!pieces.put(3, 0, &other).await.unwrap(), "written once");
        let read = pieces.get(3, 0, &schema).await.unwrap().unwrap();
        assert_eq!(read.header, piece.header);
        assert_eq!(read.states.num_rows(), 2);
        assert!(pieces.get(3, 1, &schema).await.unwrap().is_none());
        assert!(Cursor::default().followed_by(&read.header));
        let after = Cursor::default().after(&read.header);
        assert_eq!(
            (after.next, after.position, after.mark),
            (1, Some(12), Some(5))
        );
        assert!(
            !after.followed_by(&read.header),
            "a piece starting elsewhere"
        );
        assert!(pieces.put(3, 1, &other).await.unwrap());
        pieces
            .delete(Some(&BTreeMap::from([(3, 1)])))
            .await
            .unwrap();
        assert!(pieces.get(3, 0, &schema).await.unwrap().is_none());
        assert!(pieces.get(3, 1, &schema).await.unwrap().is_some());
        pieces.delete(None).await.unwrap();
        assert!(pieces.get(3, 1, &schema).await.unwrap().is_none());
    }
}
