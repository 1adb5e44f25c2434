//! The two inputs of a join, as one source: what a view joining two streams (or a stream
//! with itself) reads.
//!
//! Each side keeps its own partitions and positions. So that one set of positions records
//! both (`exactly_once`, rule 1, unchanged), the second side's partitions are numbered from
//! [`SECOND_SIDE`]: its shard `n` is partition `65536 + n` of the joined source, in the
//! view's `txn` positions, in the `_shard` column of the rows it reads and of the view's
//! errors table. A stream read twice (a self-join) is two sides, read apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int32Array, RecordBatch};
use arrow::datatypes::{Int32Type, SchemaRef};
use async_trait::async_trait;

use super::{Bounds, Limits, PartRead, SharedSource, Source, SourceRead};
use crate::Result;
use crate::decode;
use crate::exactly_once::{Partition, Positions};

/// Where the second side's partitions start in the joined source's numbering.
pub const SECOND_SIDE: Partition = 1 << 16;

/// The side of the join a partition of the joined source belongs to (0 or 1), and its number
/// in that side's own source.
pub fn side_of(partition: Partition) -> (usize, Partition) {
    match partition >= SECOND_SIDE {
        true => (1, partition - SECOND_SIDE),
        false => (0, partition),
    }
}

/// Two sources read as one (see the module's documentation).
pub struct Joined {
    sides: [SharedSource; 2],
    name: String,
    id: u64,
}

impl Joined {
    /// `left` and `right`, read as one source.
    pub fn new(left: SharedSource, right: SharedSource) -> Self {
        let name = format!("{} ⋈ {}", left.name(), right.name());
        // Positions are of this pair of incarnations: either dropped and created again makes
        // another pair (`exactly_once`, rule 5).
        let id = left.id().rotate_left(32) ^ right.id();
        Joined {
            sides: [left, right],
            name,
            id,
        }
    }

    /// The source of side `side`.
    pub fn side(&self, side: usize) -> &SharedSource {
        &self.sides[side]
    }
}

fn numbered(side: usize, partition: Partition) -> Partition {
    match side {
        0 => partition,
        _ => SECOND_SIDE + partition,
    }
}

/// The entries of `map` that belong to side `side`, in that side's own numbering.
fn of_side<T: Copy>(map: &BTreeMap<Partition, T>, side: usize) -> BTreeMap<Partition, T> {
    map.iter()
        .filter_map(|(&p, &v)| {
            let (s, own) = side_of(p);
            (s == side).then_some((own, v))
        })
        .collect()
}

/// `batch` with its `_shard` column renumbered for side `side` (a batch without one as it is).
fn renumbered(batch: RecordBatch, side: usize) -> Result<RecordBatch> {
    let Ok(at) = batch.schema().index_of(decode::SHARD) else {
        return Ok(batch);
    };
    if side == 0 || batch.num_rows() == 0 {
        return Ok(batch);
    }
    let shards = batch.column(at).as_primitive::<Int32Type>();
    let shards: Int32Array = shards.unary(|s| numbered(side, s as Partition) as i32);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[at] = Arc::new(shards);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[async_trait]
impl Source for Joined {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> u64 {
        self.id
    }

    /// The first side's: the sides' rows differ, and each part of a read is one side's.
    fn schema(&self) -> &SchemaRef {
        self.sides[0].schema()
    }

    async fn bounds(&self) -> Result<BTreeMap<Partition, Bounds>> {
        let (left, right) = tokio::try_join!(self.sides[0].bounds(), self.sides[1].bounds())?;
        if let Some(&too_far) = [&left, &right]
            .iter()
            .find_map(|b| b.keys().find(|&&p| p >= SECOND_SIDE))
        {
            return Err(crate::PipelineError::Unsupported(format!(
                "'{}' has a partition numbered {too_far}: a join's inputs have fewer than \
                 {SECOND_SIDE}",
                self.name
            )));
        }
        Ok([left, right]
            .into_iter()
            .enumerate()
            .flat_map(|(side, bounds)| bounds.into_iter().map(move |(p, b)| (numbered(side, p), b)))
            .collect())
    }

    async fn read(&self, from: &Positions, limits: &Limits) -> Result<SourceRead> {
        let read = |side: usize| {
            let (from, limits) = (of_side(from, side), of_side(limits, side));
            let source = self.sides[side].clone();
            async move {
                match limits.is_empty() {
                    true => Ok(SourceRead {
                        parts: Vec::new(),
                        backlog: false,
                    }),
                    false => source.read(&from, &limits).await,
                }
            }
        };
        let (left, right) = tokio::try_join!(read(0), read(1))?;
        let backlog = left.backlog || right.backlog;
        let mut parts = Vec::with_capacity(left.parts.len() + right.parts.len());
        for (side, read) in [left, right].into_iter().enumerate() {
            for part in read.parts {
                parts.push(PartRead {
                    partition: numbered(side, part.partition),
                    rows: renumbered(part.rows, side)?,
                    errors: renumbered(part.errors, side)?,
                    gap: part.gap.map(|mut gap| {
                        gap.partition = numbered(side, gap.partition);
                        gap
                    }),
                    ..part
                });
            }
        }
        Ok(SourceRead { parts, backlog })
    }

    fn time_lag(&self, positions: &Positions) -> BTreeMap<Partition, u64> {
        (0..2)
            .flat_map(|side| {
                self.sides[side]
                    .time_lag(&of_side(positions, side))
                    .into_iter()
                    .map(move |(p, lag)| (numbered(side, p), lag))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_side_is_numbered_apart_and_back() {
        assert_eq!(side_of(numbered(0, 7)), (0, 7));
        assert_eq!(side_of(numbered(1, 7)), (1, 7));
        assert_eq!(numbered(1, 0), 65536);
        let map = BTreeMap::from([
            (0, 'a'),
            (3, 'b'),
            (SECOND_SIDE, 'c'),
            (SECOND_SIDE + 2, 'd'),
        ]);
        assert_eq!(of_side(&map, 0), BTreeMap::from([(0, 'a'), (3, 'b')]));
        assert_eq!(of_side(&map, 1), BTreeMap::from([(0, 'c'), (2, 'd')]));
    }
}
