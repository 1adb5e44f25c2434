//! What a pipeline is doing, in one shape for every kind: a stream's raw tables in
//! `GET /v1/streams`, views in `GET /v1/views`, both on the dashboard and in `/metrics`.
//!
//! The runtime writes it (each round, each failure); readers take a copy. The same numbers go
//! to Prometheus, labelled by `pipeline` (the stream's or view's name: a view cannot take a
//! stream's name, so either names one pipeline):
//!
//! | metric | what |
//! | --- | --- |
//! | `sluice_pipeline_rows_total` | rows written to the pipeline's table (upserts count each time) |
//! | `sluice_pipeline_error_rows_total` | rows written to its errors table: records that did not decode, late events, gaps |
//! | `sluice_pipeline_lost_records_total` | records retention deleted before the pipeline took them |
//! | `sluice_pipeline_failures_total` | rounds (and starts) that failed; each is retried after a backoff |
//! | `sluice_pipeline_panics_total` | rounds that panicked (a bug); the pipeline is started again |
//! | `sluice_pipeline_input_lag_records` | records its input held past its positions at its last round |
//! | `sluice_pipeline_partition_lag_records` | the same, per partition of its input (label `partition`; 0 once a partition moved to another worker) |
//! | `sluice_pipeline_partition_lag_seconds` | how far a partition's record at the position is behind its newest, by the records' times (Kafka) |
//! | `sluice_pipeline_watermark_seconds` | its watermark (windowed views), seconds since the epoch |
//! | `sluice_pipeline_last_commit_seconds` | when its last commit landed, seconds since the epoch |
//! | `sluice_pipeline_round_seconds` | how long rounds that committed took, read to commit |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::exactly_once::Partition;
use crate::source::Gap;
use crate::view::watermark::Micros;

/// The kind of a pipeline, by what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A stream's raw and errors tables.
    Raw,
    /// A view without aggregates: rows in, rows out.
    Stateless,
    /// A view aggregating over event-time windows: a window's row once it closes.
    Windowed,
    /// A view aggregating by key without a window: a row per key, updated in place.
    Updating,
    /// A view joining two streams within a time bound: matches appended as they are found.
    Join,
}

impl Kind {
    /// Its name, as status and metrics give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Stateless => "stateless",
            Kind::Windowed => "windowed",
            Kind::Updating => "updating",
            Kind::Join => "join",
        }
    }
}

/// Whether a pipeline is doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Opening its tables (and, for a view, its state).
    Starting,
    /// Taking rounds.
    Running,
    /// Run by another worker of the cluster: it reads nothing here until this worker holds
    /// its input's partition 0 (a view).
    Standby,
    /// Its last round (or start) failed; it tries again after a backoff.
    Retrying,
    /// Stopped (the server is stopping).
    Stopped,
}

/// Where a pipeline is in its input after a round, per partition.
pub(crate) struct Progress {
    /// The position its tables have all committed every record before.
    pub taken: BTreeMap<Partition, u64>,
    /// Records past it.
    pub lag: BTreeMap<Partition, u64>,
    /// How far the record at it is behind the newest, in time, where the source knows.
    pub lag_ms: BTreeMap<Partition, u64>,
}

/// A pipeline's status.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    /// The table it writes: its stream's or view's name.
    pub name: String,
    /// What it is; a view's is known once it has been planned (not while it cannot start).
    pub kind: Option<Kind>,
    /// The stream or view it reads.
    pub input: String,
    /// The columns that name a row of an updating view; empty for the others.
    pub keys: Vec<String>,
    /// Whether it is starting, taking rounds, retrying or stopped.
    pub state: State,
    /// Records its input held past its positions at its last round.
    pub input_lag: u64,
    /// The same, per partition of its input (a stream's shards, a Kafka topic's partitions).
    pub partition_lag: BTreeMap<Partition, u64>,
    /// Per partition, the position its tables have all committed every record before, at its
    /// last round (what a source elsewhere may acknowledge).
    #[serde(skip)]
    pub taken: BTreeMap<Partition, u64>,
    /// Per partition, how far the record at its position is behind the newest one, in ms of
    /// the records' own times, where the source knows them (a Kafka topic's timestamps).
    pub partition_lag_ms: BTreeMap<Partition, u64>,
    /// The watermark (windowed views), RFC 3339.
    pub watermark: Option<String>,
    /// How long its last committed round took, from its read to its commit.
    pub last_round_ms: Option<u64>,
    /// When its last commit landed (ms since the epoch).
    pub last_commit_ms: Option<u64>,
    /// Rows written to its table since it started (upserts count each time).
    pub rows_out: u64,
    /// Rows written to its errors table since it started: records that did not decode (raw),
    /// late events (windowed views), gaps.
    pub errors_out: u64,
    /// Records retention deleted before the pipeline took them, since it started.
    pub lost: u64,
    /// The last gap found, as its errors-table row says it.
    pub last_gap: Option<String>,
    /// Failed rounds and starts since the server started.
    pub failures: u64,
    /// Times it was opened again because its partitions changed (moved between workers, a
    /// topic grown), since the server started.
    pub reassignments: u64,
    /// How long partitions with records waiting last went without a commit while they moved to
    /// this worker (a worker killed or leaving, one joining) or the server restarted: from
    /// their last commit before to the first here, in ms of the workers' clocks.
    pub failover_ms: Option<u64>,
    /// Why the last round (or start) failed, while it is failing.
    pub last_error: Option<String>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Records read (rows and errors).
    pub records: usize,
    /// Rows written to the pipeline's table.
    pub rows: usize,
    /// Rows written to its errors table.
    pub errors: usize,
    /// Records lost to retention, as this round recorded them.
    pub lost: u64,
    /// The last of the gaps this round recorded.
    pub gap: Option<Gap>,
    /// Some partition held more than the round could take.
    pub backlog: bool,
    /// The round committed (rows, errors or positions).
    pub committed: bool,
    /// When the partitions this round committed for the first time since the pipeline was
    /// opened, with records waiting then, were last committed before (ms since the epoch, the
    /// earliest): by another worker, or by this one before it restarted.
    pub resumed_since_ms: Option<i64>,
}

/// A pipeline's status and metrics, shared by the runtime (which updates them) and whoever
/// shows them.
#[derive(Clone)]
pub struct Monitor {
    status: Arc<Mutex<PipelineStatus>>,
    metrics: Arc<Metrics>,
}

struct Metrics {
    rows: metrics::Counter,
    error_rows: metrics::Counter,
    lost: metrics::Counter,
    failures: metrics::Counter,
    reassignments: metrics::Counter,
    failover: metrics::Histogram,
    panics: metrics::Counter,
    lag: metrics::Gauge,
    watermark: metrics::Gauge,
    last_commit: metrics::Gauge,
    round: metrics::Histogram,
}

impl Monitor {
    /// The status of a pipeline starting: `name` writes its table from `input`.
    pub fn new(name: &str, kind: Option<Kind>, input: &str) -> Self {
        let labels = [("pipeline", name.to_string())];
        let metrics = Metrics {
            rows: metrics::counter!("sluice_pipeline_rows_total", &labels),
            error_rows: metrics::counter!("sluice_pipeline_error_rows_total", &labels),
            lost: metrics::counter!("sluice_pipeline_lost_records_total", &labels),
            failures: metrics::counter!("sluice_pipeline_failures_total", &labels),
            reassignments: metrics::counter!("sluice_pipeline_reassignments_total", &labels),
            failover: metrics::histogram!("sluice_pipeline_failover_seconds", &labels),
            panics: metrics::counter!("sluice_pipeline_panics_total", &labels),
            lag: metrics::gauge!("sluice_pipeline_input_lag_records", &labels),
            watermark: metrics::gauge!("sluice_pipeline_watermark_seconds", &labels),
            last_commit: metrics::gauge!("sluice_pipeline_last_commit_seconds", &labels),
            round: metrics::histogram!("sluice_pipeline_round_seconds", &labels),
        };
        Self {
            status: Arc::new(Mutex::new(PipelineStatus {
                name: name.to_string(),
                kind,
                input: input.to_string(),
                keys: Vec::new(),
                state: State::Starting,
                input_lag: 0,
                partition_lag: BTreeMap::new(),
                taken: BTreeMap::new(),
                partition_lag_ms: BTreeMap::new(),
                watermark: None,
                last_round_ms: None,
                last_commit_ms: None,
                rows_out: 0,
                errors_out: 0,
                lost: 0,
                last_gap: None,
                failures: 0,
                reassignments: 0,
                failover_ms: None,
                last_error: None,
            })),
            metrics: Arc::new(metrics),
        }
    }

    /// A copy of the status now.
    pub fn status(&self) -> PipelineStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipelineStatus> {
        self.status.lock().expect("status lock")
    }

    /// Notes a round done: what it wrote, where it is in its input and the watermark after
    /// it, at wall-clock time `now_ms`, `took` from read to commit.
    pub(crate) fn round(
        &self,
        round: &Round,
        progress: Progress,
        watermark: Option<Micros>,
        now_ms: u64,
        took: Duration,
    ) {
        let Progress {
            taken,
            lag: partition_lag,
            lag_ms: partition_lag_ms,
        } = progress;
        let input_lag = partition_lag.values().sum();
        let (name, before) = {
            let status = self.lock();
            (status.name.clone(), status.partition_lag.clone())
        };
        let gauge = |metric: &'static str, partition: Partition, value: f64| {
            let labels = [
                ("pipeline", name.clone()),
                ("partition", partition.to_string()),
            ];
            metrics::gauge!(metric, &labels).set(value);
        };
        // A partition read here no more (moved to another worker) lags here no more: summed
        // over the workers, the lag stays the partitions' own.
        for &partition in before.keys().filter(|p| !partition_lag.contains_key(p)) {
            gauge("sluice_pipeline_partition_lag_records", partition, 0.0);
            gauge("sluice_pipeline_partition_lag_seconds", partition, 0.0);
        }
        for (&partition, &lag) in &partition_lag {
            gauge(
                "sluice_pipeline_partition_lag_records",
                partition,
                lag as f64,
            );
        }
        for (&partition, &ms) in &partition_lag_ms {
            gauge(
                "sluice_pipeline_partition_lag_seconds",
                partition,
                ms as f64 / 1e3,
            );
        }
        let mut status = self.lock();
        if status.state != State::Standby {
            status.state = State::Running;
        }
        status.last_error = None;
        status.input_lag = input_lag;
        status.partition_lag = partition_lag;
        status.taken = taken;
        status.partition_lag_ms = partition_lag_ms;
        status.rows_out += round.rows as u64;
        status.errors_out += round.errors as u64;
        status.lost += round.lost;
        if let Some(gap) = round.gap {
            status.last_gap = Some(gap.reason());
        }
        status.watermark = watermark
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        if round.committed {
            status.last_round_ms = Some(took.as_millis() as u64);
            status.last_commit_ms = Some(now_ms);
            self.metrics.last_commit.set(now_ms as f64 / 1e3);
            self.metrics.round.record(took.as_secs_f64());
        }
        if let Some(since) = round.resumed_since_ms {
            let failover = (now_ms as i64 - since).max(0) as u64;
            status.failover_ms = Some(failover);
            self.metrics.failover.record(failover as f64 / 1e3);
        }
        self.metrics.rows.increment(round.rows as u64);
        self.metrics.error_rows.increment(round.errors as u64);
        self.metrics.lost.increment(round.lost);
        self.metrics.lag.set(input_lag as f64);
        if let Some(w) = watermark {
            self.metrics.watermark.set(w as f64 / 1e6);
        }
    }

    /// Notes a failed round or start (`panicked`: a bug), to be retried.
    pub(crate) fn failed(&self, error: &str, panicked: bool) {
        let mut status = self.lock();
        status.state = State::Retrying;
        status.failures += 1;
        status.last_error = Some(error.to_string());
        self.metrics.failures.increment(1);
        if panicked {
            self.metrics.panics.increment(1);
        }
    }

    /// Notes that the pipeline is opened again because its partitions changed.
    pub(crate) fn reassigned(&self) {
        self.lock().reassignments += 1;
        self.metrics.reassignments.increment(1);
    }

    /// Notes what the pipeline turned out to be, once opened.
    pub(crate) fn opened(&self, kind: Kind, keys: Vec<String>) {
        let mut status = self.lock();
        status.kind = Some(kind);
        status.keys = keys;
    }

    /// Notes that the pipeline has moved to `state`.
    pub(crate) fn set_state(&self, state: State) {
        self.lock().state = state;
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("status", &self.status())
            .finish()
    }
}

/// The metrics' descriptions, for a Prometheus recorder's `# HELP` lines.
pub fn describe_metrics() {
    for (name, help) in [
        (
            "sluice_pipeline_rows_total",
            "Rows written to the pipeline's table, per pipeline",
        ),
        (
            "sluice_pipeline_error_rows_total",
            "Rows written to the pipeline's errors table (bad records, late events, gaps)",
        ),
        (
            "sluice_pipeline_lost_records_total",
            "Records retention deleted before the pipeline took them",
        ),
        (
            "sluice_pipeline_failures_total",
            "Rounds and starts that failed (retried after a backoff)",
        ),
        (
            "sluice_pipeline_reassignments_total",
            "Times the pipeline was opened again because its partitions changed",
        ),
        (
            "sluice_pipeline_panics_total",
            "Rounds that panicked (the pipeline is started again)",
        ),
    ] {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_gauge!(
        "sluice_pipeline_input_lag_records",
        "Records the input held past the pipeline's positions at its last round"
    );
    metrics::describe_gauge!(
        "sluice_pipeline_partition_lag_records",
        "Records a partition of the input held past the pipeline's position at its last round"
    );
    metrics::describe_gauge!(
        "sluice_pipeline_partition_lag_seconds",
        metrics::Unit::Seconds,
        "How far the record at a partition's position is behind its newest, by the records' times"
    );
    metrics::describe_gauge!(
        "sluice_pipeline_watermark_seconds",
        metrics::Unit::Seconds,
        "The watermark of a windowed view (event time, seconds since the epoch)"
    );
    metrics::describe_gauge!(
        "sluice_pipeline_last_commit_seconds",
        metrics::Unit::Seconds,
        "When the pipeline's last commit landed (seconds since the epoch)"
    );
    metrics::describe_histogram!(
        "sluice_pipeline_round_seconds",
        metrics::Unit::Seconds,
        "Rounds that committed, from read to commit"
    );
    metrics::describe_histogram!(
        "sluice_pipeline_failover_seconds",
        metrics::Unit::Seconds,
        "How long partitions with records waiting went without a commit while they moved to \
         this worker or the server restarted"
    );
}
