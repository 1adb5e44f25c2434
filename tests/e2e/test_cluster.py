"""Cluster mode through the real binary: several `sluice serve --cluster` workers, one lake (a
local folder, where the concurrency of their commits is the point; and an S3 prefix of moto's
server, whose conditional puts `test_s3` shows refuse a second writer), one Kafka-protocol broker (Tansu 0.6.0: its consumer groups work
for cooperative-sticky rebalancing, not for static membership, which none of these tests uses).
The workers share the catalog in the lake and split each stream's partitions through a consumer
group; every record the broker acknowledged lands once while workers are killed with -9,
restarted, and join. A PostgreSQL source's slot is read by one worker at a time, taken over by
another when that one is killed."""

from __future__ import annotations

import collections
import functools
import json
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable

import conftest
import test_firehose
from test_kafka import TICK_COLUMNS, Produced, kafka_stream, produce_ticks
from test_postgres_source import SCHEMA, Workload, converge, create_source, mirror, same
from test_postgres_source import postgres  # noqa: F401 (the fixture: a PostgreSQL server of the test's own)
from test_views import SENTINELS, START, TICKS_1M, duckdb_ticks_1m, stamp, tick

wait_for = functools.partial(conftest.wait_for, timeout=120.0)
PARTITIONS = 6


class Workers:
    """Workers of one cluster, started on demand, all on one lake (`--lake lake`, with `env`)."""

    def __init__(self, request, tmp_path, sluice_bin, lake: str, env: dict[str, str], cluster="c1", kafka=None):
        self.request, self.tmp_path, self.sluice_bin = request, tmp_path, sluice_bin
        self.lake, self.env, self.cluster, self.kafka = lake, env, cluster, kafka
        self.started: list[conftest.Server] = []

    def start(self, name: str) -> conftest.Server:
        srv = conftest.Server(self.tmp_path / f"logs-{name}", self.sluice_bin)
        srv.extra_args = ["--cluster", self.cluster, "--worker", name, "--lake", self.lake]
        if self.kafka is not None:
            srv.extra_args += ["--kafka", self.kafka]
        srv.env = self.env
        node = self.request.node
        node._sluice_servers = getattr(node, "_sluice_servers", []) + [srv]
        self.started.append(srv)
        return srv.start(self.tmp_path / f"data-{name}")

    def stop(self) -> None:
        for srv in self.started:
            srv.stop()


def started_workers(request, tmp_path, sluice_bin, tansu, lake: str, env: dict, **cluster):
    """Workers of one cluster on `lake`, stopped after the test (a fixture's body)."""
    request.node._sluice_services = getattr(request.node, "_sluice_services", []) + [("tansu", tansu)]
    workers = Workers(request, tmp_path, sluice_bin, lake, env, **cluster)
    try:
        yield workers
    finally:
        workers.stop()


@pytest.fixture
def workers(request, tmp_path, sluice_bin, tansu):
    """Workers of one cluster on a lake in a local folder."""
    yield from started_workers(request, tmp_path, sluice_bin, tansu, str(tmp_path / "lake"), {})


@pytest.fixture
def topic_workers(request, tmp_path, sluice_bin, tansu, topic):
    """Workers of a cluster of its own name on a lake in a local folder, with the broker as the
    cluster's (`--kafka`): its streams get topics of their own."""
    yield from started_workers(request, tmp_path, sluice_bin, tansu, str(tmp_path / "lake"), {},
                               cluster=topic, kafka=tansu.brokers)


@pytest.fixture
def s3_workers(request, tmp_path, sluice_bin, tansu, s3_lake):
    """Workers of one cluster on a lake in an S3 prefix of moto's server."""
    yield from started_workers(request, tmp_path, sluice_bin, tansu, s3_lake.url, s3_lake.s3.env())


def streams_of(server) -> set[str]:
    _, _, body = server.get("/v1/streams")
    return {s["name"] for s in body["streams"]}


def views_of(server) -> set[str]:
    _, _, body = server.get("/v1/views")
    return {v["name"] for v in body["views"]}


def runners(server) -> dict[str, list[str]]:
    """Per view, the live workers whose documents say they run it."""
    _, _, body = server.get("/v1/cluster")
    running = collections.defaultdict(list)
    for worker in body["workers"]:
        for view in worker.get("views", []) if not worker["gone"] else []:
            running[view].append(worker["worker"])
    return running


# Grouped by every ticker of a minute together (the topic is keyed by ticker), and by country
# (clicks have no key): each group's rows come from every partition.
TICKS_PER_MINUTE = (
    "CREATE MATERIALIZED VIEW ticks_per_minute AS SELECT window_start, count(*) AS trades, "
    "sum(volume) AS volume, max(price) AS high FROM TUMBLE(ticks, ts, INTERVAL '1 minute') "
    "GROUP BY window_start, window_end"
)
CLICKS_BY_COUNTRY = (
    "CREATE MATERIALIZED VIEW clicks_by_country AS SELECT country, count(*) AS clicks, "
    "count(DISTINCT user_id) AS users FROM clicks GROUP BY country"
)
# Without state: each partition's holder runs it over its own partitions.
BIG_TRADES = (
    "CREATE MATERIALIZED VIEW big_trades AS SELECT ticker, price, volume, ts, _shard, _seq FROM ticks "
    "WHERE volume >= 5000"
)
VIEWS = {"ticks_1m", "ticks_per_minute", "clicks_by_country"}


def held(server) -> dict[str, set[int]]:
    """Per live worker of the cluster, the partitions of `ticks` its document says it holds."""
    status, _, body = server.get("/v1/cluster")
    assert status == 200, body
    return {
        w["worker"]: {int(p) for s in w["streams"] if s["stream"] == "ticks" for p in s["partition_lag"]}
        for w in body["workers"]
        if not w["gone"]
    }


def test_workers_share_a_topic_and_write_every_record_once_through_kill_9_and_a_new_worker(
    workers, tansu, topic
):
    w1, w2, w3 = workers.start("w1"), workers.start("w2"), workers.start("w3")
    tansu.create_topic(topic, PARTITIONS)
    w1.sql(kafka_stream("ticks", tansu, topic, TICK_COLUMNS, ", event_time = 'ts'"))
    # A CREATE on one worker reaches the others within seconds.
    for worker in (w2, w3):
        wait_for(lambda: "ticks" in streams_of(worker), "the stream on every worker", timeout=10)

    producer = tansu.producer()
    produced = Produced()
    total = 30_000
    stop = threading.Event()
    thread = threading.Thread(target=produce_ticks, args=(producer, topic, range(total), produced, stop), daemon=True)
    thread.start()
    time.sleep(2)
    # One worker is killed and restarted twice while records arrive, and a fourth joins.
    for _ in range(2):
        w2.kill9()
        time.sleep(1)
        w2.start()
        time.sleep(3)
    w4 = workers.start("w4")
    thread.join(timeout=300)
    assert not thread.is_alive() and not produced.failures, produced.failures
    assert len(produced.records) == total

    def raw_complete():
        rows = DeltaTable(f"{workers.lake}/ticks").to_pyarrow_table(columns=["_shard", "_seq"]).to_pylist()
        return rows if len(rows) >= total else None

    raw = wait_for(raw_complete, "the raw table to hold the whole topic")
    positions = [(r["_shard"], r["_seq"]) for r in raw]
    assert len(positions) == len(set(positions)), "a (partition, offset) appears twice"
    assert set(positions) == set(produced.records)

    # Any worker answers queries over the shared tables, with the same rows.
    for worker in (w1, w2, w3, w4):
        wait_for(lambda: worker.sql("SELECT count(*) AS n FROM ticks")["rows"] == [[total]], "the count on a worker")

    # The cluster's status: every worker, each partition held by one of them.
    def shared():
        shares = held(w3)
        partitions = [p for ps in shares.values() for p in ps]
        return shares if set(shares) == {"w1", "w2", "w3", "w4"} and sorted(partitions) == list(range(PARTITIONS)) else None

    wait_for(shared, "four workers holding the six partitions between them")

    # What a cluster cannot do yet is refused, clearly.
    status, body = w3.sql_status("CREATE STREAM own (a TEXT)")
    assert status >= 400 and "Kafka topic" in json.dumps(body), body
    status, body = w1.sql_status(kafka_stream("ticks", tansu, topic, TICK_COLUMNS))
    assert status >= 400 and "exists" in json.dumps(body), body

    # A DROP on one worker reaches all, and the tables go.
    w4.sql("DROP STREAM ticks")
    for worker in (w1, w2, w3):
        wait_for(lambda: "ticks" not in streams_of(worker), "the stream gone from every worker", timeout=10)
    wait_for(lambda: not (workers.tmp_path / "lake" / "ticks").exists(), "the stream's table deleted")


def test_workers_on_an_s3_lake_write_every_record_once_through_kill_9(s3_workers, s3_lake, tansu, topic, tmp_path):
    w1, w2 = s3_workers.start("w1"), s3_workers.start("w2")
    tansu.create_topic(topic, 4)
    w2.sql(kafka_stream("ticks", tansu, topic, TICK_COLUMNS, ", event_time = 'ts'"))
    wait_for(lambda: "ticks" in streams_of(w1), "the stream on both workers", timeout=10)
    w1.sql(TICKS_1M)
    (runner,) = wait_for(lambda: runners(w2).get("ticks_1m"), "a worker running ticks_1m", timeout=15)
    producer = tansu.producer()
    produced = Produced()
    total = 10_000
    thread = threading.Thread(target=produce_ticks, args=(producer, topic, range(total), produced), daemon=True)
    thread.start()
    time.sleep(2)
    # The worker running the view is killed: the other takes it over, its state from S3.
    killed = w1 if runner == "w1" else w2
    killed.kill9()
    thread.join(timeout=300)
    assert not thread.is_alive() and not produced.failures, produced.failures
    for i, ticker in enumerate(SENTINELS):
        value = json.dumps({"ticker": ticker, "price": 1.0, "volume": 1, "ts": stamp(START.replace(year=2027))})
        producer.produce(topic, value=value.encode(), partition=i % 4, on_delivery=produced.delivered)
    producer.flush(30)
    killed.start()
    options = s3_lake.s3.storage_options()

    def raw_complete():
        uri = s3_lake.table_url("ticks")
        table = DeltaTable(uri, storage_options=options).to_pyarrow_table(columns=["_shard", "_seq"])
        rows = table.to_pylist()
        return rows if len(rows) >= len(produced.records) else None

    raw = wait_for(raw_complete, "the raw table on S3 to hold the whole topic")
    positions = [(r["_shard"], r["_seq"]) for r in raw]
    assert len(positions) == len(set(positions)), "a (partition, offset) appears twice"
    assert set(positions) == set(produced.records)
    for worker in (w1, w2):
        wait_for(lambda: worker.sql("SELECT count(*) AS n FROM ticks")["rows"] == [[len(produced.records)]],
                 "the count on a worker")

    # The view equals DuckDB's windows over what was produced.
    events = tmp_path / "produced.ndjson"
    events.write_bytes(b"\n".join(produced.records.values()) + b"\n")
    expected = duckdb_ticks_1m(events)

    def windows():
        uri = s3_lake.table_url("ticks_1m")
        rows = DeltaTable(uri, storage_options=options).to_pyarrow_table().to_pylist()
        return rows if len(rows) >= len(expected) else None

    rows = wait_for(windows, "ticks_1m on S3 to hold every window")
    got = {(r["ticker"], r["window_start"]): (r["trades"], r["volume"], r["min_price"], r["max_price"], r["close"])
           for r in rows}
    assert len(got) == len(rows), "a window appears twice"
    assert got == expected
    # The catalog, the views, their state and the workers' documents are in the lake.
    keys = s3_lake.keys(".sluice")
    assert ".sluice/cluster-c1-streams/ticks.json" in keys, keys
    assert ".sluice/cluster-c1-views/ticks_1m.json" in keys, keys
    assert any(k.startswith(".sluice/cluster-c1-states/ticks_1m-") and k.endswith(".arrow") for k in keys), keys
    assert {".sluice/cluster-c1-workers/w1.json", ".sluice/cluster-c1-workers/w2.json"} <= set(keys), keys


def test_a_worker_refuses_to_start_without_a_shared_lake_or_with_records_of_its_own(tmp_path, sluice_bin):
    srv = conftest.Server(tmp_path / "logs", sluice_bin)
    srv.extra_args = ["--cluster", "c1"]
    with pytest.raises(conftest.ServerStartError):
        srv.start(tmp_path / "data")
    assert "share one lake" in srv.stderr_path.read_text()

    own = conftest.Server(tmp_path / "logs-own", sluice_bin)
    own.start(tmp_path / "data-own")
    own.sql("CREATE STREAM clicks (a TEXT)")
    own.stop()
    own.extra_args = ["--cluster", "c1", "--lake", str(tmp_path / "lake")]
    with pytest.raises(conftest.ServerStartError):
        own.start()
    assert "whose records are its own" in own.stderr_path.read_text()


def lines_of(sluice_bin, workload: str, events: int) -> list[bytes]:
    out = subprocess.run([str(sluice_bin), "gen", workload, "--events", str(events), "--seed", "11"],
                         check=True, capture_output=True, timeout=120).stdout
    return out.splitlines()


class Doors:
    """Sends requests of records to the workers' HTTP doors in turn; what a door acknowledged is
    acknowledged, what failed (a worker killed under it) is unknown: it may or may not land, and
    is not sent again."""

    def __init__(self, workers: list, pause: float):
        self.workers, self.turn, self.pause = workers, 0, pause
        self.acked: dict[str, list[bytes]] = {}
        self.unknown: dict[str, list[bytes]] = {}

    def send(self, stream: str, lines: list[bytes], key: str | None = None, per_request: int = 400):
        for at in range(0, len(lines), per_request):
            batch = lines[at:at + per_request]
            worker = self.workers[self.turn % len(self.workers)]
            self.turn += 1
            try:
                status, _, body = worker.ingest(stream, b"\n".join(batch) + b"\n", key=key)
            except OSError:
                status, body = None, "connection failed"
            answered = self.acked if status == 200 else self.unknown
            answered.setdefault(stream, []).extend(batch)
            if status not in (200, None) and worker.running:
                assert status >= 500, (status, body)
            time.sleep(self.pause)


def lake_rows(workers, name: str, least: int, columns: list[str] | None = None):
    """The rows (of `columns`, or all) of the lake's table `name` once it holds at least `least`;
    none before."""
    try:
        rows = DeltaTable(f"{workers.lake}/{name}").to_pyarrow_table(columns=columns).to_pylist()
    except Exception:  # not yet created
        return None
    return rows if len(rows) >= least else None


def multiset(rows) -> collections.Counter:
    return collections.Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)


def test_every_worker_s_doors_produce_into_its_stream_s_own_topic_and_each_acknowledged_record_lands_once(
    topic_workers, tansu, sluice_bin, tmp_path
):
    workers = topic_workers
    w1, w2, w3 = workers.start("w1"), workers.start("w2"), workers.start("w3")
    # Declared without a connector: each stream gets a topic of its own, a partition a shard.
    w1.sql("CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL) "
           "WITH (shards = 4, event_time = 'ts')")
    w2.sql("CREATE STREAM clicks (event_id TEXT, user_id TEXT, session_id TEXT, event_type TEXT, page TEXT, "
           "device TEXT, country TEXT, ts TIMESTAMP NOT NULL) WITH (shards = 3, event_time = 'ts')")
    metadata = tansu.admin().list_topics(timeout=10).topics
    assert len(metadata[f"{workers.cluster}.ticks"].partitions) == 4
    assert len(metadata[f"{workers.cluster}.clicks"].partitions) == 3
    for worker in (w1, w2, w3):
        wait_for(lambda: {"ticks", "clicks"} <= streams_of(worker), "the streams on every worker", timeout=10)

    # Views are the cluster's: created on one worker, on every worker within seconds, each run
    # by every worker over the partitions it holds (an aggregating view's pieces finished by
    # the holder of partition 0).
    w3.sql(TICKS_1M)
    w3.sql(TICKS_PER_MINUTE)
    w1.sql(CLICKS_BY_COUNTRY)
    w2.sql(BIG_TRADES)
    for worker in (w1, w2, w3):
        wait_for(lambda: VIEWS | {"big_trades"} <= views_of(worker), "the views on every worker", timeout=10)
    # Every worker holds partitions of both streams: each runs every view.
    wait_for(lambda: VIEWS | {"big_trades"} <= {v for v, ws in runners(w2).items() if len(ws) == 3},
             "each view run by every worker", timeout=15)

    def states():
        got = sorted(v["state"] for w in (w1, w2, w3) for v in w.get("/v1/views")[2]["views"] if v["name"] == "ticks_1m")
        return got if got == ["running"] * 3 else None

    wait_for(states, "ticks_1m running on every worker", timeout=15)
    # A view of a view is not run in a cluster: refused, clearly.
    status, body = w2.sql_status("CREATE MATERIALIZED VIEW m AS SELECT ticker FROM ticks_1m")
    assert status >= 400 and "cluster" in json.dumps(body), body
    assert "m" not in views_of(w1)

    # W1 ticks 200 ms of event time apart (80 minutes of windows), W2 clicks as generated.
    ticks = [json.dumps(tick(n)).encode() for n in range(24_000)]
    clicks = lines_of(sluice_bin, "clicks", 12_000)
    # Records arrive through every door for half a minute; once the workers commit, one of
    # them is killed and restarted twice, and a fourth joins.
    doors = Doors([w1, w2, w3], pause=0.3)
    sending = threading.Thread(target=lambda: [
        (doors.send("ticks", ticks[at:at + 2000], key="ticker"), doors.send("clicks", clicks[at // 2:at // 2 + 1000]))
        for at in range(0, len(ticks), 2000)
    ], daemon=True)
    sending.start()
    wait_for(lambda: (workers.tmp_path / "lake" / "ticks" / "_delta_log" / "00000000000000000002.json").exists(),
             "the workers committing")
    # The worker killed is the one finishing the views of ticks (the holder of its partition
    # 0): the finishing moves with the partition, and the views come back exact.
    for _ in range(2):
        time.sleep(1.5)
        (finisher,) = wait_for(lambda: [w for w, ps in held(w1).items() if 0 in ps] or None,
                               "a worker holding partition 0 of ticks")
        killed = next(w for w in (w1, w2, w3) if w.extra_args[3] == finisher)
        killed.kill9()
        time.sleep(1)
        killed.start()
    w4 = workers.start("w4")
    doors.workers.append(w4)
    sending.join(timeout=300)
    assert not sending.is_alive()
    # Far past every real event, on every partition: the watermark passes every real window.
    doors.send("ticks", [json.dumps({"ticker": t, "price": 1.0, "volume": 1, "ts": stamp(START.replace(year=2027))})
                         .encode() for t in SENTINELS * 2], key="ticker", per_request=64)
    acked_ticks, acked_clicks = doors.acked["ticks"], doors.acked["clicks"]
    assert len(acked_ticks) >= 20_000 and len(acked_clicks) >= 10_000, "most requests were acknowledged"

    # Every acknowledged tick once, and nothing but what was sent: the same rows as DuckDB reads
    # from the acknowledged records (and, of the unknown ones, those that landed).
    (tmp_path / "acked-ticks.ndjson").write_bytes(b"\n".join(acked_ticks) + b"\n")
    expected = duckdb.sql(
        f"SELECT ticker, price, volume, ts FROM read_json('{tmp_path / 'acked-ticks.ndjson'}', "
        "columns = {ticker: 'VARCHAR', price: 'DOUBLE', volume: 'BIGINT', ts: 'VARCHAR'})"
    ).fetchall()
    expected = multiset({"ticker": t, "price": p, "volume": v, "ts": ts} for t, p, v, ts in expected)
    raw = wait_for(lambda: lake_rows(workers, "ticks", len(acked_ticks), ["ticker", "price", "volume", "ts", "_shard", "_seq"]),
                   "the raw table to hold every acknowledged tick")
    landed = multiset({"ticker": r["ticker"], "price": r["price"], "volume": r["volume"],
                       "ts": r["ts"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"} for r in raw)
    assert not expected - landed, "an acknowledged tick is missing"
    sent = multiset(json.loads(line) for line in acked_ticks + doors.unknown.get("ticks", []))
    assert not landed - sent, "a tick landed twice, or one never sent"
    assert len({(r["_shard"], r["_seq"]) for r in raw}) == len(raw)

    # The views equal DuckDB's recomputation from the ticks and clicks that landed (every
    # acknowledged one, checked above), though the worker running them was killed twice.
    landed_ticks = tmp_path / "landed-ticks.ndjson"
    landed_ticks.write_text("".join(t + "\n" for t, n in landed.items() for _ in range(n)))
    expected = duckdb_ticks_1m(landed_ticks)
    windows = wait_for(lambda: lake_rows(workers, "ticks_1m", len(expected)), "every window of ticks_1m")
    got = {(r["ticker"], r["window_start"]): (r["trades"], r["volume"], r["min_price"], r["max_price"], r["close"])
           for r in windows}
    assert len(got) == len(windows), "a window appears twice"
    assert got == expected
    per_minute = duckdb.sql(
        f"SELECT time_bucket(INTERVAL 1 minute, ts), count(*), sum(volume), max(price) FROM read_json('{landed_ticks}', "
        "columns = {ticker: 'VARCHAR', price: 'DOUBLE', volume: 'BIGINT', ts: 'TIMESTAMP'}) "
        "WHERE ticker NOT LIKE 'ZZ%' GROUP BY ALL"
    ).fetchall()
    minutes = wait_for(lambda: lake_rows(workers, "ticks_per_minute", len(per_minute)), "every minute")
    assert sorted((r["window_start"].replace(tzinfo=None), r["trades"], r["volume"], r["high"]) for r in minutes) \
        == sorted(per_minute)
    for name in ("ticks_1m", "ticks_per_minute"):
        assert not lake_rows(workers, f"{name}_errors", 0), f"{name} called an event late"
    # The view run by several workers at once holds each big trade that landed once: the same
    # records as the raw table's, by partition and offset.
    big = {(r["_shard"], r["_seq"]) for r in raw if r["volume"] >= 5000}
    trades = wait_for(lambda: lake_rows(workers, "big_trades", len(big), ["_shard", "_seq", "volume"]),
                      "every big trade in big_trades")
    assert sorted((r["_shard"], r["_seq"]) for r in trades) == sorted(big)

    # Every acknowledged click once: good ones in the raw table, malformed ones in its errors.
    def good(line: bytes):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record["event_id"] if isinstance(record, dict) and record.get("ts", "").startswith("2026") else None

    acked_ids = [good(line) for line in acked_clicks]
    want = {i for i in acked_ids if i is not None}
    unknown_ids = {good(line) for line in doors.unknown.get("clicks", [])} - {None}
    rows = wait_for(lambda: lake_rows(workers, "clicks", len(want), ["event_id"]), "the raw table to hold every good click")
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a click landed twice"
    assert want <= set(ids) <= want | unknown_ids
    errors = wait_for(lambda: lake_rows(workers, "clicks_errors", acked_ids.count(None), ["raw"]),
                      "the errors table to hold every malformed click")
    assert len(errors) <= acked_ids.count(None) + len(doors.unknown.get("clicks", []))
    raw_clicks = DeltaTable(f"{workers.lake}/clicks").to_pyarrow_table(columns=["country", "user_id"])
    by_country = {c: (n, u) for c, n, u in duckdb.sql(
        "SELECT country, count(*), count(DISTINCT user_id) FROM raw_clicks GROUP BY ALL").fetchall()}

    def countries():
        rows = lake_rows(workers, "clicks_by_country", len(by_country))
        got = {r["country"]: (r["clicks"], r["users"]) for r in rows or []}
        return got if got == by_country else None

    wait_for(countries, "clicks_by_country to equal DuckDB's counts")

    # Every record taken, the lag the workers' metrics say, summed, is none: a worker that a
    # partition moved away from says it no longer lags there.
    def lag():
        prefix = 'sluice_pipeline_partition_lag_records{pipeline="ticks",'
        lines = [line for w in (w1, w2, w3, w4) for line in w.get("/metrics")[2].splitlines()
                 if line.startswith(prefix)]
        return lines if sum(float(line.rsplit(" ", 1)[1]) for line in lines) == 0 else None

    wait_for(lag, "no partition lag in the workers' metrics", timeout=30)

    # Any worker answers with the same count, and the same view rows.
    for worker in (w1, w2, w3, w4):
        wait_for(lambda: worker.sql("SELECT count(*) AS n FROM ticks")["rows"] == [[len(raw)]], "the count on a worker")
        answer = worker.sql("SELECT count(*), sum(trades) FROM ticks_1m WHERE ticker NOT LIKE 'ZZ%'")["rows"]
        assert answer == [[len(expected), sum(v[0] for v in expected.values())]], answer

    # Partitions that moved while records arrived for them (the killed worker's, and those the
    # group moved when it came back and when a fourth joined) say how long they went without a
    # commit: the failover, in the workers' documents and their metrics.
    def failovers():
        _, _, body = w3.get("/v1/cluster")
        moved = [s["failover_ms"] for w in body["workers"] for s in w["streams"] if s.get("failover_ms") is not None]
        return moved or None

    moved = wait_for(failovers, "a worker's document saying how long partitions went without a commit")
    assert all(0 <= ms < 120_000 for ms in moved), moved
    assert any("sluice_pipeline_failover_seconds_count" in str(w.get("/metrics")[2]) for w in (w1, w2, w3, w4))

    # A view dropped on one worker is gone from all, its tables too; then its stream can go.
    # Its topic is deleted with it, once every worker has closed its clients of it.
    # A topic of that name is someone's: a stream is not created over it unasked.
    w2.sql("DROP MATERIALIZED VIEW clicks_by_country")
    for worker in (w1, w3, w4):
        wait_for(lambda: "clicks_by_country" not in views_of(worker), "the view gone from every worker", timeout=10)
    assert not (workers.tmp_path / "lake" / "clicks_by_country").exists()
    # The worker that dropped the stream dies at once: the others delete the topic.
    w3.sql("DROP STREAM clicks")
    w3.kill9()
    wait_for(lambda: f"{workers.cluster}.clicks" not in tansu.topics(), "the dropped stream's own topic deleted")
    w3.start()
    time.sleep(2)
    assert all(worker.running for worker in (w1, w2, w3, w4))
    # A stream not created (another worker claimed the name a moment before, for a topic of
    # its own) leaves no topic of its own behind.
    tansu.create_topic(f"{workers.cluster}-theirs", 1)
    w1.sql(kafka_stream("theirs", tansu, f"{workers.cluster}-theirs", "a TEXT"))
    status, body = w2.sql_status("CREATE STREAM theirs (a TEXT)")
    assert status >= 400 and "exists" in json.dumps(body), body
    assert f"{workers.cluster}.theirs" not in tansu.topics()
    tansu.create_topic(f"{workers.cluster}.clicks", 2)
    status, body = w1.sql_status("CREATE STREAM clicks (event_id TEXT)")
    assert status >= 400 and "exists" in json.dumps(body) and "connector = 'kafka'" in json.dumps(body), body
    assert "clicks" not in streams_of(w1)


def test_the_kinesis_and_firehose_apis_create_a_cluster_s_streams_with_topics_of_their_own(topic_workers, tansu):
    workers = topic_workers
    w1, w2 = workers.start("w1"), workers.start("w2")
    w1.kinesis_client().create_stream(StreamName="orders", ShardCount=2)
    assert len(tansu.admin().list_topics(timeout=10).topics[f"{workers.cluster}.orders"].partitions) == 2
    wait_for(lambda: "orders" in streams_of(w2), "the stream on the other worker", timeout=10)
    # Either worker's Kinesis door produces into it.
    for worker, at in ((w1, 0), (w2, 100)):
        answer = worker.kinesis_client().put_records(StreamName="orders", Records=[
            {"Data": json.dumps({"n": n}).encode(), "PartitionKey": str(n)} for n in range(at, at + 100)])
        assert answer["FailedRecordCount"] == 0, answer
    firehose = test_firehose.client(w2)
    firehose.create_delivery_stream(DeliveryStreamName="events")
    assert f"{workers.cluster}.events" in tansu.topics()
    assert firehose.put_record_batch(DeliveryStreamName="events",
                                     Records=[{"Data": json.dumps({"e": e}).encode()} for e in range(10)])["FailedPutCount"] == 0
    for worker in (w1, w2):
        wait_for(lambda: worker.sql("SELECT count(*) FROM orders")["rows"] == [[200]], "every record in orders")
        wait_for(lambda: worker.sql("SELECT count(*) FROM events")["rows"] == [[10]], "every record in events")
    # Deleted through the API: the topic goes with the stream.
    w2.kinesis_client().delete_stream(StreamName="orders")
    wait_for(lambda: f"{workers.cluster}.orders" not in tansu.topics(), "the stream's topic deleted", timeout=60)
    assert w1.running and w2.running


class PacedWorkload(Workload):
    """The random DML of `Workload`, at a pace (some tens of transactions a second) that three
    workers of a debug build on two cores keep up with."""

    def step(self, c):
        super().step(c)
        time.sleep(0.01)


def source_rows(server) -> dict[str, list]:
    """The worker's SHOW SOURCES, a row (source, table, stream, slot, state, behind, last_error)
    by stream; none while it does not answer."""
    try:
        status, answer = server.sql_status("SHOW SOURCES")
    except OSError:
        return {}
    return {row[2]: row for row in answer["rows"]} if status == 200 else {}


def one_reading(servers: list):
    """The one worker of `servers` reading both tables of the source while each other stands
    by; none otherwise."""
    states = [(server, {stream: row[4] for stream, row in source_rows(server).items()}) for server in servers]
    reading = [server for server, state in states if state == {"orders": "reading", "customers": "reading"}]
    standing = [server for server, state in states if state == {"orders": "standby", "customers": "standby"}]
    return reading[0] if len(reading) == 1 and len(standing) == len(servers) - 1 else None


def worker_name(server) -> str:
    return server.extra_args[server.extra_args.index("--worker") + 1]


def slots(pg) -> int:
    return pg.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_shop'")


def test_a_postgres_source_is_read_by_one_worker_at_a_time_and_moves_on_kill_9(postgres, topic_workers, tansu):
    """A PostgreSQL source created on any worker is every worker's (kept in the lake), its
    tables' change streams topics of their own that the doors refuse; the one worker holding
    the slot reads while the others stand by, and when it is killed with -9 (twice, while DML
    runs) another takes the slot over: the mirrors equal the tables, no change twice in the
    history. A column added reaches every worker and the mirror; a column dropped stops its
    table, the other goes on; DROP SOURCE on
    another worker than the creator's drops the slot, the streams on every worker, and what
    the lake kept of the source."""
    workers = topic_workers
    with postgres.connect() as c:
        c.execute(SCHEMA)
        # Enough rows that the copy takes some seconds: its worker is killed in the middle.
        c.execute("INSERT INTO orders SELECT g, 'bulk', g, 1.00, repeat('x', 400), now() "
                  "FROM generate_series(200000, 319999) g")
    Workload(postgres, seed=7).run(steps=500)
    w1, w2, w3 = workers.start("w1"), workers.start("w2"), workers.start("w3")
    everyone = [w1, w2, w3]
    load = PacedWorkload(postgres, seed=8)
    load.start()

    # Created on w2, known to every worker within seconds, kept in the lake.
    create_source(w2, postgres)
    shelf = Path(workers.lake) / ".sluice" / f"cluster-{workers.cluster}-sources"
    assert (shelf / "shop.json").exists(), f"the source not kept in the lake: {sorted(shelf.parent.glob('*/*'))}"
    for worker in everyone:
        wait_for(lambda: set(source_rows(worker)) == {"orders", "customers"},
                 f"the source's tables in SHOW SOURCES on {worker_name(worker)}", timeout=15)
        assert {"orders", "customers"} <= streams_of(worker), f"the source's streams on {worker_name(worker)}"
    topics = tansu.admin().list_topics(timeout=10).topics
    for stream in ("orders", "customers"):
        topic = topics.get(f"{workers.cluster}.{stream}")
        assert topic is not None and len(topic.partitions) == 1, f"{stream}: no topic of its own, of one partition"

    # One worker holds the slot and reads; the others stand by, saying why.
    reader = wait_for(lambda: one_reading(everyone), "one worker reading the source, the others standing by",
                      timeout=20)
    for worker in everyone:
        if worker is not reader:
            for row in source_rows(worker).values():
                assert row[4] == "standby" and "another worker" in (row[6] or ""), \
                    f"{worker_name(worker)} does not say it stands by for the slot's reader: {row}"

    # The worker copying the tables is killed in the middle of the copy: the slot it made holds
    # no finished copy and nobody copies into it, so another worker drops it and copies again.
    assert not (shelf / "shop.done").exists(), "the copy ended before its worker could be killed: copy more rows"
    reader.kill9()
    others = [w for w in everyone if w is not reader]
    wait_for(lambda: one_reading(others), "another worker copying the tables again", timeout=30)
    reader.start()
    reader = wait_for(lambda: one_reading(everyone), "one worker reading again, the others standing by", timeout=30)

    # Only the source's reader appends to its streams: every worker's door refuses records.
    forged = json.dumps({"op": "c", "after": {"id": 99999, "status": "forged"}}).encode() + b"\n"
    for worker in everyone:
        status, _, answer = worker.ingest("orders", forged)
        assert status is not None and 400 <= status < 500 and "PostgreSQL source 'shop'" in str(answer), \
            f"{worker_name(worker)}'s door took records of the source's stream: {status} {answer}"

    # Once the snapshot is copied, the reading worker is killed with -9, twice, while DML runs:
    # another takes the slot over, and the one restarted stands by.
    wait_for(lambda: (shelf / "shop.done").exists(), "the snapshot copied (shop.done in the lake)", timeout=60)
    for _ in range(2):
        time.sleep(3)
        killed = reader
        killed.kill9()
        others = [w for w in everyone if w is not killed]
        wait_for(lambda: one_reading(others),
                             f"a worker other than {worker_name(killed)} taking the slot over", timeout=30)
        killed.start()
        reader = wait_for(lambda: one_reading(everyone),
                          f"{worker_name(killed)} restarted, one worker reading and the others standing by", timeout=30)
    load.stop()
    assert not load.thread.is_alive(), "the workload did not stop"
    assert load.done >= 100, f"only {load.done} transactions ran during the failovers"

    # Every change once: the mirrors equal the tables on any worker, the history holds no
    # change twice, and nothing of the door's came in.
    converge(w3, postgres, "the mirrors on w3 to equal the tables")
    converge(w1, postgres, "the mirrors on w1 to equal the tables", timeout=30)
    for table in ("orders", "customers"):
        n, distinct = w1.sql(f"SELECT count(*), count(DISTINCT _event_id) FROM {table}_changes "
                             "WHERE _op <> 'r'")["rows"][0]
        assert n >= 1, f"no change in the history {table}_changes"
        assert n == distinct, f"a change twice in the history {table}_changes: {n} changes, {distinct} distinct"
    orders = mirror(w1, "orders", "id")
    assert orders is not None and 99999 not in orders, "the refused record reached the mirror"

    # A nullable column added reaches every worker: the worker holding the stream's partition
    # (maybe not the reader's) takes it before it commits again, and its values land in the
    # mirror. A change that does not fit (a column dropped) stops its table, saying why; the
    # other goes on.
    with postgres.connect() as c:
        c.execute("ALTER TABLE customers ADD COLUMN x text")
        c.execute("INSERT INTO customers VALUES (5000, 'late', true, 'x')")
        c.execute("INSERT INTO orders (id, status) VALUES (5000, 'after')")
    converge(w2, postgres, "the added column's values in the mirrors", timeout=60)
    customers = mirror(w3, "customers", "id")
    assert customers is not None and customers[5000]["x"] == "x", "the added column's value is not in the mirror"
    with postgres.connect() as c:
        c.execute("ALTER TABLE customers DROP COLUMN vip")
        c.execute("INSERT INTO customers VALUES (5001, 'gone', 'y')")
        c.execute("INSERT INTO orders (id, status) VALUES (5001, 'after')")

    def customers_stopped():
        """The SHOW SOURCES of a worker saying customers stopped while it reads orders."""
        shown = [source_rows(worker) for worker in everyone]
        return next((rows for rows in shown if rows.get("customers", [None] * 7)[4] == "stopped"
                     and rows.get("orders", [None] * 7)[4] == "reading"), None)

    rows = wait_for(customers_stopped, "a worker's SHOW SOURCES: customers stopped, orders reading", timeout=30)
    assert "column vip dropped" in (rows["customers"][6] or ""), f"the stop does not say why: {rows['customers']}"
    wait_for(lambda: same(w1, postgres, "orders"), "orders going on after customers stopped", timeout=60)
    customers = mirror(w1, "customers", "id")
    assert customers is not None and 5001 not in customers, "a change of the stopped table reached its mirror"

    # Dropped on w1 (created on w2): the slot, the streams on every worker, and what the lake
    # kept of the source go.
    dropped = w1.sql("DROP SOURCE shop")["rows"]
    for what in ("replication slot sluice_shop", "stream orders", "stream customers"):
        assert [what] in dropped, f"DROP SOURCE did not say it dropped {what}: {dropped}"
    wait_for(lambda: slots(postgres) == 0, "the replication slot dropped in PostgreSQL", timeout=15)
    for worker in everyone:
        wait_for(lambda: not {"orders", "customers"} & streams_of(worker),
                 f"the source's streams gone from {worker_name(worker)}", timeout=15)
        wait_for(lambda: not source_rows(worker) and worker.sql_status("SELECT * FROM orders")[0] != 200,
                 f"the source and its mirror gone from {worker_name(worker)}", timeout=15)
    assert not list(shelf.glob("shop.*")), f"the lake keeps the dropped source: {sorted(shelf.glob('shop.*'))}"
    assert slots(postgres) == 0, "a worker made the dropped source's slot anew"
    wait_for(lambda: not {f"{workers.cluster}.orders", f"{workers.cluster}.customers"} & tansu.topics(),
             "the dropped streams' topics deleted", timeout=45)
    assert all(worker.running for worker in everyone), "a worker died"
