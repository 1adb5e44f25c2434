//! An aggregating view spread over a cluster's workers: each partition of its input is
//! aggregated where it is held, and the worker holding partition 0 finishes the whole, so that
//! the work grows with the workers and the rows are those of one Sluice, whatever the grouping.
//!
//! ```text
//!  each worker, its partitions:  records ─► late? ─► windows ─► pre ─► Partial ─► piece n of p
//!                                (judged against p's mark)      (conditional put: written once)
//!  the holder of partition 0:    pieces of every partition, in order ─► merge into the state
//!                                ─► windows every partition's mark passed ─► Final ─► <view>
//! ```
//!
//! **Pieces** (`pieces`): a worker's round makes one piece of each partition it holds that took
//! records, and writes it as the next number of the partition's chain. A put refused means
//! another wrote that number: a piece of no records (the finisher's marker, below) is taken and
//! the piece made again against it; any other means another worker holds the partition now,
//! and the round fails (`Reassigned`): the pipeline is opened again.
//!
//! **Marks.** A partition's mark is its watermark: its latest event time minus the stream's
//! delay, never going back. Its holder judges lateness against it (an event older than its
//! partition's mark is late, as Kafka Streams judges it by its task's stream time), and the
//! piece carries the mark it judged against and the mark after it.
//!
//! **Finishing.** The finisher takes each partition's pieces in order from where its table's
//! last commit left it (`exactly_once`, rule 8), each only if it follows on, and merges their
//! states into the view's. A window closes when every partition's mark has passed its end (the
//! lowest mark: the issue's "minimum watermark over all partitions"), and no piece can then
//! bring it a row: a piece judged against a mark below the window's end is taken before the
//! mark that closes it. Its commit carries the rows, the pieces' late rows (to the errors table,
//! first), every partition's next piece, position and mark, and the state snapshot.
//!
//! **Idle partitions.** A partition that has taken nothing for the idle timeout says so with a
//! piece of no records (again every timeout while idle). The finisher does not wait on an idle
//! partition's mark: when windows would close but for idle partitions, it raises their marks
//! to the lowest of the others' (when every partition is idle, the highest) by writing a
//! marker into each of their chains. The chain orders the marker and the holder's next piece:
//! either the marker comes first, and the holder judges its records against the raised mark
//! (an event older than the others' progress is late, as it is on one Sluice), or the piece
//! does, and the partition is not idle.
//!
//! **Cleaning.** The pieces a commit took are deleted a minute later. A worker that lost its
//! partition without having heard writes at most a round more; a piece that does not follow on
//! fails the finisher's round, loudly, rather than being taken.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};

use super::pieces::{Cursor, Header, Piece, Pieces};
use super::plan::ViewPlan;
use super::round;
use super::watermark::Micros;
use crate::decode;
use crate::exactly_once::{Partition, Positions, past};
use crate::source::{PartRead, Source, SourceRead, StreamSource, gap_rows};
use crate::{PipelineError, Result};

/// At most this many pieces of a partition are taken in one of the finisher's rounds.
const PIECES_A_ROUND: usize = 64;

/// How long after the commit that took them pieces are deleted.
const KEEP_TAKEN_MS: u64 = 60_000;

/// One worker's part in a spread view.
pub(super) struct Spread {
    pieces: Pieces,
    /// The view's state schema: a piece's states.
    schema: SchemaRef,
    /// The view's input, every partition of it (the finisher's).
    whole: StreamSource,
    /// The stream's watermark delay.
    delay: Micros,
    /// Per partition this worker holds: where its chain ends.
    tips: BTreeMap<Partition, Tip>,
    /// The finisher's (the holder of partition 0's): per partition, where the table's last
    /// commit left it.
    cursors: Option<BTreeMap<Partition, Cursor>>,
    /// The finisher's: partitions whose last piece taken said they were idle.
    idle: BTreeSet<Partition>,
    /// The finisher's: the pieces before these numbers are deleted from `at` on (ms).
    to_delete: (u64, BTreeMap<Partition, u64>),
}

/// Where a held partition's chain ends, and how long the partition has been idle.
struct Tip {
    cursor: Cursor,
    /// When it last took records (ms).
    active_ms: u64,
    /// When it last said it was idle (ms).
    idle_said_ms: Option<u64>,
}

/// What the finisher took from the chains in a round.
pub(super) struct Taken {
    /// Per partition, where the pieces taken leave it.
    pub cursors: BTreeMap<Partition, Cursor>,
    /// Their states, in partition order, each partition's in its chain's order.
    pub states: Vec<RecordBatch>,
    /// Their late rows and lost ranges.
    pub errors: RecordBatch,
    /// How many pieces were taken.
    pub pieces: usize,
    /// Per partition whose pieces were taken, whether the last said it was idle.
    pub idle: BTreeMap<Partition, bool>,
}

impl Spread {
    /// A worker's part in a view whose table recorded `cursors` (every partition's), holding
    /// `held`; the finisher when it holds partition 0.
    pub(super) async fn open(
        pieces: Pieces,
        schema: SchemaRef,
        whole: StreamSource,
        delay: Micros,
        held: &BTreeSet<Partition>,
        cursors: BTreeMap<Partition, Cursor>,
        now_ms: u64,
    ) -> Result<Spread> {
        let mut tips = BTreeMap::new();
        for &partition in held {
            // The chain's end: past the pieces written, whether taken yet or not.
            let mut cursor = cursors.get(&partition).copied().unwrap_or_default();
            loop {
                let (end, found) = follow(&pieces, &schema, partition, cursor).await?;
                cursor = end;
                if found.len() < PIECES_A_ROUND {
                    break;
                }
            }
            let tip = Tip {
                cursor,
                active_ms: now_ms,
                idle_said_ms: None,
            };
            tips.insert(partition, tip);
        }
        let finisher = held.contains(&0);
        let taken: BTreeMap<Partition, u64> = cursors.iter().map(|(&p, c)| (p, c.next)).collect();
        Ok(Spread {
            pieces,
            schema,
            whole,
            delay,
            tips,
            to_delete: (now_ms + KEEP_TAKEN_MS, taken),
            cursors: finisher.then_some(cursors),
            idle: BTreeSet::new(),
        })
    }

    /// Whether this worker finishes the view.
    pub(super) fn finisher(&self) -> bool {
        self.cursors.is_some()
    }

    /// Where this worker's next read of its partitions starts: the ends of their chains.
    pub(super) fn next_read(&self) -> Positions {
        self.tips
            .iter()
            .filter_map(|(&p, tip)| Some((p, tip.cursor.position?)))
            .collect()
    }

    /// The lowest mark over every partition as the finisher's table left them: windows ending
    /// by it are closed (none on a worker that does not finish the view).
    pub(super) fn watermark(&self) -> Option<Micros> {
        lowest(self.cursors.as_ref()?)
    }

    /// Makes a piece of each partition `read` took records from (or that has been idle for
    /// `idle_ms`) and writes it to the partition's chain. Returns how many were written.
    pub(super) async fn make_pieces(
        &mut self,
        plan: &Arc<ViewPlan>,
        read: &SourceRead,
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<usize> {
        let mut written = 0;
        for part in &read.parts {
            let partition = part.partition;
            let tip = self.tips.get_mut(&partition).ok_or_else(|| {
                PipelineError::Reassigned(format!("partition {partition} was read but is not held"))
            })?;
            let idle = part.records == 0 && part.gap.is_none();
            if idle {
                // Nothing taken: a piece only to say the partition is idle, once a timeout.
                let quiet = now_ms.saturating_sub(tip.active_ms) >= idle_ms;
                let said = tip
                    .idle_said_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) < idle_ms);
                if !quiet || said || read.backlog {
                    continue;
                }
                tip.idle_said_ms = Some(now_ms);
            } else {
                tip.active_ms = now_ms;
                tip.idle_said_ms = None;
            }
            let made = Made::of(part, &tip.cursor, plan, now_ms)?;
            loop {
                let piece = made.piece(plan, &tip.cursor, self.delay).await?;
                if self.pieces.put(partition, tip.cursor.next, &piece).await? {
                    tip.cursor = tip.cursor.after(&piece.header);
                    break;
                }
                pass_markers(&self.pieces, &self.schema, partition, tip).await?;
            }
            written += 1;
        }
        Ok(written)
    }

    /// The finisher's round: takes the pieces written since its table's last commit.
    pub(super) async fn take(&self) -> Result<Taken> {
        let cursors = self.cursors.as_ref().ok_or_else(|| {
            PipelineError::Internal("a worker that does not finish the view took pieces".into())
        })?;
        let mut partitions: BTreeSet<Partition> = self.whole.bounds().await?.into_keys().collect();
        partitions.extend(cursors.keys());
        let mut taken = Taken {
            cursors: BTreeMap::new(),
            states: Vec::new(),
            errors: RecordBatch::new_empty(decode::error_schema()),
            pieces: 0,
            idle: BTreeMap::new(),
        };
        // Each partition's chain is read apart from the others', all at once.
        let chains = partitions.into_iter().map(|partition| {
            let cursor = cursors.get(&partition).copied().unwrap_or_default();
            async move {
                let (end, pieces) = follow(&self.pieces, &self.schema, partition, cursor).await?;
                Ok::<_, PipelineError>((partition, end, pieces))
            }
        });
        let mut errors = Vec::new();
        for (partition, cursor, pieces) in futures::future::try_join_all(chains).await? {
            for piece in pieces {
                taken.idle.insert(partition, piece.header.idle);
                taken.states.push(piece.states);
                errors.push(piece.errors);
                taken.pieces += 1;
            }
            taken.cursors.insert(partition, cursor);
        }
        taken.errors = concat_batches(&decode::error_schema(), &errors)?;
        Ok(taken)
    }

    /// Notes which partitions the pieces `taken` leave idle: those whose last piece said so.
    pub(super) fn note_idle(&mut self, taken: &Taken) {
        for (&partition, &idle) in &taken.idle {
            match idle {
                true => self.idle.insert(partition),
                false => self.idle.remove(&partition),
            };
        }
    }

    /// The mark the finisher closes windows at, after the pieces `taken`: the lowest over
    /// every partition. When windows among `groups` (whose window ends are column `end`) would
    /// close at the active partitions' lowest mark but for idle partitions', theirs are raised
    /// to it by a marker each first (a marker refused: the partition took records meanwhile).
    pub(super) async fn close_at(
        &self,
        taken: &mut Taken,
        groups: &[&RecordBatch],
        end: usize,
    ) -> Result<Option<Micros>> {
        let now = lowest(&taken.cursors);
        let active: BTreeMap<Partition, Cursor> = taken
            .cursors
            .iter()
            .filter(|(p, _)| !self.idle.contains(p))
            .map(|(&p, &c)| (p, c))
            .collect();
        let target = match active.is_empty() {
            true => taken.cursors.values().filter_map(|c| c.mark).max(),
            false => lowest(&active),
        };
        let Some(target) = target.filter(|&t| now.is_none_or(|n| t > n)) else {
            return Ok(now);
        };
        let waiting = groups.iter().any(|g| {
            g.column(end)
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .flatten()
                .any(|e| e <= target && now.is_none_or(|n| e > n))
        });
        if !waiting {
            return Ok(now);
        }
        for (&partition, cursor) in taken.cursors.iter_mut() {
            if !self.idle.contains(&partition) || cursor.mark.is_some_and(|m| m >= target) {
                continue;
            }
            let marker = Piece::marker(cursor, Some(target), &self.schema);
            if self.pieces.put(partition, cursor.next, &marker).await? {
                *cursor = cursor.after(&marker.header);
                taken.pieces += 1;
            }
        }
        Ok(lowest(&taken.cursors))
    }

    /// The finisher's commit of `cursors` landed: they are its table's now, and the pieces
    /// before them are deleted a minute on.
    pub(super) async fn committed(&mut self, cursors: BTreeMap<Partition, Cursor>, now_ms: u64) {
        if now_ms >= self.to_delete.0 {
            let before = std::mem::take(&mut self.to_delete.1);
            if let Err(e) = self.pieces.delete(Some(&before)).await {
                tracing::warn!(error = %e, "cannot delete a view's pieces taken");
            }
            let next = cursors.iter().map(|(&p, c)| (p, c.next)).collect();
            self.to_delete = (now_ms + KEEP_TAKEN_MS, next);
        }
        self.cursors = Some(cursors);
    }
}

/// The lowest of `cursors`' marks: none while one has none.
fn lowest(cursors: &BTreeMap<Partition, Cursor>) -> Option<Micros> {
    cursors
        .values()
        .map(|c| c.mark)
        .try_fold(None, |low: Option<Micros>, mark| {
            let mark = mark?;
            Some(Some(low.map_or(mark, |l| l.min(mark))))
        })
        .flatten()
}

/// The pieces of `partition`'s chain from `cursor` on (at most [`PIECES_A_ROUND`]), and where
/// they leave it; a piece that does not follow on is refused.
async fn follow(
    pieces: &Pieces,
    schema: &SchemaRef,
    partition: Partition,
    mut cursor: Cursor,
) -> Result<(Cursor, Vec<Piece>)> {
    let mut found = Vec::new();
    while found.len() < PIECES_A_ROUND {
        let Some(piece) = pieces.get(partition, cursor.next, schema).await? else {
            break;
        };
        if !cursor.followed_by(&piece.header) {
            return Err(astray(partition, cursor.next, &piece.header, &cursor));
        }
        cursor = cursor.after(&piece.header);
        found.push(piece);
    }
    Ok((cursor, found))
}

fn astray(partition: Partition, number: u64, piece: &Header, cursor: &Cursor) -> PipelineError {
    PipelineError::Internal(format!(
        "piece {number} of partition {partition} starts at {} judged against {:?}, but the chain \
         is at {:?} with mark {:?}: it was written by a worker that had lost the partition",
        piece.from, piece.judged, cursor.position, cursor.mark
    ))
}

/// After a put at `tip` was refused: passes the pieces of no records written since (the
/// finisher's markers); one with records means another worker holds the partition now.
async fn pass_markers(
    pieces: &Pieces,
    schema: &SchemaRef,
    partition: Partition,
    tip: &mut Tip,
) -> Result<()> {
    while let Some(found) = pieces.get(partition, tip.cursor.next, schema).await? {
        if !(found.empty() && tip.cursor.followed_by(&found.header)) {
            return Err(PipelineError::Reassigned(format!(
                "piece {} of partition {partition} was written by another worker",
                tip.cursor.next
            )));
        }
        tip.cursor = tip.cursor.after(&found.header);
    }
    Ok(())
}

/// What a round took from a partition (or, idle, did not), made a piece against the
/// partition's mark.
struct Made {
    rows: RecordBatch,
    gaps: RecordBatch,
    records: u64,
    to: u64,
    /// The latest event time among the rows (a windowed view's).
    latest: Option<Micros>,
}

impl Made {
    fn of(part: &PartRead, at: &Cursor, plan: &ViewPlan, now_ms: u64) -> Result<Made> {
        let positions: Positions = at
            .position
            .map(|p| (part.partition, p))
            .into_iter()
            .collect();
        let rows = past(&part.rows, &positions)?;
        let latest = plan
            .input
            .window
            .and_then(|(_, time)| round::latest(&rows, time));
        Ok(Made {
            gaps: gap_rows(part.gap, now_ms as i64)?,
            rows,
            records: part.records as u64,
            to: part.next,
            latest,
        })
    }

    /// The piece following on from `at`: the rows judged against its mark, the Partial states
    /// of those on time.
    async fn piece(&self, plan: &Arc<ViewPlan>, at: &Cursor, delay: Micros) -> Result<Piece> {
        let (late, states) = round::partial(plan.clone(), self.rows.clone(), at.mark).await?;
        let aggregation = plan
            .aggregation()
            .ok_or_else(|| PipelineError::Internal("a spread view without an aggregate".into()))?;
        let mark = match (at.mark, self.latest.map(|t| t - delay)) {
            (Some(m), Some(t)) => Some(m.max(t)),
            (m, t) => m.or(t),
        };
        let from = at.position.unwrap_or(0);
        // A round that took nothing says the partition is idle, where it is.
        let idle = self.records == 0 && self.gaps.num_rows() == 0;
        Ok(Piece {
            header: Header {
                from,
                to: if idle { from } else { self.to },
                judged: at.mark,
                mark,
                records: self.records,
                idle,
            },
            states: concat_batches(&aggregation.state_schema, &states)?,
            errors: concat_batches(&decode::error_schema(), [&self.gaps, &late])?,
        })
    }
}
