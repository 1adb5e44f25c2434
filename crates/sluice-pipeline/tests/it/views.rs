//! Golden tests of materialized views: deterministic input with event times, a view, and the
//! view's table as expected, from the files in `tests/views/*.view` at the repository's root.
//!
//! A file is a list of directives, separated by blank lines:
//!
//! ```text
//! # a comment
//! stream CREATE STREAM …          the stream, in the dialect
//! view CREATE MATERIALIZED VIEW … a view (more than one: each may read the ones before)
//! round                           these records (one per line, `<shard> <json>`) are appended
//! 0 {"k":"a","ts":"…"}            to the stream, then each view in turn runs rounds until it
//!                                 has taken all its input holds
//! clock +15s                      the views' clock moves on (for idle shards)
//! restart                         the views are dropped and opened again (from their commits)
//! query SELECT … FROM v ORDER BY …  the view's table (or its errors table) must hold exactly
//! ----                            these rows (values separated by commas, NULL for null)
//! a,2026-01-05T00:00:00Z,2
//! ```
//!
//! `SLUICE_BLESS=1` rewrites each file's expected rows with what the view gives (then read the
//! diff before committing it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use sluice_pipeline::Pipeline;
use sluice_pipeline::view::{Clock, ViewConfig, ViewPipeline};
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
                append(&log, stream.as_deref().expect("a stream"), body).await;
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
        state,
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
