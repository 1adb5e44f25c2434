//! The runtime as a server runs it (`Pipelines`): supervision of failures and panics, the
//! drop guard against a stream dropped under a view, and the report of records retention
//! deleted before a pipeline took them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_lake::Lake;
use sluice_log::{Log, LogConfig, Retention, StreamOptions};
use sluice_pipeline::view::{SystemClock, ViewConfig};
use sluice_pipeline::{Pipeline, Pipelines, PipelinesConfig, RawConfig, errors_table};
use sluice_sql::Statement;

use super::count;

/// A log, a lake and a server's pipelines over them, taking rounds every 50 ms.
struct Fixture {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    lake: Lake,
    pipelines: Arc<Pipelines>,
}

impl Fixture {
    fn new(log_config: LogConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path().join("log"), log_config).unwrap());
        let lake = Lake::local(dir.path().join("lake")).unwrap();
        let config = PipelinesConfig {
            raw: RawConfig {
                commit_interval: Duration::from_millis(50),
                ..RawConfig::default()
            },
            views: ViewConfig {
                interval: Duration::from_millis(50),
                ..ViewConfig::default()
            },
            cluster: None,
        };
        let pipelines = Pipelines::open(
            log.clone(),
            lake.clone(),
            dir.path().join("views"),
            config,
            Arc::new(SystemClock),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            log,
            lake,
            pipelines,
        }
    }

    /// Creates stream `name` as `create` declares it, and its pipeline.
    async fn stream(&self, create: &str) {
        self.stream_kept_as(create, |_| {}).await
    }

    /// Creates stream `name` as `create` declares it, its definition as the log keeps it
    /// changed by `edit` (as an older Sluice wrote it), and its pipeline.
    async fn stream_kept_as(&self, create: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let Statement::CreateStream(c) = sluice_sql::parse(create).unwrap().remove(0) else {
            panic!("not a CREATE STREAM: {create}")
        };
        let mut definition = c.definition.to_log();
        edit(&mut definition);
        self.log
            .create_stream(
                &c.name,
                StreamOptions {
                    shards: c.shards,
                    retention: Retention {
                        max_age_ms: c.retention_ms,
                        max_bytes_per_shard: c.retention_bytes_per_shard,
                    },
                    definition,
                    elsewhere: None,
                },
            )
            .unwrap();
        self.pipelines.reconcile().await;
    }

    async fn view(&self, create: &str) -> sluice_pipeline::Result<()> {
        let Statement::CreateView(c) = sluice_sql::parse(create).unwrap().remove(0) else {
            panic!("not a CREATE MATERIALIZED VIEW: {create}")
        };
        self.pipelines.create_view(c.definition).await
    }

    async fn rows(&self, table: &str) -> i64 {
        count(
            &self.lake.open(table).await.unwrap(),
            "SELECT count(*) FROM t",
        )
        .await
    }
}

const TICKS: &str = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL) \
                     WITH (shards = 2, event_time = 'ts', watermark = '0 seconds')";
const PRICES: &str = "CREATE MATERIALIZED VIEW prices AS SELECT ticker, price FROM ticks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_kept_before_timestamptz_keep_their_instants_and_new_timestamps_are_wall_times() {
    let fx = Fixture::new(LogConfig::default());
    // TICKS as Sluice kept it before TIMESTAMPTZ: `timestamp`, stored as an instant.
    fx.stream_kept_as(TICKS, |definition| {
        definition["columns"][2]["data_type"] = "timestamp".into();
    })
    .await;
    fx.stream(&TICKS.replace("ticks", "wall_ticks")).await;
    fx.view("CREATE MATERIALIZED VIEW stamps AS SELECT ticker, ts FROM ticks")
        .await
        .unwrap();
    fx.view("CREATE MATERIALIZED VIEW wall_stamps AS SELECT ticker, ts FROM wall_ticks")
        .await
        .unwrap();
    append(&fx.log, "ticks", 2).await;
    append(&fx.log, "wall_ticks", 2).await;
    for table in ["ticks", "stamps", "wall_ticks", "wall_stamps"] {
        until(table, || async { fx.rows(table).await == 4 }).await;
    }
    for (table, zone, what) in [
        ("ticks", ", \"UTC\"", "the old stream's instants"),
        ("stamps", ", \"UTC\"", "its view's"),
        ("wall_ticks", "", "a TIMESTAMP's wall times"),
        ("wall_stamps", "", "its view's"),
    ] {
        let sql = format!("SELECT count(*) FROM t WHERE arrow_typeof(ts) = 'Timestamp(µs{zone})'");
        let typed = count(&fx.lake.open(table).await.unwrap(), &sql).await;
        assert_eq!(typed, 4, "{table}: {what}");
    }
    let kept = fx.log.stream("ticks").unwrap().meta().definition.clone();
    assert_eq!(
        sluice_sql::StreamDefinition::from_log(&kept).columns[2].data_type,
        sluice_sql::ColumnType::TimestampTz
    );
}

/// Appends `n` good records to every shard of `stream`.
async fn append(log: &Log, stream: &str, n: usize) {
    let stream = log.stream(stream).unwrap();
    let mut batches = stream.batches();
    for shard in 0..stream.shards().len() as u32 {
        for i in 0..n {
            let record =
                format!(r#"{{"ticker":"T{i}","price":{i}.5,"ts":"2026-01-05T14:30:00Z"}}"#);
            batches.push(shard, b"", record.as_bytes()).unwrap();
        }
    }
    for part in stream.append(batches).await.unwrap() {
        part.result.unwrap();
    }
}

/// Waits (at most 60 s) until `done` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_pipeline_and_a_view_that_panic_are_started_again_and_reported() {
    let scenario = fail::FailScenario::setup();
    let f = Fixture::new(LogConfig::default());
    f.stream(TICKS).await;
    f.view(PRICES).await.unwrap();
    fail::cfg("pipeline::ticks::round", "1*panic(boom)").unwrap();
    fail::cfg("pipeline::prices::round", "1*panic(boom)").unwrap();
    append(&f.log, "ticks", 50).await;

    // Each is reported while it waits to start again, then catches up, exactly once.
    let reported = |name: &'static str| {
        let pipelines = f.pipelines.clone();
        move || {
            let status = match name {
                "ticks" => pipelines.stream_status(name),
                _ => pipelines
                    .view_statuses()
                    .into_iter()
                    .find(|s| s.name == name),
            };
            let reported = status.is_some_and(|s| {
                s.failures == 1
                    && s.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("panicked") && e.contains("boom"))
            });
            async move { reported }
        }
    };
    until("the raw pipeline's panic to be reported", reported("ticks")).await;
    until("the view's panic to be reported", reported("prices")).await;
    until("both to catch up", || async {
        f.rows("ticks").await == 100 && f.rows("prices").await == 100
    })
    .await;
    let ticks = f.pipelines.stream_status("ticks").unwrap();
    let prices = &f.pipelines.view_statuses()[0];
    for status in [&ticks, prices] {
        assert_eq!(status.failures, 1, "{status:?}");
        assert_eq!(status.last_error, None, "a round since: {status:?}");
    }
    f.pipelines.stop_all().await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_rounds_back_off_doubling_and_both_kinds_report_them() {
    let scenario = fail::FailScenario::setup();
    let f = Fixture::new(LogConfig::default());
    f.stream(TICKS).await;
    f.view(PRICES).await.unwrap();
    let failing = Instant::now();
    fail::cfg("pipeline::ticks::round", "3*return").unwrap();
    fail::cfg("pipeline::prices::round", "3*return").unwrap();
    append(&f.log, "ticks", 10).await;
    until("both to fail three times and catch up", || async {
        let ticks = f.pipelines.stream_status("ticks").unwrap();
        let prices = f.pipelines.view_statuses().remove(0);
        ticks.failures == 3
            && prices.failures == 3
            && f.rows("ticks").await == 20
            && f.rows("prices").await == 20
    })
    .await;
    // Three failures in a row wait 0.5, 1 and 2 seconds before the next attempt.
    assert!(
        failing.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        failing.elapsed()
    );
    f.pipelines.stop_all().await;
    scenario.teardown();
}

/// A stream and the views over it: whichever of `CREATE MATERIALIZED VIEW` and `DROP STREAM`
/// (through any door: the log asks the pipelines) comes first, no view is left reading a
/// stream that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_and_a_drop_of_its_stream_at_once_never_leave_a_view_without_its_stream() {
    let f = Fixture::new(LogConfig::default());
    let (mut views_won, mut drops_won) = (0, 0);
    for _ in 0..20 {
        f.stream(TICKS).await;
        let log = f.log.clone();
        let dropping = tokio::task::spawn_blocking(move || log.drop_stream("ticks"));
        let created = f.view(PRICES).await;
        let dropped = dropping.await.unwrap();
        let (view, stream) = (f.pipelines.view("prices"), f.log.stream("ticks"));
        assert!(
            !(view.is_some() && stream.is_err()),
            "view {created:?}, drop {dropped:?}"
        );
        match (created, dropped) {
            (Ok(()), Err(sluice_log::Error::InUse { .. })) => views_won += 1,
            (Err(_), Ok(())) => drops_won += 1,
            (created, dropped) => panic!("view {created:?}, drop {dropped:?}"),
        }
        if view.is_some() {
            f.pipelines.drop_view("prices", false).await.unwrap();
            f.log.drop_stream("ticks").unwrap();
        }
        f.pipelines.reconcile().await;
    }
    assert_eq!(views_won + drops_won, 20);
    f.pipelines.stop_all().await;
}

/// Retention deletes records a paused pipeline had not taken: the raw pipeline and a view each
/// write one row naming the exact range lost to their errors table, in the commit that moves
/// past it, and never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_paused_past_retention_reports_the_exact_range_it_lost() {
    use sluice_pipeline::source::StreamSource;
    use sluice_pipeline::view::{Placement, ViewPipeline};

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 600,
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path().join("log"), config).unwrap());
    let lake = Lake::local(dir.path().join("lake")).unwrap();
    let Statement::CreateStream(c) = sluice_sql::parse(
        "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL) \
         WITH (shards = 1, event_time = 'ts', watermark = '0 seconds', retention_bytes = 2000)",
    )
    .unwrap()
    .remove(0) else {
        panic!()
    };
    let stream = log
        .create_stream(
            "ticks",
            StreamOptions {
                shards: 1,
                retention: Retention {
                    max_age_ms: None,
                    max_bytes_per_shard: c.retention_bytes_per_shard,
                },
                definition: c.definition.to_log(),
                elsewhere: None,
            },
        )
        .unwrap();
    // One record an append, so that segments roll every few records.
    let append_one = |i: usize| {
        let stream = stream.clone();
        async move {
            let mut batches = stream.batches();
            let record =
                format!(r#"{{"ticker":"T{i}","price":{i}.5,"ts":"2026-01-05T14:30:00Z"}}"#);
            batches.push(0, b"", record.as_bytes()).unwrap();
            for part in stream.append(batches).await.unwrap() {
                part.result.unwrap();
            }
        }
    };
    for i in 0..10 {
        append_one(i).await;
    }
    // Both take three records, then pause.
    let few = RawConfig {
        max_records_per_round: 3,
        ..RawConfig::default()
    };
    let mut raw =
        sluice_pipeline::RawPipeline::open(StreamSource::open(&log, "ticks").unwrap(), &lake, few)
            .await
            .unwrap();
    assert_eq!(raw.round().await.unwrap().records, 3);
    let Statement::CreateView(v) = sluice_sql::parse(PRICES).unwrap().remove(0) else {
        panic!()
    };
    let open_view = || {
        ViewPipeline::open(
            v.definition.clone(),
            7,
            log.clone(),
            lake.clone(),
            Placement::local(dir.path().join("state")),
            ViewConfig {
                max_records_per_round: 3,
                ..ViewConfig::default()
            },
            Arc::new(SystemClock),
        )
    };
    let mut view = open_view().await.unwrap();
    assert_eq!(view.round().await.unwrap().records, 3);

    for i in 10..60 {
        append_one(i).await;
    }
    assert!(log.enforce_retention().unwrap() > 0);
    let oldest = stream.shards()[0].bounds().0;
    assert!(
        oldest > 3,
        "retention deleted what the pipelines had not taken"
    );
    let lost = format!("shard 0 sequence numbers 3 to {} ", oldest - 1);

    let round = raw.round().await.unwrap();
    assert_eq!(round.lost, oldest - 3);
    assert!(
        round.gap.unwrap().reason().contains(&lost),
        "{:?}",
        round.gap
    );
    let round = view.round().await.unwrap();
    assert_eq!(round.lost, oldest - 3);

    // The rest is taken, and no restart reports the gap again.
    let mut raw = sluice_pipeline::RawPipeline::open(
        StreamSource::open(&log, "ticks").unwrap(),
        &lake,
        RawConfig::default(),
    )
    .await
    .unwrap();
    while raw.round().await.unwrap().backlog {}
    let mut view = open_view().await.unwrap();
    while view.round().await.unwrap().backlog {}
    for (table, rows) in [("ticks", 60 - oldest), ("prices", 60 - oldest)] {
        let errors = lake.open(&errors_table(table)).await.unwrap();
        let reason = format!("SELECT count(*) FROM t WHERE reason LIKE 'lost: %{lost}%'");
        assert_eq!(count(&errors, &reason).await, 1, "{table}'s errors");
        assert_eq!(
            count(&errors, "SELECT count(*) FROM t").await,
            1,
            "{table}'s errors"
        );
        let taken = count(&lake.open(table).await.unwrap(), "SELECT count(*) FROM t").await;
        assert_eq!(taken as u64, 3 + rows, "{table}");
    }
}

/// A source whose partitions grow while a pipeline reads it, as a Kafka topic given more
/// partitions does: each partition a list of records (their sequence numbers 0, 1, …).
struct Growing {
    partitions: std::sync::Mutex<Vec<u64>>,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

#[async_trait::async_trait]
impl sluice_pipeline::source::Source for Growing {
    fn name(&self) -> &str {
        "growing"
    }

    fn id(&self) -> u64 {
        1
    }

    fn schema(&self) -> &datafusion::arrow::datatypes::SchemaRef {
        &self.schema
    }

    async fn bounds(
        &self,
    ) -> sluice_pipeline::Result<std::collections::BTreeMap<u32, sluice_pipeline::source::Bounds>>
    {
        let partitions = self.partitions.lock().unwrap();
        Ok((0u32..)
            .zip(partitions.iter())
            .map(|(p, &next)| (p, sluice_pipeline::source::Bounds { oldest: 0, next }))
            .collect())
    }

    async fn read(
        &self,
        from: &sluice_pipeline::exactly_once::Positions,
        limits: &sluice_pipeline::source::Limits,
    ) -> sluice_pipeline::Result<sluice_pipeline::source::SourceRead> {
        use datafusion::arrow::array::TimestampMicrosecondArray;
        use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch};

        let partitions = self.partitions.lock().unwrap().clone();
        let mut parts = Vec::new();
        let mut backlog = false;
        for (&partition, &limit) in limits {
            let at = from.get(&partition).copied().unwrap_or(0);
            let end = partitions[partition as usize];
            let next = end.min(at + limit as u64);
            backlog |= next < end;
            let seqs: Vec<i64> = (at..next).map(|s| s as i64).collect();
            let rows = RecordBatch::try_new(
                self.schema.clone(),
                vec![
                    Arc::new(Int32Array::from(vec![partition as i32; seqs.len()])),
                    Arc::new(Int64Array::from(seqs.clone())),
                    Arc::new(
                        TimestampMicrosecondArray::from(vec![0; seqs.len()]).with_timezone("UTC"),
                    ),
                ],
            )?;
            parts.push(sluice_pipeline::source::PartRead {
                partition,
                records: seqs.len(),
                rows,
                errors: RecordBatch::new_empty(sluice_pipeline::decode::error_schema()),
                next,
                gap: None,
            });
        }
        Ok(sluice_pipeline::source::SourceRead { parts, backlog })
    }
}

/// A pipeline that keeps what it took, by partition and sequence number, and its positions.
struct Taking {
    source: sluice_pipeline::source::SharedSource,
    positions: sluice_pipeline::exactly_once::Positions,
    taken: Arc<std::sync::Mutex<Vec<(i32, i64)>>>,
}

#[async_trait::async_trait]
impl Pipeline for Taking {
    fn source(&self) -> &sluice_pipeline::source::SharedSource {
        &self.source
    }

    fn kind(&self) -> sluice_pipeline::Kind {
        sluice_pipeline::Kind::Raw
    }

    fn next_read(&self) -> sluice_pipeline::exactly_once::Positions {
        self.positions.clone()
    }

    fn limits(
        &self,
        _from: &sluice_pipeline::exactly_once::Positions,
        bounds: &std::collections::BTreeMap<u32, sluice_pipeline::source::Bounds>,
    ) -> sluice_pipeline::source::Limits {
        // Three records a partition a round: backlogs, so rounds read ahead.
        bounds.keys().map(|&p| (p, 3)).collect()
    }

    async fn process(
        &mut self,
        read: sluice_pipeline::source::SourceRead,
    ) -> sluice_pipeline::Result<sluice_pipeline::Round> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Int32Type, Int64Type};

        let mut taken = self.taken.lock().unwrap();
        for part in &read.parts {
            let rows = sluice_pipeline::exactly_once::past(&part.rows, &self.positions)?;
            let shards = rows.column(0).as_primitive::<Int32Type>();
            let seqs = rows.column(1).as_primitive::<Int64Type>();
            taken.extend(
                shards
                    .values()
                    .iter()
                    .copied()
                    .zip(seqs.values().iter().copied()),
            );
        }
        let moved = read
            .parts
            .iter()
            .any(|p| self.positions.get(&p.partition) != Some(&p.next));
        self.positions.extend(read.next());
        Ok(sluice_pipeline::Round {
            records: read.records(),
            backlog: read.backlog,
            committed: moved,
            ..Default::default()
        })
    }

    async fn compact(&mut self) -> sluice_pipeline::Result<()> {
        Ok(())
    }
}

/// Partitions added while a pipeline runs (a topic grown, a shard split) are read from their
/// first record, the others go on from where they were, and no record is taken twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_while_a_pipeline_runs_are_read_from_their_first_record() {
    let mut fields = vec![];
    fields.extend(sluice_pipeline::decode::meta_fields());
    let source = Arc::new(Growing {
        partitions: std::sync::Mutex::new(vec![10, 10]),
        schema: Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
    });
    let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pipeline = Taking {
        source: source.clone(),
        positions: Default::default(),
        taken: taken.clone(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cadence = sluice_pipeline::runtime::Cadence {
        interval: Duration::from_millis(10),
        compact_every: usize::MAX,
    };
    let running = tokio::spawn(sluice_pipeline::runtime::run_one(
        Box::new(pipeline),
        cadence,
        stopped,
    ));
    until("the first two partitions", || async {
        taken.lock().unwrap().len() == 20
    })
    .await;
    // Two partitions more, and more records in the first.
    *source.partitions.lock().unwrap() = vec![15, 10, 7, 4];
    until("the four partitions", || async {
        taken.lock().unwrap().len() == 36
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    let mut taken = taken.lock().unwrap().clone();
    taken.sort();
    let expected: Vec<(i32, i64)> = [(0, 15), (1, 10), (2, 7), (3, 4)]
        .into_iter()
        .flat_map(|(p, n)| (0..n).map(move |s| (p, s)))
        .collect();
    assert_eq!(taken, expected, "every record of every partition, once");
}
