"""Cluster mode through the real binary: several `sluice serve --cluster` workers, one lake (a
local folder: the concurrency of their commits is the point here; `test_s3` shows moto refuses a
second conditional writer), one Kafka-protocol broker (Tansu 0.6.0: its consumer groups work
for cooperative-sticky rebalancing, not for static membership, which none of these tests uses).
The workers share the catalog in the lake and split each stream's partitions through a consumer
group; every record the broker acknowledged lands once while workers are killed with -9,
restarted, and join."""

from __future__ import annotations

import functools
import json
import threading
import time

import pytest
from deltalake import DeltaTable

import conftest
from test_kafka import TICK_COLUMNS, Produced, kafka_stream, produce_ticks

wait_for = functools.partial(conftest.wait_for, timeout=120.0)
PARTITIONS = 6


@pytest.fixture
def workers(request, tmp_path, sluice_bin, tansu):
    """Starts workers of one cluster on demand (`start(name)`), all on the lake in tmp_path."""
    lake = tmp_path / "lake"
    started: dict[str, conftest.Server] = {}
    request.node._sluice_services = getattr(request.node, "_sluice_services", []) + [("tansu", tansu)]

    def start(name: str) -> conftest.Server:
        srv = conftest.Server(tmp_path / f"logs-{name}", sluice_bin)
        srv.extra_args = ["--cluster", "c1", "--worker", name, "--lake", str(lake)]
        request.node._sluice_servers = getattr(request.node, "_sluice_servers", []) + [srv]
        started[name] = srv
        return srv.start(tmp_path / f"data-{name}")

    start.lake = lake
    try:
        yield start
    finally:
        for srv in started.values():
            srv.stop()


def streams_of(server) -> set[str]:
    _, _, body = server.get("/v1/streams")
    return {s["name"] for s in body["streams"]}


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
    w1, w2, w3 = workers("w1"), workers("w2"), workers("w3")
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
    w4 = workers("w4")
    thread.join(timeout=300)
    assert not thread.is_alive() and not produced.failures, produced.failures
    assert len(produced.records) == total

    def raw_complete():
        rows = DeltaTable(str(workers.lake / "ticks")).to_pyarrow_table(columns=["_shard", "_seq"]).to_pylist()
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
    status, body = w2.sql_status("CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM ticks")
    assert status >= 400 and "cluster" in json.dumps(body), body
    status, body = w3.sql_status("CREATE STREAM own (a TEXT)")
    assert status >= 400 and "Kafka topic" in json.dumps(body), body
    status, body = w1.sql_status(kafka_stream("ticks", tansu, topic, TICK_COLUMNS))
    assert status >= 400 and "exists" in json.dumps(body), body

    # A DROP on one worker reaches all, and the tables go.
    w4.sql("DROP STREAM ticks")
    for worker in (w1, w2, w3):
        wait_for(lambda: "ticks" not in streams_of(worker), "the stream gone from every worker", timeout=10)
    wait_for(lambda: not (workers.lake / "ticks").exists(), "the stream's table deleted")


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
