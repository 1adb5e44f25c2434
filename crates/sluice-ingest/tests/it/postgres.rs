//! A source's reader against Debian's PostgreSQL, started by the test (initdb as the postgres
//! user, `wal_level = logical`): the tables' snapshot, then their changes, in the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use pg_walstream::CancellationToken;
use sluice_ingest::postgres::{Directory, Downstream, Kept, Reader, Shelf, TableOut};
use sluice_log::{Log, LogConfig, Retention, Stream, StreamOptions, Tail};
use sluice_sql::ColumnType;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server of its own, stopped when dropped.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(parent: &Path) -> Postgres {
        let dir = parent.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        run(
            "chown",
            &["-R", "postgres:postgres", parent.to_str().unwrap()],
        );
        as_postgres(
            &format!("{BIN}/initdb"),
            &[
                "-D",
                &format!("{}/data", dir.display()),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c wal_level=logical \
             -c max_replication_slots=10 -c max_wal_senders=10 -c fsync=off \
             -c wal_sender_timeout=10s",
            dir.display()
        );
        as_postgres(
            &format!("{BIN}/pg_ctl"),
            &[
                "-D",
                &format!("{}/data", dir.display()),
                "-l",
                &format!("{}/log", dir.display()),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        );
        Postgres { dir, port }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql.
    fn sql(&self, sql: &str) {
        run(
            "psql",
            &[&self.url(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        );
    }

    /// The one value `sql` selects.
    fn value(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([&self.url(), "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = format!("{}/data", self.dir.display());
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{BIN}/pg_ctl"),
                "-D",
                &data,
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn as_postgres(program: &str, args: &[&str]) {
    let mut all = vec!["-u", "postgres", "--", program];
    all.extend_from_slice(args);
    run("runuser", &all);
}

fn stream(log: &Log, name: &str) -> Arc<Stream> {
    log.create_stream(
        name,
        StreamOptions {
            shards: 1,
            retention: Retention::default(),
            definition: serde_json::Value::Null,
            elsewhere: None,
        },
    )
    .unwrap()
}

/// The pipelines, as a reader sees them: they have taken everything (`all`) or nothing, and
/// the streams whose pipelines were started again are noted.
#[derive(Default)]
struct Lake {
    all: bool,
    reopened: Mutex<Vec<String>>,
}

impl Downstream for Lake {
    fn taken<'a>(&'a self, _: &'a Arc<Stream>) -> BoxFuture<'a, Option<u64>> {
        Box::pin(std::future::ready(self.all.then_some(u64::MAX)))
    }

    fn tail<'a>(&'a self, stream: &'a Arc<Stream>) -> BoxFuture<'a, std::io::Result<Tail>> {
        Box::pin(std::future::ready(
            stream.tail(0).map_err(std::io::Error::other),
        ))
    }

    fn reopen<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, ()> {
        self.reopened.lock().unwrap().push(stream.to_string());
        Box::pin(async {})
    }
}

/// A shelf in `dir` keeping source `test` (a reader makes no slot for a source not kept).
async fn kept_source(dir: &Path) -> Arc<dyn Shelf> {
    let shelf = Arc::new(Directory(dir.join("sources")));
    let definition = b"{}".to_vec();
    (shelf.put("test", Kept::Definition, definition, true).await).unwrap();
    shelf
}

/// A reader of `slot` of `publication` in `pg`, into `tables`, for source `test` on `shelf`.
fn reader_of(
    pg: &Postgres,
    (slot, publication): (&str, &str),
    tables: HashMap<String, TableOut>,
    shelf: &Arc<dyn Shelf>,
    log: &Arc<Log>,
    heartbeat: Duration,
) -> Reader {
    Reader {
        conninfo: format!("{}?replication=database", pg.url()),
        slot: slot.into(),
        publication: publication.into(),
        tables,
        source: "test".into(),
        shelf: shelf.clone(),
        snapshot: true,
        heartbeat,
        log: log.clone(),
        stopped: Arc::default(),
    }
}

/// `reader` reading in a task of its own, downstream of `lake`, until the token is cancelled.
fn spawn(
    mut reader: Reader,
    lake: Arc<Lake>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), sluice_ingest::postgres::ReaderError>>,
) {
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { reader.run(lake, &stop, || {}).await })
    };
    (stop, task)
}

/// The records of the stream's one shard, as JSON.
fn records(stream: &Stream) -> Vec<serde_json::Value> {
    let shard = &stream.shards()[0];
    let (start, end) = shard.bounds();
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let read = shard.read(at, 10_000, usize::MAX).unwrap();
        for record in &read.records {
            out.push(serde_json::from_slice(&record.data).unwrap());
        }
        at = read.next_seq;
    }
    out
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_then_every_change_lands_in_the_tables_streams() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    pg.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, qty bigint, \
         big text, at timestamptz); \
         ALTER TABLE orders REPLICA IDENTITY DEFAULT; \
         INSERT INTO orders SELECT i, 'new', i * 10, \
         (SELECT string_agg(md5(random()::text || i || j), '') FROM generate_series(1, 400) j), \
         '2026-01-05 14:30:00+00' FROM generate_series(1, 100) i; \
         CREATE PUBLICATION sluice FOR TABLE orders;",
    );
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let orders = stream(&log, "orders");
    let columns = [
        ("id", ColumnType::Int),
        ("status", ColumnType::Text),
        ("qty", ColumnType::BigInt),
        ("big", ColumnType::Text),
        ("at", ColumnType::TimestampTz),
    ];
    let shelf = kept_source(dir.path()).await;
    let reader = || {
        let tables = HashMap::from([(
            "public.orders".to_string(),
            TableOut {
                stream: orders.clone(),
                columns: columns.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            },
        )]);
        reader_of(
            &pg,
            ("sluice_test", "sluice"),
            tables,
            &shelf,
            &log,
            Duration::from_millis(300),
        )
    };
    // The lake takes nothing (or, with `all`, everything): the slot is never acknowledged
    // past the snapshot (or is, as far as PostgreSQL has sent).
    let start = |reader: Reader, all: bool| {
        let lake = Lake {
            all,
            ..Lake::default()
        };
        spawn(reader, Arc::new(lake))
    };
    let (stop, task) = start(reader(), false);
    until("the snapshot", || records(&orders).len() == 101).await;
    let snapshot = records(&orders);
    assert_eq!(snapshot[0]["op"], "t");
    assert!(snapshot[1..].iter().all(|r| r["op"] == "r"));
    let at = snapshot[0]["source"]["lsn"].clone();
    assert!(snapshot.iter().all(|r| r["source"]["lsn"] == at));
    assert_eq!(snapshot[1]["after"]["id"], 1);
    assert_eq!(snapshot[1]["after"]["at"], "2026-01-05T14:30:00+00:00");

    // An update that leaves a large value (stored apart: TOAST) alone does not send it.
    pg.sql(
        "UPDATE orders SET status = 'paid' WHERE id <= 3; DELETE FROM orders WHERE id = 50; \
            INSERT INTO orders VALUES (101, 'new', 1, 'y', NULL);",
    );
    until("the changes", || records(&orders).len() == 106).await;
    let changes = &records(&orders)[101..];
    let ops: Vec<&str> = changes.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["u", "u", "u", "d", "c"]);
    assert_eq!(changes[0]["after"]["status"], "paid");
    assert_eq!(changes[0]["after"]["big"], "__debezium_unavailable_value");
    assert_eq!(changes[3]["before"]["id"], 50);
    let end = changes[0]["source"]["end_lsn"].as_u64().unwrap();
    assert!(
        changes[..3]
            .iter()
            .all(|r| r["source"]["end_lsn"].as_u64() == Some(end)),
        "one transaction"
    );
    assert!(changes[0]["source"]["lsn"].as_u64().unwrap() > at.as_u64().unwrap());
    stop.cancel();
    task.await.unwrap().unwrap();

    // Started again, the slot sends every transaction since the snapshot again: none is
    // appended twice, and the copy is not made again.
    pg.sql("UPDATE orders SET qty = 0 WHERE id = 101;");
    let (stop, task) = start(reader(), false);
    until("the change made while stopped", || {
        records(&orders).len() == 107
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(records(&orders).len(), 107);
    assert_eq!(records(&orders)[106]["after"]["qty"], 0);
    let lag = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) \
               FROM pg_replication_slots WHERE slot_name = 'sluice_test'";
    assert!(
        pg.value(lag).parse::<f64>().unwrap() > 0.0,
        "nothing taken, nothing acknowledged"
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    // Once the lake has taken everything, the slot is acknowledged, idle or not: the
    // heartbeats move it along as the database writes WAL (here, another table's).
    let (stop, task) = start(reader(), true);
    pg.sql("CREATE TABLE other (x int); INSERT INTO other SELECT generate_series(1, 10000);");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.value(lag).parse::<f64>().unwrap() > 1024.0 {
        assert!(
            Instant::now() < deadline,
            "the slot still holds {} bytes of WAL",
            pg.value(lag)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(records(&orders).len(), 107, "nothing more in the log");
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_s_tables_are_declared_from_the_catalog_and_checked() {
    use sluice_ingest::postgres::{TableError, describe};
    use sluice_sql::Statement;

    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    pg.sql(
        "CREATE SCHEMA sales; \
         CREATE TABLE sales.orders (tenant text, id bigint, total numeric(12, 2) NOT NULL, \
         at timestamp, doc jsonb, PRIMARY KEY (tenant, id)); \
         CREATE TABLE logs (line text); CREATE TABLE hidden (id int PRIMARY KEY); \
         CREATE TABLE quiet (id int PRIMARY KEY); ALTER TABLE quiet REPLICA IDENTITY NOTHING; \
         CREATE PUBLICATION p FOR TABLE sales.orders, logs, quiet;",
    );
    let create = |tables: &str| {
        let sql = format!(
            "CREATE SOURCE s FROM POSTGRES '{}' PUBLICATION 'p' TABLES ({tables})",
            pg.url()
        );
        match sluice_sql::parse(&sql).unwrap().remove(0) {
            Statement::CreateSource(c) => c.definition,
            other => panic!("{other:?}"),
        }
    };
    let url = pg.url();
    let describe_in = move |source: sluice_sql::PostgresSource| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = pg_walstream::PgReplicationConnection::connect(&url).unwrap();
            describe(&mut connection, &source)
        })
    };
    let described = describe_in(create("sales.orders")).await.unwrap().unwrap();
    let orders = &described[0];
    assert_eq!(orders.table.name, "sales_orders");
    let d = &orders.definition;
    assert_eq!(d.primary_key, ["tenant", "id"]);
    let types: Vec<(String, ColumnType, bool)> = (d.columns.iter())
        .map(|c| (c.name.clone(), c.data_type, c.nullable))
        .collect();
    assert_eq!(
        types,
        [
            ("tenant".to_string(), ColumnType::Text, false),
            ("id".to_string(), ColumnType::BigInt, false),
            (
                "total".to_string(),
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2
                },
                false
            ),
            ("at".to_string(), ColumnType::Timestamp, true),
            ("doc".to_string(), ColumnType::Json, true),
        ]
    );
    for (tables, problem) in [
        ("logs", "no primary key"),
        ("quiet", "its replica identity is NOTHING"),
        ("hidden", "not in publication 'p'"),
        ("missing", "no such table"),
    ] {
        match describe_in(create(tables)).await.unwrap() {
            Err(TableError::Unfit { problem: got, .. }) => {
                assert!(got.contains(problem), "{tables}: {got}")
            }
            other => panic!("{tables}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_is_created_read_and_dropped_with_its_slot() {
    use sluice_ingest::postgres::{SourceError, Sources};
    use sluice_sql::Statement;

    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    pg.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, status text); \
         INSERT INTO orders VALUES (1, 'new'), (2, 'new'); \
         CREATE TABLE customers (id int PRIMARY KEY, name text); \
         CREATE PUBLICATION sluice FOR TABLE orders, customers;",
    );
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let sources = Sources::new(
        Arc::new(Directory(dir.path().join("sources"))),
        log.clone(),
        Arc::new(Lake::default()),
    );
    let create = |sql: &str| match sluice_sql::parse(sql).unwrap().remove(0) {
        Statement::CreateSource(c) => c,
        other => panic!("{other:?}"),
    };
    let sql = format!(
        "CREATE SOURCE shop FROM POSTGRES '{}' PUBLICATION 'sluice' TABLES (orders, customers)",
        pg.url()
    );
    // A name the lake's tables take is refused, and nothing is made.
    let refused = sources
        .create_source(create(&sql), |t| {
            (t == "customers_changes").then(|| "a table has it".into())
        })
        .await;
    assert!(
        matches!(refused, Err(SourceError::NameTaken { .. })),
        "{refused:?}"
    );
    assert!(log.streams().is_empty());

    sources.create_source(create(&sql), |_| None).await.unwrap();
    let orders = log.stream("orders").unwrap();
    let definition = sluice_sql::StreamDefinition::from_log(&orders.meta().definition);
    assert_eq!(definition.primary_key, ["id"]);
    assert_eq!(definition.format, sluice_sql::Format::Debezium);
    until("the snapshot of orders", || records(&orders).len() == 3).await;
    pg.sql("INSERT INTO customers VALUES (7, 'Ann');");
    let customers = log.stream("customers").unwrap();
    until("the insert into customers", || {
        records(&customers).len() == 2
    })
    .await;
    assert_eq!(records(&customers)[1]["after"]["name"], "Ann");
    // The doors refuse the streams' records.
    let mut batch = orders.batches();
    batch.push(0, b"", b"{}").unwrap();
    assert!(orders.append(batch).await.is_err());
    let shown = sources.list().await;
    assert_eq!(
        (shown[0].table.as_str(), shown[0].state, shown[0].behind),
        ("public.orders", "reading", 3),
        "nothing taken by the lake: every record behind"
    );
    // Only DROP SOURCE drops its streams.
    let refused = log.drop_stream("orders").unwrap_err().to_string();
    assert!(
        refused.contains("table public.orders of PostgreSQL source 'shop'"),
        "{refused}"
    );

    let dropped = sources.drop_source("shop", false).await.unwrap();
    assert_eq!(
        dropped,
        [
            "replication slot sluice_shop",
            "stream orders",
            "stream customers"
        ]
    );
    assert_eq!(pg.value("SELECT count(*) FROM pg_replication_slots"), "0");
    assert!(log.streams().is_empty());
    assert!(matches!(
        sources.drop_source("shop", false).await,
        Err(SourceError::NotFound(_))
    ));
    assert!(sources.drop_source("shop", true).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_is_taken_other_changes_stop_their_table_and_a_slot_gone_the_reader() {
    use sluice_ingest::postgres::ReaderError;

    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    pg.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'); \
         CREATE TABLE u (id int PRIMARY KEY, w text); INSERT INTO u VALUES (1, 'a'); \
         CREATE PUBLICATION p FOR TABLE t, u;",
    );
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let (t, u) = (stream(&log, "t"), stream(&log, "u"));
    // As a source makes them: the stream's columns (here, the table's two and those added).
    let out = |stream: &Arc<Stream>, column: &str| {
        let added = sluice_sql::StreamDefinition::from_log(&stream.meta().definition).columns;
        let mut columns = vec![
            ("id".into(), ColumnType::Int),
            (column.into(), ColumnType::Text),
        ];
        columns.extend(added.into_iter().map(|c| (c.name, c.data_type)));
        TableOut {
            stream: stream.clone(),
            columns,
        }
    };
    let shelf = kept_source(dir.path()).await;
    let reader = || {
        let tables = HashMap::from([
            ("public.t".to_string(), out(&t, "v")),
            ("public.u".to_string(), out(&u, "w")),
        ]);
        reader_of(
            &pg,
            ("s", "p"),
            tables,
            &shelf,
            &log,
            Duration::from_secs(1),
        )
    };
    let lake = Arc::new(Lake::default());
    let (stop, run) = spawn(reader(), lake.clone());
    until("the snapshot", || {
        records(&t).len() == 2 && records(&u).len() == 2
    })
    .await;

    // A nullable column without a default: the stream has it, its pipeline was started again
    // before the first change that has it was appended.
    pg.sql("INSERT INTO t VALUES (9, 'before');");
    pg.sql("ALTER TABLE t ADD COLUMN extra text; INSERT INTO t VALUES (2, 'b', 'x');");
    until("the insert with the new column", || records(&t).len() == 4).await;
    assert_eq!(records(&t)[3]["after"]["extra"], "x");
    let definition = sluice_sql::StreamDefinition::from_log(&t.meta().definition);
    let added = definition.columns.last().unwrap();
    assert_eq!(
        (added.name.as_str(), added.data_type, added.nullable),
        ("extra", ColumnType::Text, true)
    );
    assert_eq!(*lake.reopened.lock().unwrap(), ["t"]);

    // Started again (nothing acknowledged), PostgreSQL sends the transactions from before the
    // column was added as the table was then: t is read on, and nothing is appended twice.
    stop.cancel();
    run.await.unwrap().unwrap();
    let second = reader();
    let stopped = second.stopped.clone();
    let (stop, run) = spawn(second, lake.clone());
    pg.sql("INSERT INTO t VALUES (10, 'again', 'y');");
    until("the insert after the restart", || records(&t).len() == 5).await;
    assert!(stopped.lock().unwrap().is_empty());

    // A column with a default (the rows so far hold it, and no change says so) stops t, after
    // everything before; u goes on.
    pg.sql(
        "BEGIN; INSERT INTO t VALUES (3, 'c', 'y'); ALTER TABLE t ADD COLUMN d int DEFAULT 7; \
         INSERT INTO t VALUES (4, 'd', 'z'); COMMIT; INSERT INTO u VALUES (2, 'b');",
    );
    until("u's insert", || records(&u).len() == 3).await;
    until("t stopped", || {
        stopped.lock().unwrap().contains_key("public.t")
    })
    .await;
    assert_eq!(
        records(&t).len(),
        6,
        "t's insert before the change, in its transaction, not the one after"
    );
    let reason = stopped.lock().unwrap()["public.t"].clone();
    assert!(
        reason.contains("column d added, NOT NULL or with a default now"),
        "{reason}"
    );

    // A type changed stops u too; the reader reads on.
    pg.sql("ALTER TABLE u ALTER COLUMN w TYPE int USING 0; INSERT INTO u VALUES (3, 5);");
    until("u stopped", || {
        stopped.lock().unwrap().contains_key("public.u")
    })
    .await;
    assert!(stopped.lock().unwrap()["public.u"].contains("column w is INT, was TEXT"));
    assert_eq!(records(&u).len(), 3);
    assert!(!run.is_finished());
    stop.cancel();
    run.await.unwrap().unwrap();

    // Started again, the stopped tables stay stopped.
    let again = reader();
    let kept = again.stopped.clone();
    let (stop, run) = spawn(again, lake.clone());
    pg.sql("INSERT INTO t VALUES (5, 'e', 'w', 1); INSERT INTO u VALUES (4, 6);");
    until("the stopped tables read back", || {
        kept.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((records(&t).len(), records(&u).len()), (6, 3));
    stop.cancel();
    run.await.unwrap().unwrap();

    pg.sql("SELECT pg_drop_replication_slot('s');");
    match reader().run(lake, &CancellationToken::new(), || {}).await {
        Err(ReaderError::SlotGone(slot)) => assert_eq!(slot, "s"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_sluice_made_without_a_finished_copy_is_made_again_and_another_s_stops_the_source() {
    use sluice_ingest::postgres::ReaderError;

    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    pg.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, status text); \
         INSERT INTO orders VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
         CREATE PUBLICATION sluice FOR TABLE orders;",
    );
    pg.sql("SELECT pg_create_logical_replication_slot('sluice_test', 'pgoutput');");
    let log = Arc::new(Log::open(dir.path().join("log"), LogConfig::default()).unwrap());
    let orders = stream(&log, "orders");
    let shelf = kept_source(dir.path()).await;
    let reader = || {
        let tables = HashMap::from([(
            "public.orders".to_string(),
            TableOut {
                stream: orders.clone(),
                columns: vec![
                    ("id".to_string(), ColumnType::Int),
                    ("status".to_string(), ColumnType::Text),
                ],
            },
        )]);
        reader_of(
            &pg,
            ("sluice_test", "sluice"),
            tables,
            &shelf,
            &log,
            Duration::from_secs(10),
        )
    };
    let lake = Arc::new(Lake::default());
    let slots = || pg.value("SELECT count(*) FROM pg_replication_slots");
    // A slot of the name that Sluice did not make is somebody else's: the source stops.
    match reader()
        .run(lake.clone(), &CancellationToken::new(), || {})
        .await
    {
        Err(ReaderError::SlotExists(slot)) => assert_eq!(slot, "sluice_test"),
        other => panic!("{other:?}"),
    }
    assert_eq!(slots(), "1");
    // One Sluice made, with no finished copy and nobody copying: a copy cut short. It is
    // dropped, then made anew and the tables copied.
    let made = b"sluice_test".to_vec();
    (shelf.put("test", Kept::SlotMade, made, false).await).unwrap();
    match reader()
        .run(lake.clone(), &CancellationToken::new(), || {})
        .await
    {
        Err(ReaderError::CopyCut(slot)) => assert_eq!(slot, "sluice_test"),
        other => panic!("{other:?}"),
    }
    assert_eq!(slots(), "0");
    let (stop, run) = spawn(reader(), lake);
    until("the copy", || records(&orders).len() == 4).await;
    assert!(
        shelf
            .get("test", Kept::SnapshotDone)
            .await
            .unwrap()
            .is_some()
    );
    stop.cancel();
    run.await.unwrap().unwrap();
}
