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
//! another wrote that number: a piece of no records (the finisher's marker, below, or another
//! holder's saying the partition is idle) is passed and the piece made again after it; any
//! other means another worker holds the partition now, and the round fails (`Reassigned`): the
//! pipeline is opened again. Every chain starts with the finisher's *seed*, a piece of no
//! records carrying the mark windows have been closed at: a holder writes nothing into a chain
//! before it, so that a partition the view starts reading late (the topic grew) judges its
//! events against what was closed, never brings rows to a window emitted already.
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
//! first), every partition's next piece, position and mark, and the state snapshot; it is
//! refused unless the table still names the snapshot its state came from (`exactly_once`,
//! rule 7), so a finisher that has not heard that partition 0 moved commits nothing, even a
//! round that moved no position.
//!
//! **Idle partitions.** A partition that has taken nothing for the idle timeout says so once
//! with a piece of no records. The finisher does not wait on an idle partition's mark: when
//! windows would close but for idle partitions, it raises their marks to the lowest of the
//! others' (when every partition is idle, the highest) by writing a marker into each of their
//! chains. The chain orders the marker and the holder's next piece: either the marker comes
//! first, and the holder judges its records against the raised mark, or the piece does, and
//! the partition is not idle. (An idle partition's mark follows the others' only as far as
//! windows need: an event it takes later is late against that, not against the others' latest
//! progress as on one Sluice.)
//!
//! **Cleaning.** The pieces a commit took are deleted a minute later, but for each chain's last
//! (it says whether the partition is idle, to a finisher opened anew). So a worker that lost its
//! partition without having heard, which may write into numbers deleted (pieces nobody takes
//! again), always meets a piece written before it reaches the chain's end, and learns.

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
use crate::exactly_once::{Partition, Positions};
use crate::source::{PartRead, Source, SourceRead, StreamSource, gap_rows};
use crate::{PipelineError, Result};

/// At most this many pieces of a partition are taken in one of the finisher's rounds.
const PIECES_A_ROUND: usize = 16;

/// How long after the commit that took them pieces are deleted.
const KEEP_TAKEN_MS: u64 = 60_000;

/// One worker's part in a spread view.
pub(super) struct Spread {
    pieces: Pieces,
    /// The view's state schema: a piece's states.
    schema: SchemaRef,
    /// The stream's watermark delay.
    delay: Micros,
    /// Per partition this worker holds: where its chain ends.
    tips: BTreeMap<Partition, Tip>,
    /// On the holder of partition 0, the finisher's part.
    finisher: Option<Finisher>,
}

/// Where a held partition's chain ends, and whether the partition is idle.
struct Tip {
    cursor: Cursor,
    /// When it last took records (ms).
    active_ms: u64,
    /// Whether its chain's last piece says it is idle.
    idle: bool,
}

/// The finisher's part in a spread view.
struct Finisher {
    /// The view's input, every partition of it.
    whole: StreamSource,
    /// Per partition, where the table's last commit left it.
    cursors: BTreeMap<Partition, Cursor>,
    /// The mark windows have been closed at: a new chain's seed.
    closed: Option<Micros>,
    /// Partitions whose last piece taken said they were idle.
    idle: BTreeSet<Partition>,
    /// The pieces before the one before these numbers are deleted from `at` on (ms).
    to_delete: (u64, BTreeMap<Partition, u64>),
    /// When it last took pieces (ms).
    finished_ms: u64,
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
    /// The mark windows close at after them.
    pub close_at: Option<Micros>,
}

impl Spread {
    /// A worker's part in a view whose table recorded `cursors` (every partition's), holding
    /// `held`; the finisher when it holds partition 0, its windows closed at `closed` before
    /// (by a view not spread yet), if its cursors do not say.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open(
        pieces: Pieces,
        schema: SchemaRef,
        whole: StreamSource,
        delay: Micros,
        held: &BTreeSet<Partition>,
        cursors: BTreeMap<Partition, Cursor>,
        closed: Option<Micros>,
        now_ms: u64,
    ) -> Result<Spread> {
        let finisher = match held.contains(&0) {
            true => Some(
                Finisher::open(&pieces, &schema, whole, cursors.clone(), closed, now_ms).await?,
            ),
            false => None,
        };
        let mut tips = BTreeMap::new();
        for &partition in held {
            // The chain's end: past the pieces written, whether taken yet or not.
            let mut cursor = cursors.get(&partition).copied().unwrap_or_default();
            let mut idle = false;
            loop {
                let (end, found) = follow(&pieces, &schema, partition, cursor).await?;
                cursor = end;
                idle = found.last().map_or(idle, |p| p.header.idle);
                if found.len() < PIECES_A_ROUND {
                    break;
                }
            }
            let tip = Tip {
                cursor,
                active_ms: now_ms,
                idle,
            };
            tips.insert(partition, tip);
        }
        Ok(Spread {
            pieces,
            schema,
            delay,
            tips,
            finisher,
        })
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
        self.finisher.as_ref().and_then(|f| f.closed)
    }

    /// Makes a piece of each partition `read` took records from (or that has newly been idle
    /// for `idle_ms`) and writes it to the partition's chain. Returns how many were written.
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
            if tip.cursor.next == 0 {
                // Not seeded by the finisher yet: its records wait for the next round.
                pass_markers(&self.pieces, &self.schema, partition, tip).await?;
                if tip.cursor.next == 0 {
                    continue;
                }
            }
            let idle = part.records == 0 && part.gap.is_none();
            if idle {
                // Nothing taken: a piece only to say the partition is idle, once.
                if tip.idle || now_ms.saturating_sub(tip.active_ms) < idle_ms {
                    continue;
                }
            } else {
                tip.active_ms = now_ms;
            }
            let made = Made::of(part, idle, plan, now_ms)?;
            loop {
                let piece = made.piece(plan, &tip.cursor, self.delay).await?;
                if self.pieces.put(partition, tip.cursor.next, &piece).await? {
                    tip.cursor = tip.cursor.after(&piece.header);
                    tip.idle = idle;
                    break;
                }
                pass_markers(&self.pieces, &self.schema, partition, tip).await?;
            }
            written += 1;
        }
        Ok(written)
    }

    /// The finisher's round, at `now_ms`, given the view's open `groups` and the column of
    /// their window's end (a windowed view's): every chain seeded, the pieces written since its
    /// table's last commit taken, and the mark windows close at. None when not due: while its
    /// own partitions have a `backlog`, it takes pieces once an `interval_ms` only (its rounds
    /// then run back to back, and finishing each would hold back its own partitions' pieces).
    pub(super) async fn take(
        &mut self,
        groups: &RecordBatch,
        end: Option<usize>,
        backlog: bool,
        now_ms: u64,
        interval_ms: u64,
    ) -> Result<Option<Taken>> {
        let Some(finisher) = self.finisher.as_mut() else {
            return Ok(None);
        };
        if backlog && now_ms.saturating_sub(finisher.finished_ms) < interval_ms {
            return Ok(None);
        }
        finisher.finished_ms = now_ms;
        let mut taken = finisher.take(&self.pieces, &self.schema).await?;
        if let Some(end) = end {
            taken.close_at = finisher
                .close_at(&self.pieces, &self.schema, &mut taken, groups, end)
                .await?;
        }
        Ok(Some(taken))
    }

    /// The finisher's commit of what it `taken` landed at `now_ms`: its cursors are the
    /// table's now, and the pieces a commit took a minute ago are deleted (in the background).
    pub(super) fn committed(&mut self, taken: Taken, now_ms: u64) {
        let Some(finisher) = self.finisher.as_mut() else {
            return;
        };
        if now_ms >= finisher.to_delete.0 {
            let next = taken.cursors.iter().map(|(&p, c)| (p, c.next)).collect();
            let (_, before) =
                std::mem::replace(&mut finisher.to_delete, (now_ms + KEEP_TAKEN_MS, next));
            // Each chain's last piece taken is kept.
            let before = before
                .into_iter()
                .map(|(p, n)| (p, n.saturating_sub(1)))
                .collect();
            let pieces = self.pieces.clone();
            tokio::spawn(async move {
                if let Err(e) = pieces.delete(Some(&before)).await {
                    tracing::warn!(error = %e, "cannot delete a view's pieces taken");
                }
            });
        }
        finisher.closed = taken.close_at.or(finisher.closed);
        finisher.cursors = taken.cursors;
    }
}

impl Finisher {
    /// The finisher of a view whose table recorded `cursors`, its windows closed at `closed`
    /// before if they do not say; it seeds every chain not started.
    async fn open(
        pieces: &Pieces,
        schema: &SchemaRef,
        whole: StreamSource,
        cursors: BTreeMap<Partition, Cursor>,
        closed: Option<Micros>,
        now_ms: u64,
    ) -> Result<Finisher> {
        let mut idle = BTreeSet::new();
        for (&partition, cursor) in &cursors {
            // The last piece taken says whether the partition is idle.
            let Some(last) = cursor.next.checked_sub(1) else {
                continue;
            };
            let piece = pieces.get(partition, last, schema).await?;
            if piece.is_some_and(|p| p.header.idle) {
                idle.insert(partition);
            }
        }
        let started = cursors
            .iter()
            .filter(|(_, c)| c.next > 0)
            .map(|(&p, &c)| (p, c));
        let closed = match lowest(&started.collect()) {
            Some(mark) => Some(closed.map_or(mark, |c| c.max(mark))),
            None => closed,
        };
        let taken = cursors.iter().map(|(&p, c)| (p, c.next)).collect();
        let finisher = Finisher {
            whole,
            cursors,
            closed,
            idle,
            to_delete: (now_ms + KEEP_TAKEN_MS, taken),
            finished_ms: 0,
        };
        // Seeded now, so that the holders' first rounds write pieces.
        let partitions = finisher.cursors.keys().copied().collect();
        finisher.seed(pieces, schema, &partitions).await?;
        Ok(finisher)
    }

    /// Seeds every chain not started, then takes the pieces written since the table's last
    /// commit.
    async fn take(&mut self, pieces: &Pieces, schema: &SchemaRef) -> Result<Taken> {
        let mut partitions: BTreeSet<Partition> = self.whole.bounds().await?.into_keys().collect();
        partitions.extend(self.cursors.keys());
        let mut taken = Taken {
            cursors: BTreeMap::new(),
            states: Vec::new(),
            errors: RecordBatch::new_empty(decode::error_schema()),
            pieces: 0,
            close_at: self.closed,
        };
        self.seed(pieces, schema, &partitions).await?;
        // Each partition's chain is read apart from the others', all at once.
        let chains = partitions.into_iter().map(|partition| {
            let cursor = self.cursors.get(&partition).copied().unwrap_or_default();
            async move {
                let (end, found) = follow(pieces, schema, partition, cursor).await?;
                Ok::<_, PipelineError>((partition, end, found))
            }
        });
        let mut errors = Vec::new();
        for (partition, cursor, found) in futures::future::try_join_all(chains).await? {
            if let Some(last) = found.last() {
                match last.header.idle {
                    true => self.idle.insert(partition),
                    false => self.idle.remove(&partition),
                };
            }
            for piece in found {
                taken.states.push(piece.states);
                errors.push(piece.errors);
                taken.pieces += 1;
            }
            taken.cursors.insert(partition, cursor);
        }
        taken.errors = concat_batches(&decode::error_schema(), &errors)?;
        taken.close_at = lowest(&taken.cursors);
        Ok(taken)
    }

    /// Starts the chains of `partitions` not started: a seed, with the mark windows have been
    /// closed at (refused: seeded already, by a finisher before this one).
    async fn seed(
        &self,
        pieces: &Pieces,
        schema: &SchemaRef,
        partitions: &BTreeSet<Partition>,
    ) -> Result<()> {
        for &partition in partitions {
            let cursor = self.cursors.get(&partition).copied().unwrap_or_default();
            if cursor.next == 0 {
                let seed = Piece::marker(&cursor, self.closed.max(cursor.mark), false, schema);
                pieces.put(partition, 0, &seed).await?;
            }
        }
        Ok(())
    }

    /// The mark windows close at after the pieces `taken`: the lowest over every partition.
    /// When windows among `groups` or the pieces' states (whose window ends are column `end`)
    /// would close at the active partitions' lowest mark but for idle partitions', theirs are
    /// raised to it by a marker each first (a marker refused: the partition took records
    /// meanwhile).
    async fn close_at(
        &self,
        pieces: &Pieces,
        schema: &SchemaRef,
        taken: &mut Taken,
        groups: &RecordBatch,
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
        let waiting = std::iter::once(groups).chain(&taken.states).any(|g| {
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
            let marker = Piece::marker(cursor, Some(target), true, schema);
            if pieces.put(partition, cursor.next, &marker).await? {
                *cursor = cursor.after(&marker.header);
                taken.pieces += 1;
            }
        }
        Ok(lowest(&taken.cursors))
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

/// After a put at `tip` was refused (or before a chain's first piece): passes the pieces of no
/// records written since (the finisher's seed and markers, another holder's saying the
/// partition is idle); one with records means another worker holds the partition now.
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
    /// Whether it took nothing: the piece says the partition is idle.
    idle: bool,
}

impl Made {
    fn of(part: &PartRead, idle: bool, plan: &ViewPlan, now_ms: u64) -> Result<Made> {
        let latest = plan
            .input
            .window
            .and_then(|(_, time)| round::latest(&part.rows, time));
        Ok(Made {
            gaps: gap_rows(part.gap, now_ms as i64)?,
            rows: part.rows.clone(),
            records: part.records as u64,
            to: part.next,
            latest,
            idle,
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
        Ok(Piece {
            header: Header {
                from,
                // An idle partition's piece moves no position.
                to: if self.idle { from } else { self.to },
                judged: at.mark,
                mark,
                records: self.records,
                idle: self.idle,
            },
            states: concat_batches(&aggregation.state_schema, &states)?,
            errors: concat_batches(&decode::error_schema(), [&self.gaps, &late])?,
        })
    }
}
