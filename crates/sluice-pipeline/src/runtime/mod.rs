//! The one runtime every pipeline runs in: a stream's raw tables, a view, and every source to
//! come.
//!
//! ```text
//!  Supervisor ── a task per pipeline: open ─► run ─┬─ stopped: done
//!                                  ▲               ├─ a round failed ─┐
//!                                  │               └─ it panicked ────┤ status, metrics,
//!                                  └──── open again after a backoff ◄─┘ 0.5 s doubling to 30 s
//!
//!  run: every interval (at once while a backlog lasts), a round:
//!       source.bounds ─► read (each partition apart) ─► pipeline.process ─► one commit a table
//!                            └─ while a backlog lasts, the next round's read starts before
//!                               this round's commit (one core decodes, the other writes)
//! ```
//!
//! A pipeline ([`Pipeline`]) says where its next read starts and how much it takes, and turns
//! what was read into its tables' commits; everything else is here, once: pacing, reading
//! ahead, compaction, failures and their backoff, panics, status and metrics. After any failure
//! the pipeline is opened again, from what its tables recorded (`exactly_once`, rule 2): the
//! retry is exact whatever the failure left behind.

mod status;
mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

pub use status::{Kind, Monitor, PipelineStatus, Round, State, describe_metrics};
pub(crate) use supervisor::{Open, Supervisor};

use crate::exactly_once::{Partition, Positions};
use crate::source::{Bounds, Limits, SharedSource, SourceRead, pending};
use crate::view::watermark::Micros;
use crate::{PipelineError, Result};

/// A pipeline: reads its source, writes its tables, exactly once.
#[async_trait]
pub trait Pipeline: Send + 'static {
    /// The source it reads.
    fn source(&self) -> &SharedSource;

    /// What it is.
    fn kind(&self) -> Kind;

    /// The columns that name a row of its table (an updating view's group), if any.
    fn keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// The source's partitions it was opened with, if it must be opened again when they change
    /// (its positions are of these: a partition that moved to this worker must be read from its
    /// tables' position, not from its oldest record); none if it takes partitions as they come.
    fn partitions(&self) -> Option<&BTreeSet<Partition>> {
        None
    }

    /// Whether another worker of the cluster runs it, so that it reads nothing here until its
    /// partitions change (a view on a worker that does not hold its input's partition 0).
    fn standby(&self) -> bool {
        false
    }

    /// Where its next read starts, per partition (the lowest of its tables' positions).
    fn next_read(&self) -> Positions;

    /// How many records of each partition a read from `from` takes, given the partitions'
    /// bounds now. Every partition of `bounds` is read (a new one from its oldest record).
    fn limits(&self, from: &Positions, bounds: &BTreeMap<Partition, Bounds>) -> Limits;

    /// Turns what `read` took into its tables' commits. Nothing of the pipeline changes in
    /// memory unless its commit lands, so a failed round leaves it as it was.
    async fn process(&mut self, read: SourceRead) -> Result<Round>;

    /// Compacts its tables' small files (Delta OPTIMIZE); it is their only writer, so this
    /// runs between two rounds.
    async fn compact(&mut self) -> Result<()>;

    /// Its watermark, if it keeps one.
    fn watermark(&self) -> Option<Micros> {
        None
    }

    /// One round, without pacing or reading ahead: reads what the source holds past the
    /// pipeline's positions (within its limits) and processes it. (Tests and in-process
    /// benchmarks drive pipelines this way.)
    async fn round(&mut self) -> Result<Round> {
        let source = self.source().clone();
        let bounds = source.bounds().await?;
        unmoved(self.partitions(), &bounds)?;
        let from = self.next_read();
        let read = source.read(&from, &self.limits(&from, &bounds)).await?;
        self.process(read).await
    }
}

/// How long a pipeline's partitions went without a commit when it was opened: those whose
/// positions its table had recorded before (by another worker, or before a restart), with when.
/// The first commit of each, if it comes within [`WAITING_READ_WITHIN`] of the opening, says
/// how long it went without one (`Round::resumed_since_ms`: status `failover_ms`).
#[derive(Debug)]
pub(crate) struct Resumed {
    written: BTreeMap<Partition, i64>,
    opened: Instant,
}

/// Records a pipeline commits within this long of its opening were waiting when it opened (a
/// moved partition's backlog, read as soon as the stream's consumer has them); records
/// committed later may have come after an idle spell, which is no failover.
const WAITING_READ_WITHIN: Duration = Duration::from_secs(5);

impl Resumed {
    /// A pipeline opened now, whose partitions' positions were last committed when `written`
    /// says (ms since the epoch).
    pub(crate) fn new(written: BTreeMap<Partition, i64>) -> Self {
        Resumed {
            written,
            opened: Instant::now(),
        }
    }

    /// A commit that moved positions `before` to `after` landed: when the partitions it moved
    /// first had last been committed, if this is their first commit here and it came soon.
    pub(crate) fn committed(&mut self, before: &Positions, after: &Positions) -> Option<i64> {
        let moved = after.iter().filter(|(p, at)| before.get(p) != Some(at));
        let since = moved.filter_map(|(p, _)| self.written.remove(p)).min();
        since.filter(|_| self.opened.elapsed() < WAITING_READ_WITHIN)
    }
}

/// How often a pipeline takes a round, and how often it compacts.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// A round every interval (at once while a backlog lasts).
    pub interval: Duration,
    /// Compact after this many commits.
    pub compact_every: usize,
}

/// The shortest wait after a failure: doubled after each failure in a row, up to
/// [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts of a failing pipeline (an unreachable S3, a full disk).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a run ended other than by being stopped.
pub(crate) struct Failure {
    pub error: PipelineError,
    /// Whether a round committed before it (then the backoff starts over).
    pub progressed: bool,
}

/// Runs one pipeline in the runtime's loop, without a supervisor, until `stop` turns true or
/// a round fails (in-process benchmarks and tools: a server's pipelines are supervised).
pub async fn run_one(
    pipeline: Box<dyn Pipeline>,
    cadence: Cadence,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let name = pipeline.source().name().to_string();
    let monitor = Monitor::new(&name, Some(pipeline.kind()), &name);
    run(
        pipeline,
        cadence,
        monitor,
        std::sync::Arc::new(crate::view::SystemClock),
        stop,
    )
    .await
    .map_err(|failure| failure.error)
}

/// A read started early: where it starts, and the read.
struct ReadAhead {
    from: Positions,
    read: tokio::task::JoinHandle<Result<SourceRead>>,
}

/// Runs `pipeline`'s rounds until `stop` turns true (`Ok`) or a round fails.
pub(crate) async fn run(
    mut pipeline: Box<dyn Pipeline>,
    cadence: Cadence,
    monitor: Monitor,
    clock: std::sync::Arc<dyn crate::view::Clock>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Failure> {
    let mut rounds = Rounds::every(cadence.interval);
    let (mut backlog, mut commits, mut progressed) = (false, 0, false);
    let mut ahead: Option<ReadAhead> = None;
    let fail = |error, progressed| Failure { error, progressed };
    let name = monitor.status().name;
    monitor.set_state(match pipeline.standby() {
        true => State::Standby,
        false => State::Running,
    });
    while rounds.next(backlog, &mut stop).await {
        let started = Instant::now();
        // Tests make a pipeline's rounds fail ("return") or panic ("panic") here.
        fail::fail_point!(&format!("pipeline::{name}::round"), |_| Err(fail(
            PipelineError::Unavailable(format!("injected failure of {name}'s round")),
            progressed
        )));
        let source = pipeline.source().clone();
        let bounds = source.bounds().await.map_err(|e| fail(e, progressed))?;
        unmoved(pipeline.partitions(), &bounds).map_err(|e| fail(e, progressed))?;
        let from = pipeline.next_read();
        let read = match ahead.take() {
            Some(ahead) if ahead.from == from => match ahead.read.await {
                Ok(read) => read,
                // A read that panicked is the round's panic: the supervisor reports it.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(PipelineError::Internal(e.to_string())),
            },
            _ => source.read(&from, &pipeline.limits(&from, &bounds)).await,
        }
        .map_err(|e| fail(e, progressed))?;
        if read.backlog {
            let mut next = from.clone();
            next.extend(read.next());
            let limits = pipeline.limits(&next, &bounds);
            let (source, from) = (source.clone(), next.clone());
            ahead = Some(ReadAhead {
                from: next,
                read: tokio::spawn(async move { source.read(&from, &limits).await }),
            });
        }
        let round = pipeline
            .process(read)
            .await
            .map_err(|e| fail(e, progressed))?;
        progressed |= round.committed;
        let next = pipeline.next_read();
        monitor.round(
            &round,
            status::Progress {
                lag: pending(&bounds, &next),
                lag_ms: source.time_lag(&next),
                taken: next,
            },
            pipeline.watermark(),
            clock.now_ms(),
            started.elapsed(),
        );
        commits += usize::from(round.committed);
        // Where workers share the partitions, one compacts: the holder of partition 0.
        if commits >= cadence.compact_every && source.housekeeper() {
            commits = 0;
            if let Err(e) = pipeline.compact().await {
                // The tables are as they were; a handle left behind fails the next round,
                // which opens the pipeline again.
                tracing::warn!(pipeline = name, error = %e, "compaction failed");
            }
        }
        backlog = round.backlog;
    }
    Ok(())
}

/// Refuses a round of a pipeline opened with `partitions` when the source's partitions are
/// others now: it is to be opened again.
fn unmoved(
    partitions: Option<&BTreeSet<Partition>>,
    bounds: &BTreeMap<Partition, Bounds>,
) -> Result<()> {
    match partitions {
        Some(opened) if !opened.iter().eq(bounds.keys()) => {
            Err(PipelineError::Reassigned(format!(
                "its partitions changed from {opened:?} to {:?}",
                bounds.keys().collect::<Vec<_>>()
            )))
        }
        _ => Ok(()),
    }
}

/// When a pipeline runs its rounds: every `interval`, a late round delaying the next rather
/// than doubling up, and at once after a round that left a backlog.
struct Rounds {
    tick: tokio::time::Interval,
}

impl Rounds {
    fn every(interval: Duration) -> Rounds {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Rounds { tick }
    }

    /// Waits for the next round; false once `stop` turns true (then there is none).
    async fn next(&mut self, backlog: bool, stop: &mut watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return false;
        }
        if !backlog {
            tokio::select! {
                _ = self.tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
        true
    }
}
