//! Golden tests of materialized views: deterministic input with event times, a view, and the
//! view's table as expected, from the files in `tests/views/*.view` at the repository's root.
//!
//! A file is a list of directives, separated by blank lines:
//!
//! ```text
//! # a comment
//! stream CREATE STREAM …          a stream, in the dialect (more than one: a join's)
//! view CREATE MATERIALIZED VIEW … a view (more than one: each may read the ones before)
//! round [stream]                  these records (one per line, `<shard> <json>`) are appended
//! 0 {"k":"a","ts":"…"}            to the stream named (else the last one created), then each
//!                                 view in turn runs rounds until it has taken all its input
//!                                 holds
//! clock +15s                      the views' clock moves on (for idle shards)
//! restart                         the views are dropped and opened again (from their commits)
//! query SELECT … FROM v ORDER BY …  the view's table (or its errors table) must hold exactly
//! ----                            these rows (values separated by commas, NULL for null)
//! a,2026-01-05T00:00:00Z,2
//! ```
//!
//! `SLUICE_BLESS=1` rewrites each file's expected rows with what the view gives (then read the
//! diff before committing it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use sluice_pipeline::source::Assignment;
use sluice_pipeline::view::input::Input;
use sluice_pipeline::view::pieces::Pieces;
use sluice_pipeline::view::state::Snapshots;
use sluice_pipeline::view::{Catalog, Clock, Placement, Shared, ViewConfig, ViewPipeline};
use sluice_pipeline::{Pipeline, PipelineError};
use sluice_sql::Statement;

/// A clock the test moves.
#[derive(Debug, Default)]
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn cases() -> Vec<PathBuf> {
    // The crate's folder as the test runner says it now: the one compiled in is stale when the
    // workspace moved and the build cache was kept (cargo does not rebuild for that).
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo or nextest");
    let dir = Path::new(&crate_dir).join("../../tests/views");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "view"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());
    cases
}

#[tokio::test]
async fn views_give_their_golden_results() {
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let text = std::fs::read_to_string(&case).unwrap();
        let (outcome, blessed) = run_case(&text).await;
        if let Err(e) = outcome {
            if bless && blessed != text {
                std::fs::write(&case, &blessed).unwrap();
            } else {
                failures.push(format!("{}: {e}", case.display()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Runs one case. Returns whether every query gave its expected rows, and the case's text with
/// the rows the view gave instead.
async fn run_case(text: &str) -> (Result<(), String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let clock = Arc::new(TestClock::default());
    let config = ViewConfig {
        max_records_per_round: 1_000,
        idle_timeout: std::time::Duration::from_secs(10),
        ..ViewConfig::default()
    };
    let mut views: Vec<ViewPipeline> = Vec::new();
    let mut definitions = Vec::new();
    let mut stream = None;
    let mut blessed = Vec::new();
    let mut outcome = Ok(());
    for block in text.split("\n\n") {
        let block = block.trim_matches('\n');
        // Comments open a block; what follows them is its directive.
        let comments: Vec<&str> = block.lines().take_while(|l| l.starts_with('#')).collect();
        let block = block
            .lines()
            .skip(comments.len())
            .collect::<Vec<_>>()
            .join("\n");
        let block = block.as_str();
        let comments = comments
            .iter()
            .map(|c| format!("{c}\n"))
            .collect::<String>();
        let (head, body) = block.split_once('\n').unwrap_or((block, ""));
        let directive = head.split_whitespace().next().unwrap_or("");
        match directive {
            "" => {
                blessed.push(comments.trim_end().to_string());
                continue;
            }
            "stream" => {
                let Statement::CreateStream(c) = parse(block.trim_start_matches("stream")) else {
                    panic!("not a CREATE STREAM: {block}")
                };
                stream = Some(c.name.clone());
                log.create_stream(
                    &c.name,
                    StreamOptions {
                        shards: c.shards,
                        retention: Retention::default(),
                        definition: c.definition.to_log(),
                        elsewhere: None,
                    },
                )
                .unwrap();
            }
            "view" => {
                let Statement::CreateView(c) = parse(block.trim_start_matches("view")) else {
                    panic!("not a CREATE MATERIALIZED VIEW: {block}")
                };
                let view = open(&c.definition, &log, &lake, dir.path(), &config, &clock).await;
                definitions.push(c.definition);
                views.push(view);
            }
            "round" => {
                let named = head.split_whitespace().nth(1);
                append(&log, named.or(stream.as_deref()).expect("a stream"), body).await;
                for view in &mut views {
                    loop {
                        let round = view.round().await.unwrap_or_else(|e| panic!("round: {e}"));
                        if !round.backlog {
                            break;
                        }
                    }
                }
            }
            "clock" => {
                let seconds: u64 = head
                    .trim_start_matches("clock")
                    .trim()
                    .trim_start_matches('+')
                    .trim_end_matches('s')
                    .parse()
                    .unwrap();
                clock.0.fetch_add(seconds * 1000, Ordering::SeqCst);
            }
            "restart" => {
                views.clear();
                for definition in &definitions {
                    views.push(open(definition, &log, &lake, dir.path(), &config, &clock).await);
                }
            }
            "query" => {
                let (sql, expected) = block
                    .trim_start_matches("query")
                    .split_once("\n----")
                    .unwrap_or_else(|| panic!("a query needs its rows after ----: {block}"));
                let got = query(&lake, sql.trim()).await;
                if got.trim() != expected.trim() && outcome.is_ok() {
                    outcome = Err(format!(
                        "{}\nexpected:\n{}\ngot:\n{}",
                        sql.trim(),
                        expected.trim(),
                        got.trim()
                    ));
                }
                blessed.push(
                    format!("{comments}query {}\n----\n{}", sql.trim(), got.trim())
                        .trim_end()
                        .to_string(),
                );
                continue;
            }
            other => panic!("unknown directive {other:?} in {block}"),
        }
        blessed.push(format!("{comments}{block}"));
    }
    (outcome, blessed.join("\n\n") + "\n")
}

fn parse(sql: &str) -> Statement {
    sluice_sql::parse(sql.trim())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .remove(0)
}

async fn open(
    definition: &sluice_sql::ViewDefinition,
    log: &Arc<Log>,
    lake: &Lake,
    dir: &Path,
    config: &ViewConfig,
    clock: &Arc<TestClock>,
) -> ViewPipeline {
    let definition = definition.clone();
    let state = dir.join("views").join(&definition.name);
    ViewPipeline::open(
        definition,
        1,
        log.clone(),
        lake.clone(),
        Placement::local(state),
        config.clone(),
        clock.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("the view does not open: {e}"))
}

/// Appends the records of a `round` block (`<shard> <json>` per line) to `stream`.
async fn append(log: &Log, stream: &str, body: &str) {
    let stream = log.stream(stream).unwrap();
    let mut batches = stream.batches();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let (shard, record) = line.trim().split_once(' ').expect("<shard> <json>");
        batches
            .push(shard.parse().unwrap(), b"", record.as_bytes())
            .unwrap();
    }
    for part in stream.append(batches).await.unwrap() {
        part.result.unwrap();
    }
}

/// `sql` over the lake's tables, as CSV without a header.
async fn query(lake: &Lake, sql: &str) -> String {
    let ctx = SessionContext::new();
    for name in lake.table_names() {
        let table = lake.open(&name).await.unwrap();
        ctx.register_table(name.as_str(), table.delta().table_provider().await.unwrap())
            .unwrap();
    }
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap();
    let options = FormatOptions::default().with_null("NULL");
    let mut out = String::new();
    for batch in &batches {
        let columns: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = columns.iter().map(|c| c.value(row).to_string()).collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
    }
    out
}

/// The partitions of the stream a worker holds, as the test says: a worker that has not heard
/// that it lost some still says it holds them.
#[derive(Default)]
struct Holds(std::sync::Mutex<BTreeSet<u32>>);

impl Holds {
    fn set(&self, partitions: &[u32]) {
        *self.0.lock().unwrap() = partitions.iter().copied().collect();
    }
}

impl Assignment for Holds {
    fn held(&self) -> Option<BTreeSet<u32>> {
        Some(self.0.lock().unwrap().clone())
    }
}

const WINDOWED: &str = "CREATE MATERIALIZED VIEW per_minute AS SELECT k, window_start, count(*) AS n, \
     sum(v) AS total FROM TUMBLE(events, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end";

/// Appends `n` events to `events`, `from` on: key `k<i % 5>`, one a second of event time, on
/// shard `i % 3`.
async fn events(log: &Log, from: u64, n: u64) {
    let body: String = (from..from + n)
        .map(|i| {
            format!(
                "{} {{\"k\":\"k{}\",\"v\":{i},\"ts\":\"2026-01-05T00:{:02}:{:02}Z\"}}\n",
                i % 3,
                i % 5,
                i / 60,
                i % 60
            )
        })
        .collect();
    append(log, "events", &body).await;
}

/// Appends events `seconds` (key `k`, value 1, one a second of event time) to `events`, on
/// shards 0 and 1 in turn: shard 2 takes nothing.
async fn on_two_shards(log: &Log, seconds: std::ops::Range<u64>) {
    let body: String = seconds
        .map(|i| {
            let (shard, minute, second) = (i % 2, i / 60, i % 60);
            format!("{shard} {{\"k\":\"k\",\"v\":1,\"ts\":\"2026-01-05T00:{minute:02}:{second:02}Z\"}}\n")
        })
        .collect();
    append(log, "events", &body).await;
}

/// A stream `events` of three shards with event time `ts`, in a log in `dir`.
fn events_log(dir: &Path) -> Arc<Log> {
    let log = Arc::new(Log::open(dir.join("log"), LogConfig::default()).unwrap());
    log.create_stream(
        "events",
        StreamOptions {
            shards: 3,
            retention: Retention::default(),
            definition: match parse(
                "CREATE STREAM events (k TEXT, v BIGINT, ts TIMESTAMP NOT NULL) \
                 WITH (shards = 3, event_time = 'ts')",
            ) {
                Statement::CreateStream(c) => c.definition.to_log(),
                _ => unreachable!(),
            },
            elsewhere: None,
        },
    )
    .unwrap();
    log
}

/// Workers of a cluster sharing view `per_minute` (id 7) over `log`'s `events`, in `lake`.
struct Workers {
    log: Arc<Log>,
    lake: Lake,
    clock: Arc<TestClock>,
    definition: sluice_sql::ViewDefinition,
}

impl Workers {
    /// Workers sharing `per_minute` over a stream `events` of three shards, in `dir`.
    fn in_dir(dir: &Path) -> Workers {
        let Statement::CreateView(view) = parse(WINDOWED) else {
            unreachable!()
        };
        Workers {
            log: events_log(dir),
            lake: Lake::local(dir.join("lake")).unwrap(),
            clock: Arc::new(TestClock::default()),
            definition: view.definition,
        }
    }

    /// The view on a worker holding `partitions`, and what it holds (the test changes it).
    async fn holding(&self, partitions: &[u32]) -> (Arc<Holds>, ViewPipeline) {
        let holds = Arc::new(Holds::default());
        holds.set(partitions);
        let view = self.open(&holds).await;
        (holds, view)
    }

    fn states(&self) -> sluice_lake::Documents {
        self.lake.files("cluster-c1-states", "arrow")
    }

    fn pieces(&self) -> sluice_lake::Documents {
        self.lake.files("cluster-c1-pieces", "arrow")
    }

    /// The view on a worker holding what `holds` says.
    async fn open(&self, holds: &Arc<Holds>) -> ViewPipeline {
        let placement = Placement {
            snapshots: Snapshots::in_lake(self.states(), &self.definition.name, 7),
            cluster: Some(Shared {
                assignment: holds.clone(),
                pieces: Pieces::new(self.pieces(), &self.definition.name, 7),
            }),
        };
        ViewPipeline::open(
            self.definition.clone(),
            7,
            self.log.clone(),
            self.lake.clone(),
            placement,
            ViewConfig::default(),
            self.clock.clone(),
        )
        .await
        .unwrap()
    }

    /// The rows of `sql` over the view as one Sluice computes it over the same stream, in
    /// `alone`.
    async fn alone(&self, alone: &Lake, state: PathBuf, sql: &str) -> String {
        let mut single = ViewPipeline::open(
            self.definition.clone(),
            8,
            self.log.clone(),
            alone.clone(),
            Placement::local(state),
            ViewConfig::default(),
            self.clock.clone(),
        )
        .await
        .unwrap();
        while single.round().await.unwrap().backlog {}
        single.round().await.unwrap();
        query(alone, sql).await
    }
}

/// An aggregating view in a cluster is spread over the workers: each makes pieces of the
/// partitions it holds, and the holder of partition 0 finishes the view from every partition's
/// pieces. As partitions move, a worker that has not heard can neither write a piece where the
/// new holder did nor commit the view; its rows are those of a single Sluice's view over the
/// same stream.
#[tokio::test]
async fn a_view_spread_over_workers_gives_one_sluice_s_rows_as_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let workers = Workers::in_dir(dir.path());
    let (log, lake) = (workers.log.clone(), workers.lake.clone());
    let (a, mut on_a) = workers.holding(&[0, 1]).await;
    let (b, mut on_b) = workers.holding(&[2]).await;

    events(&log, 0, 300).await;
    let made = on_b.round().await.unwrap();
    assert!(
        made.committed && made.records == 100,
        "B makes partition 2's piece: {made:?}"
    );
    let finished = on_a.round().await.unwrap();
    assert!(finished.committed && finished.records == 200);
    assert!(
        finished.rows > 0,
        "A finishes the view from every partition's pieces"
    );

    // Partitions 0 and 1 move to B; A has not heard yet.
    b.set(&[0, 1, 2]);
    let moved = on_b.round().await.unwrap_err();
    assert!(matches!(moved, PipelineError::Reassigned(_)), "{moved}");
    on_b = workers.open(&b).await;
    events(&log, 300, 300).await;
    let taken_over = on_b.round().await.unwrap();
    assert!(taken_over.committed && taken_over.records == 300);
    // A, not having heard, finds B's pieces where it would write its own.
    let refused = on_a.round().await.unwrap_err();
    assert!(matches!(refused, PipelineError::Reassigned(_)), "{refused}");
    // Opened again before it hears, A writes the next pieces of partitions 0 and 1 first, and
    // finishes the view (its positions are the table's): B then finds A's pieces where it
    // would write its own.
    on_a = workers.open(&a).await;
    events(&log, 600, 300).await;
    assert!(on_a.round().await.unwrap().committed);
    let refused = on_b.round().await.unwrap_err();
    assert!(matches!(refused, PipelineError::Reassigned(_)), "{refused}");
    on_b = workers.open(&b).await;
    // B goes on after A's pieces and finishes; A, not having heard, cannot commit the view:
    // the table moved past the positions it read from.
    assert!(on_b.round().await.unwrap().committed);
    let stale = on_a.round().await.unwrap_err();
    assert!(matches!(stale, PipelineError::Reassigned(_)), "{stale}");
    // A hears: it holds nothing and runs nothing.
    a.set(&[]);
    assert!(on_a.round().await.is_err());
    on_a = workers.open(&a).await;
    assert!(on_a.standby());
    assert!(!on_a.round().await.unwrap().committed);
    // Past every real window, on every shard.
    append(
        &log,
        "events",
        "0 {\"k\":\"z\",\"v\":0,\"ts\":\"2027-01-01T00:00:00Z\"}\n\
         1 {\"k\":\"z\",\"v\":0,\"ts\":\"2027-01-01T00:00:00Z\"}\n\
         2 {\"k\":\"z\",\"v\":0,\"ts\":\"2027-01-01T00:00:00Z\"}\n",
    )
    .await;
    while on_b.round().await.unwrap().backlog {}
    on_b.round().await.unwrap();

    let rows = "SELECT k, window_start, n, total FROM per_minute ORDER BY k, window_start";
    let alone = Lake::local(dir.path().join("alone")).unwrap();
    let expected = workers
        .alone(&alone, dir.path().join("alone-state"), rows)
        .await;
    let shared = query(&lake, rows).await;
    assert_eq!(shared.lines().count(), 75, "{shared}");
    assert_eq!(shared, expected);
    assert_eq!(
        query(&lake, "SELECT count(*) FROM per_minute_errors")
            .await
            .trim(),
        "0"
    );
    // Only the snapshot the last commit names is kept.
    let kept = workers.states().tags().await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");

    // Dropped on some worker: B, not having heard, is fenced off the tables before they go.
    sluice_pipeline::view::fence_tables(&lake, "per_minute", 7, 0..3)
        .await
        .unwrap();
    events(&log, 900, 30).await;
    let fenced = on_b.round().await.unwrap_err();
    assert!(matches!(fenced, PipelineError::Reassigned(_)), "{fenced}");
}

/// A partition that takes nothing for the idle timeout does not hold a spread view's windows
/// open: its holder says it is idle, the finisher raises its mark to the others' with a marker
/// in its chain, and an event it takes later that is older than that mark is late.
#[tokio::test]
async fn an_idle_partition_s_mark_is_raised_and_what_it_takes_later_is_judged_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let workers = Workers::in_dir(dir.path());
    let (log, lake) = (workers.log.clone(), workers.lake.clone());
    let (_, mut on_a) = workers.holding(&[0, 1]).await;
    let (_, mut on_b) = workers.holding(&[2]).await;
    // Three minutes of events on shards 0 and 1; shard 2 takes nothing.
    on_two_shards(&log, 0..180).await;
    on_b.round().await.unwrap();
    on_a.round().await.unwrap();
    let rows = "SELECT window_start, n FROM per_minute ORDER BY window_start";
    assert_eq!(
        query(&lake, rows).await,
        "",
        "partition 2 holds every window open"
    );
    // The idle timeout passes while shards 0 and 1 take more: B says partition 2 is idle, A
    // raises its mark to the others' and closes the windows their marks passed.
    workers.clock.0.store(11_000, Ordering::SeqCst);
    on_two_shards(&log, 180..190).await;
    assert!(
        on_b.round().await.unwrap().committed,
        "B's piece saying partition 2 is idle"
    );
    assert!(on_a.round().await.unwrap().committed);
    let closed = "2026-01-05T00:00:00,60\n2026-01-05T00:01:00,60\n2026-01-05T00:02:00,60\n";
    assert_eq!(query(&lake, rows).await, closed);
    // An event of the first minute on partition 2 now is late: it went to the errors table.
    append(
        &log,
        "events",
        "2 {\"k\":\"k\",\"v\":1,\"ts\":\"2026-01-05T00:00:30Z\"}\n",
    )
    .await;
    assert!(on_b.round().await.unwrap().committed);
    on_a.round().await.unwrap();
    let late = "SELECT count(*) FROM per_minute_errors WHERE reason LIKE 'late:%'";
    assert_eq!(query(&lake, late).await.trim(), "1");
    assert_eq!(query(&lake, rows).await, closed);
}

/// A finisher that has not heard that partition 0 moved commits nothing, even a round that moves
/// no position: the new finisher closed the windows an idle partition held open (its markers
/// moved no position either), and the table names another snapshot than the stale one's state.
#[tokio::test]
async fn a_finisher_that_has_not_heard_commits_nothing_even_a_round_that_moves_no_position() {
    let dir = tempfile::tempdir().unwrap();
    let workers = Workers::in_dir(dir.path());
    let (log, lake) = (workers.log.clone(), workers.lake.clone());
    let (_, mut on_a) = workers.holding(&[0, 1, 2]).await;
    let b = Arc::new(Holds::default());
    // Three minutes of events on shards 0 and 1; shard 2 takes nothing: no window closes.
    on_two_shards(&log, 0..180).await;
    assert!(on_a.round().await.unwrap().committed);
    let rows = "SELECT window_start, n FROM per_minute ORDER BY window_start";
    assert_eq!(query(&lake, rows).await, "");
    // Every partition moves to B; A has not heard. The idle timeout passes: B closes the
    // windows with markers, in a commit that moves no position.
    b.set(&[0, 1, 2]);
    let mut on_b = workers.open(&b).await;
    workers.clock.0.store(11_000, Ordering::SeqCst);
    assert!(on_b.round().await.unwrap().committed);
    let closed = "2026-01-05T00:00:00,60\n2026-01-05T00:01:00,60\n";
    assert_eq!(query(&lake, rows).await, closed);
    // A passes B's pieces of no records and would close the same windows from its own state.
    let stale = on_a.round().await.unwrap_err();
    assert!(matches!(stale, PipelineError::Reassigned(_)), "{stale}");
    assert_eq!(query(&lake, rows).await, closed, "no window twice");
}

/// A cluster's views are in the lake: one created on a worker is on another once it follows
/// the catalog, the same name cannot be created twice, and a drop reaches every worker.
#[tokio::test]
async fn a_cluster_s_views_are_created_once_and_followed_by_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let (one, two) = (Catalog::in_lake(&lake, "c1"), Catalog::in_lake(&lake, "c1"));
    let Statement::CreateView(view) = parse(WINDOWED) else {
        unreachable!()
    };
    let created = one
        .create(view.definition.clone(), &[&Input::Stream("events".into())])
        .await
        .unwrap();
    assert!(two.get("per_minute").is_none());
    assert!(two.follow().await.unwrap(), "the catalog changed");
    assert_eq!(two.get("per_minute"), Some(created.clone()));
    assert!(!two.follow().await.unwrap(), "nothing changed since");
    assert_eq!(two.reading("events"), vec!["per_minute".to_string()]);
    let again = two
        .create(view.definition.clone(), &[&Input::Stream("events".into())])
        .await;
    assert!(
        matches!(again, Err(PipelineError::ViewExists(_))),
        "{again:?}"
    );
    // Another cluster on the same lake has views of its own.
    let other = Catalog::in_lake(&lake, "c2");
    assert!(!other.follow().await.unwrap());
    assert!(other.list().is_empty());

    two.drop_view("per_minute").await.unwrap();
    assert!(one.follow().await.unwrap());
    assert!(one.list().is_empty());
}
