//! A view plans, after a restart, the very query it planned when it was created: its
//! definition is kept as text, read back whole, and planned again at every start.

use std::sync::Arc;

use proptest::prelude::*;
use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use sluice_pipeline::view::plan::ViewPlan;
use sluice_sql::{Statement, ViewDefinition};

/// A log with stream `ticks` and a lake with table `m` (for enrichment joins).
struct World {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    lake: Lake,
    runtime: tokio::runtime::Runtime,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let Statement::CreateStream(c) = sluice_sql::parse(
        "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, \
         ts TIMESTAMP NOT NULL) WITH (shards = 2, event_time = 'ts', watermark = '5 seconds')",
    )
    .unwrap()
    .remove(0) else {
        panic!()
    };
    log.create_stream(
        "ticks",
        StreamOptions {
            shards: 2,
            retention: Retention::default(),
            definition: c.definition.to_log(),
            elsewhere: None,
        },
    )
    .unwrap();
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new(
            "ticker",
            datafusion::arrow::datatypes::DataType::Utf8,
            true,
        ),
        datafusion::arrow::datatypes::Field::new(
            "name",
            datafusion::arrow::datatypes::DataType::Utf8,
            true,
        ),
    ]));
    runtime
        .block_on(lake.open_or_create("m", &schema, &[], &[]))
        .unwrap();
    World {
        _dir: dir,
        log,
        lake,
        runtime,
    }
}

fn expression() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "price * 2",
        "CAST(volume AS DOUBLE) / 3",
        "upper(ticker)",
        "price > 1.5 AND volume < 3",
        "CASE WHEN price > 10 THEN 'high' ELSE 'low' END",
        "ticker LIKE 'T%'",
        "date_part('hour', ts)",
        "price - .5",
        "-price",
        "'x' || ticker",
        "coalesce(price, 0.0)",
        "ts + INTERVAL '1 hour'",
    ])
}

fn filter() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "price > 1.5",
        "ticker IN ('A', 'B')",
        "volume BETWEEN 1 AND 10",
        "ts > TIMESTAMP '2026-01-01 00:00:00'",
        "NOT (price < .5)",
        "price = m. 5",
        "ticker IS NOT NULL AND price <> 2",
    ])
}

fn aggregate() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "count(*) AS n",
        "sum(volume) AS volume",
        "avg(price) AS mean",
        "max(price) - min(price) AS spread",
        "last_value(price ORDER BY ts) AS close",
        "count(DISTINCT ticker) AS tickers",
        "approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY price) AS median",
    ])
}

/// A `WHERE` clause, or none.
fn filtered() -> impl Strategy<Value = String> {
    prop::option::of(filter()).prop_map(|f| match f {
        Some(f) => format!(" WHERE {f}"),
        None => String::new(),
    })
}

/// View queries of every shape a view takes: stateless, windowed, updating, enrichment.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::collection::vec(expression(), 1..4), filtered()).prop_map(|(e, w)| {
            let select: Vec<String> = e
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{e} AS c{i}"))
                .collect();
            format!("SELECT ticker, {} FROM ticks{w}", select.join(", "))
        }),
        (
            prop::collection::vec(aggregate(), 1..3),
            filtered(),
            prop::sample::select(vec!["1 minute", "10 seconds", "1 hour"]),
        )
            .prop_map(|(a, w, size)| {
                format!(
                    "SELECT ticker, window_start, window_end, {} FROM TUMBLE(ticks, ts, \
                     INTERVAL '{size}'){w} GROUP BY ticker, window_start, window_end",
                    a.join(", ")
                )
            }),
        (prop::collection::vec(aggregate(), 1..3), filtered()).prop_map(|(a, w)| {
            format!(
                "SELECT ticker, {} FROM ticks{w} GROUP BY ticker",
                a.join(", ")
            )
        }),
        filtered().prop_map(|w| format!(
            "SELECT t.ticker, m.name, t.price FROM ticks t JOIN m ON t.ticker = m.ticker{}",
            w.replace("ticker", "t.ticker")
        )),
    ]
}

/// The definition as the catalog keeps it, through its JSON and back.
fn stored(definition: &ViewDefinition) -> ViewDefinition {
    serde_json::from_str(&serde_json::to_string(definition).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every view `CREATE MATERIALIZED VIEW` accepts plans the same query after a restart
    /// (from its stored definition) as when it was created.
    #[test]
    fn an_accepted_view_plans_the_same_query_after_a_restart(query in query()) {
        let world = world();
        let sql = format!("CREATE MATERIALIZED VIEW v AS {query}");
        let Ok(mut statements) = sluice_sql::parse(&sql) else {
            // Refused when created (e.g. `m. 5`, which would not read back): nothing is kept.
            return Ok(());
        };
        let Statement::CreateView(create) = statements.remove(0) else { panic!("{sql}") };
        let created = world
            .runtime
            .block_on(ViewPlan::new(&create.definition, &world.log, &world.lake));
        let Ok(created) = created else {
            // Refused by the planner: nothing is kept either.
            return Ok(());
        };
        let restarted = world
            .runtime
            .block_on(ViewPlan::new(&stored(&create.definition), &world.log, &world.lake))
            .unwrap_or_else(|e| panic!("{sql}: planned when created, not after a restart: {e}"));
        prop_assert_eq!(created.explain(), restarted.explain(), "{}", sql);
    }
}
