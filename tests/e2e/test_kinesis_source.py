"""Streams that read Kinesis streams, through the real binary: from a second Sluice's Kinesis
door (W1 through `ticks_1m`, kill -9 three times, checked against DuckDB's windows), and from
moto's server (its Kinesis made to behave as Amazon's: 56-digit sequence numbers, SplitShard
keeping the parent's records, moto_kinesis.py) through a shard split, parent before children,
and a kill -9; bad input; secrets."""

from __future__ import annotations

import functools
import json
import random
import threading
import time
import uuid

import pytest
from deltalake import DeltaTable

import conftest
from test_views import SENTINELS, START, TICKS_1M, duckdb_ticks_1m, stamp, tick, ticks_1m_once_complete

wait_for = functools.partial(conftest.wait_for, timeout=120.0)
TICK_COLUMNS = "ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL"
# The reader's credentials for the Kinesis it reads: named by the stream, held by its
# environment only.
SECRET = "not-for-the-catalog-" + uuid.uuid4().hex[:8]


def kinesis_stream(name: str, stream_name: str, endpoint: str, columns: str, options: str = "") -> str:
    return (
        f"CREATE STREAM {name} ({columns}) WITH (connector = 'kinesis', stream_name = '{stream_name}', "
        f"region = 'us-east-1', endpoint = '{endpoint}', access_key_id_env = 'SOURCE_KEY_ID', "
        f"secret_access_key_env = 'SOURCE_SECRET'{options})"
    )


@pytest.fixture
def reader(request, tmp_path, sluice_bin):
    """A Sluice whose environment holds the credentials its Kinesis streams name."""
    srv = conftest.Server(tmp_path / "reader-logs", sluice_bin)
    srv.env.update({"SOURCE_KEY_ID": "test", "SOURCE_SECRET": SECRET})
    request.node._sluice_servers = getattr(request.node, "_sluice_servers", []) + [srv]
    srv.start(tmp_path / "reader-data")
    try:
        yield srv
    finally:
        srv.stop()


def table(server, name):
    return DeltaTable(str(server.data_dir / "lake" / name)).to_pyarrow_table().to_pylist()


def put(client, stream: str, records: list[tuple[str, bytes]], produced: dict, **extra) -> None:
    """PutRecords, retrying what was not taken; `produced` gets (shard, sequence) → data."""
    entries = [{"PartitionKey": key, "Data": data, **extra} for key, data in records]
    while entries:
        answer = client.put_records(StreamName=stream, Records=entries)
        retry = []
        for entry, result in zip(entries, answer["Records"]):
            if "SequenceNumber" in result:
                produced[(result["ShardId"], result["SequenceNumber"])] = entry["Data"]
            else:
                retry.append(entry)
        entries = retry


def test_ticks_1m_over_another_sluices_kinesis_door_is_exact_after_kill_9(server, reader, tmp_path):
    server.sql("CREATE STREAM ticks_in WITH (shards = 2)")
    reader.sql(kinesis_stream("ticks", "ticks_in", server.url, TICK_COLUMNS,
                              ", event_time = 'ts', watermark = '5 seconds'"))
    reader.sql(TICKS_1M)
    client = server.kinesis_client()
    produced: dict[tuple[str, str], bytes] = {}
    total = 30_000

    def produce():
        for start in range(0, total, 500):
            batch = [tick(n) for n in range(start, start + 500)]
            put(client, "ticks_in", [(t["ticker"], json.dumps(t).encode()) for t in batch], produced)

    # The reader is killed three times while it consumes: the producer does not care.
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    rng = random.Random(16)
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.5))
        reader.kill9()
        time.sleep(rng.uniform(0.0, 0.5))
        reader.start()
    thread.join(timeout=300)
    assert not thread.is_alive()
    # Far past every real event, on both shards: moves the watermark past every window.
    sentinel = START.replace(year=START.year + 1)
    for i, ticker in enumerate(SENTINELS):
        value = json.dumps({"ticker": ticker, "price": 1.0, "volume": 1, "ts": stamp(sentinel)}).encode()
        put(client, "ticks_in", [(ticker, value)], produced, ExplicitHashKey=str((i % 2) * 2**127))
    assert len(produced) == total + len(SENTINELS)

    # The raw table holds every record once, each with its shard, ordinal and sequence number.
    def raw_complete():
        rows = table(reader, "ticks")
        return rows if len(rows) >= len(produced) else None

    raw = wait_for(raw_complete, "the raw table to hold the whole Kinesis stream")
    positions = [(r["_shard"], r["_seq"]) for r in raw]
    assert len(positions) == len(set(positions)), "a (shard, ordinal) appears twice"
    assert {(f"shardId-{r['_shard']:012}", r["_kinesis_seq"]) for r in raw} == set(produced)
    for shard in (0, 1):
        ordinals = sorted(r["_seq"] for r in raw if r["_shard"] == shard)
        assert ordinals == list(range(len(ordinals))), "ordinals count every record of a shard"
        # Ordinals follow the sequence numbers.
        by_ordinal = sorted((r["_seq"], int(r["_kinesis_seq"])) for r in raw if r["_shard"] == shard)
        assert [s for _, s in by_ordinal] == sorted(s for _, s in by_ordinal)
    for r in raw[:1000]:
        data = produced[(f"shardId-{r['_shard']:012}", r["_kinesis_seq"])]
        assert json.loads(data)["ticker"] == r["ticker"] == r["_key"]
        assert r["_kinesis_ts"] is not None

    # The view equals DuckDB's windows over the events produced.
    events = tmp_path / "produced.ndjson"
    events.write_bytes(b"\n".join(produced.values()) + b"\n")
    expected = duckdb_ticks_1m(events)
    assert ticks_1m_once_complete(reader, len(expected)) == expected

    # The reader's doors refuse the stream's records and say where they go; its status says
    # where the records come from and how far behind each shard is, and never the secret.
    where = f"Kinesis stream 'ticks_in' ({server.url})"
    status, _, answer = reader.ingest("ticks", b'{"ticker":"X"}\n')
    assert status == 400 and where in json.dumps(answer), answer

    def caught_up():
        _, _, streams = reader.get("/v1/streams")
        (stream,) = streams["streams"]
        pipeline = stream["pipeline"]
        done = pipeline["partition_lag"] == {"0": 0, "1": 0} and pipeline["partition_lag_ms"] == {"0": 0, "1": 0}
        return (streams, stream) if done else None

    streams, stream = wait_for(caught_up, "the raw pipeline's lag to be 0 on both shards")
    assert stream["reads_from"] == where
    shown = json.dumps(streams) + json.dumps(reader.sql("SHOW STREAMS"))
    assert SECRET not in shown and "SOURCE_SECRET" in shown
    _, _, metrics = reader.get("/metrics")
    for shard in (0, 1):
        assert f'sluice_pipeline_partition_lag_seconds{{pipeline="ticks",partition="{shard}"}} 0' in metrics

    # Dropping the stream never deletes the Kinesis stream.
    reader.sql("DROP MATERIALIZED VIEW ticks_1m")
    reader.sql("DROP STREAM ticks")
    assert client.describe_stream_summary(StreamName="ticks_in")["StreamDescriptionSummary"]["StreamName"]


def first_versions(path) -> dict[tuple[int, int], int]:
    """Per (shard, ordinal) of a table, the version of the commit that added it."""
    latest = DeltaTable(str(path)).version()
    first: dict[tuple[int, int], int] = {}
    for version in range(latest + 1):
        rows = DeltaTable(str(path), version=version).to_pyarrow_table(columns=["_shard", "_seq"]).to_pylist()
        for r in rows:
            first.setdefault((r["_shard"], r["_seq"]), version)
    return first


def test_a_split_shard_is_read_parent_before_children_with_56_digit_sequence_numbers(
    moto_kinesis, reader
):
    kinesis = moto_kinesis.kinesis()
    name = "split_" + uuid.uuid4().hex[:8]
    kinesis.create_stream(StreamName=name, ShardCount=1)
    produced: dict[tuple[str, str], bytes] = {}
    n = 0

    def put_events(count: int, bad: int = 0):
        nonlocal n
        records = []
        for _ in range(count):
            records.append((f"k{n % 10}", json.dumps({"k": f"k{n % 10}", "n": n}).encode()))
            n += 1
        records += [("bad", b"not json")] * bad
        put(kinesis, name, records, produced)

    # A parent with records, split in two, and children with records: all there before the
    # stream is created, so that every shard could be read at once.
    put_events(300, bad=3)
    (parent,) = kinesis.list_shards(StreamName=name)["Shards"]
    kinesis.split_shard(StreamName=name, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(2**127))
    put_events(300)
    shards = {s["ShardId"]: s.get("ParentShardId") for s in kinesis.list_shards(StreamName=name)["Shards"]}
    assert len(shards) == 3
    assert all(len(seq) == 56 for _, seq in produced), "moto_kinesis.py gives Amazon's 56 digits"

    reader.sql(kinesis_stream("events", name, moto_kinesis.endpoint, "k TEXT, n BIGINT NOT NULL"))

    def landed(expected: int):
        def check():
            rows, errors = table(reader, "events"), table(reader, "events_errors")
            return (rows, errors) if len(rows) + len(errors) >= expected else None

        return wait_for(check, f"{expected} records in the raw and errors tables")

    rows, errors = landed(len(produced))
    # Every child row was committed after every row of its parent: a key's records in order.
    first = first_versions(reader.data_dir / "lake" / "events")
    parent_versions = [v for (shard, _), v in first.items() if shard == 0]
    child_versions = [v for (shard, _), v in first.items() if shard != 0]
    assert max(parent_versions) < min(child_versions), (max(parent_versions), min(child_versions))
    assert sorted((e["_shard"], e["_seq"]) for e in errors) == [(0, 300), (0, 301), (0, 302)]

    # Killed and started again, it resumes after the last record taken, at a pin: nothing twice.
    reader.kill9()
    reader.start()
    put_events(200)
    rows, errors = landed(len(produced))
    positions = [(r["_shard"], r["_seq"]) for r in rows + errors]
    assert len(positions) == len(set(positions)), "a (shard, ordinal) appears twice"
    assert len(rows) + len(errors) == len(produced)
    got = {(f"shardId-{r['_shard']:012}", r["_kinesis_seq"]) for r in rows}
    assert got == {k for k, v in produced.items() if v != b"not json"}
    for r in rows:
        assert len(r["_kinesis_seq"]) == 56 and r["_key"] == r["k"]


def test_bad_kinesis_sources_are_refused_at_create_and_leave_nothing(moto_kinesis, reader):
    status, answer = reader.sql_status(
        kinesis_stream("nowhere", "no_such_stream", moto_kinesis.endpoint, TICK_COLUMNS)
    )
    assert status == 404 and "Kinesis stream 'no_such_stream'" in json.dumps(answer), answer
    assert "does not exist" in json.dumps(answer), answer
    status, answer = reader.sql_status(kinesis_stream("nobody", "s", "http://127.0.0.1:1", TICK_COLUMNS))
    assert status == 503 and "http://127.0.0.1:1" in json.dumps(answer), answer
    status, answer = reader.sql_status(
        f"CREATE STREAM unset ({TICK_COLUMNS}) WITH (connector = 'kinesis', stream_name = 's', "
        f"region = 'us-east-1', endpoint = '{moto_kinesis.endpoint}', access_key_id_env = 'NO_SUCH_VARIABLE', "
        f"secret_access_key_env = 'SOURCE_SECRET')"
    )
    assert status == 400 and "environment variable NO_SUCH_VARIABLE, which is not set" in json.dumps(answer)
    status, answer = reader.sql_status(
        f"CREATE STREAM literal ({TICK_COLUMNS}) WITH (connector = 'kinesis', stream_name = 's', "
        f"region = 'us-east-1', secret_access_key = '{SECRET}')"
    )
    assert status == 400 and "never kept in the catalog" in json.dumps(answer), answer
    assert SECRET not in json.dumps(answer)
    _, _, streams = reader.get("/v1/streams")
    assert streams["streams"] == [], "a refused CREATE leaves nothing"


def test_a_kinesis_outage_is_reported_and_the_stream_resumes_by_itself(moto_kinesis, reader):
    from test_faults import Cable

    kinesis = moto_kinesis.kinesis()
    name = "outage_" + uuid.uuid4().hex[:8]
    kinesis.create_stream(StreamName=name, ShardCount=2)
    cable = Cable(moto_kinesis.port)
    try:
        reader.sql(kinesis_stream("events", name, f"http://127.0.0.1:{cable.port}", "k TEXT, n BIGINT NOT NULL"))
        produced: dict[tuple[str, str], bytes] = {}

        def put_events(ns):
            put(kinesis, name, [(f"k{n}", json.dumps({"k": f"k{n}", "n": n}).encode()) for n in ns], produced)

        def rows():
            return table(reader, "events")

        put_events(range(100))
        wait_for(lambda: len(rows()) == 100 or None, "the first records in the raw table")

        # Kinesis unreachable: the stream's pipeline says so, and nothing is lost meanwhile.
        cable.cut()
        put_events(range(100, 200))

        def reported():
            _, _, streams = reader.get("/v1/streams")
            error = streams["streams"][0]["pipeline"]["last_error"] or ""
            return error if f"Kinesis stream '{name}'" in error else None

        error = wait_for(reported, "the pipeline to report Kinesis unreachable")
        assert f"127.0.0.1:{cable.port}" in error, error

        # Back: it catches up by itself, every record once.
        cable.mend()
        got = wait_for(lambda: (r := rows()) and len(r) >= 200 and r, "the raw table to catch up")
        assert sorted(r["n"] for r in got) == list(range(200))
        assert {(f"shardId-{r['_shard']:012}", r["_kinesis_seq"]) for r in got} == set(produced)
    finally:
        cable.close()
