"""The lake: every stream's raw and errors tables, read by the deltalake package, Polars and
DuckDB (the Parquet files the Delta log lists)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime

import duckdb
import polars as pl
from deltalake import DeltaTable

from conftest import sluice_bin_path, utc_wall_time

CLICKS = (
    "CREATE STREAM clicks (event_id TEXT NOT NULL, user_id TEXT, session_id TEXT, event_type TEXT, "
    "page TEXT, device TEXT, country TEXT, ts TIMESTAMP NOT NULL) WITH (shards = 2)"
)


def table_path(server, name):
    return str(server.data_dir / "lake" / name)


def rows(server, name):
    path = table_path(server, name)
    if not DeltaTable.is_deltatable(path):
        return []
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def wait_for_rows(server, expected, names, timeout=60.0):
    """Waits until the tables hold `expected` rows in all; returns their rows by table."""
    deadline = time.monotonic() + timeout
    while True:
        got = {name: rows(server, name) for name in names}
        total = sum(len(r) for r in got.values())
        if total >= expected or time.monotonic() > deadline:
            assert total == expected, f"the tables hold {total} rows, expected {expected}"
            return got
        time.sleep(0.3)


def gen(workload, events, seed=42):
    proc = subprocess.run(
        [str(sluice_bin_path()), "gen", workload, "--events", str(events), "--seed", str(seed)],
        capture_output=True, check=True, timeout=60,
    )
    return proc.stdout


def expected_outcome(line: bytes):
    """What W2 says a record is: good, invalid JSON, or a bad timestamp."""
    try:
        event = json.loads(line)
    except ValueError:
        return "invalid_json"
    try:
        datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    except ValueError:
        return "bad_ts"
    return "good"


def test_w2_records_land_in_the_raw_and_errors_tables(server):
    server.sql(CLICKS)
    events = gen("clicks", 6000)
    lines = events.splitlines()
    status, _, answer = server.ingest("clicks", events, key="user_id")
    assert status == 200 and answer["accepted"] == 6000, answer

    tables = wait_for_rows(server, 6000, ["clicks", "clicks_errors"])
    good, errors = tables["clicks"], tables["clicks_errors"]
    outcome = Counter(expected_outcome(line) for line in lines)
    assert len(good) == outcome["good"], outcome
    assert len(errors) == outcome["invalid_json"] + outcome["bad_ts"], outcome
    reasons = Counter("invalid JSON" if e["reason"].startswith("invalid JSON") else e["reason"].split(":")[0] for e in errors)
    assert reasons == {"invalid JSON": outcome["invalid_json"], "field 'ts'": outcome["bad_ts"]}, reasons

    # Exactly once, and every record traceable to its place in the log.
    positions = [(r["_shard"], r["_seq"]) for r in good] + [(e["_shard"], e["_seq"]) for e in errors]
    assert len(set(positions)) == 6000
    assert sorted(e["raw"].encode() for e in errors) == sorted(
        line for line in lines if expected_outcome(line) != "good"
    )
    by_id = {r["event_id"]: r for r in good}
    for line in lines[:200]:
        if expected_outcome(line) == "good":
            event = json.loads(line)
            row = by_id[event["event_id"]]
            assert row["user_id"] == event["user_id"] and row["page"] == event["page"]
            assert row["ts"] == utc_wall_time(event["ts"])

    # Polars reads the same table.
    frame = pl.read_delta(table_path(server, "clicks"))
    assert frame.height == len(good)
    assert sorted(frame["event_id"].to_list()) == sorted(by_id)
    # A TIMESTAMP column is Delta's timestamp_ntz: a datetime without a zone.
    assert frame.schema["ts"] == pl.Datetime("us")

    # DuckDB reads the table's Parquet files as its Delta log lists them: ts is a TIMESTAMP,
    # _ingested_at (an instant) a TIMESTAMP WITH TIME ZONE.
    files = DeltaTable(table_path(server, "clicks")).file_uris()
    duck = duckdb.connect()
    parquet = f"read_parquet({files!r})"
    kinds = dict(duck.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {parquet})").fetchall())
    assert (kinds["ts"], kinds["_ingested_at"]) == ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"), kinds
    assert duck.execute(f"SELECT count(*) FROM {parquet}").fetchone()[0] == len(good)


def test_the_raw_table_is_exact_after_kill9(server):
    server.sql("CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, n BIGINT, ts TIMESTAMP NOT NULL) WITH (shards = 4)")
    acked = set()
    sent = 0

    def produce(stop, base):
        nonlocal sent
        i = 0
        while not stop.is_set():
            batch = [
                {"ticker": f"T{(base + i + k) % 50}", "price": 1.5, "n": base + i + k, "ts": "2026-01-05T14:30:00Z"}
                for k in range(500)
            ]
            i += 500
            body = "".join(json.dumps(e) + "\n" for e in batch).encode()
            try:
                status, _, _ = server.ingest("ticks", body, key="ticker")
            except OSError:
                return
            if status == 200:
                acked.update(e["n"] for e in batch)
            sent += len(batch)

    for cycle in range(3):
        stop = threading.Event()
        producer = threading.Thread(target=produce, args=(stop, cycle * 10_000_000))
        producer.start()
        time.sleep(2.5)  # several commits happen (every second) while records arrive
        server.kill9()
        stop.set()
        producer.join(timeout=30)
        server.start(server.data_dir)

    assert acked, "no batch was acknowledged: the test would prove nothing"
    in_log = sum(s["records"] for s in server.get("/v1/streams")[2]["streams"] if s["name"] == "ticks")
    table = wait_for_rows(server, in_log, ["ticks"])["ticks"]
    ns = Counter(r["n"] for r in table)
    assert not [n for n, c in ns.items() if c > 1], "a record is in the raw table twice"
    missing = acked - set(ns)
    assert not missing, f"{len(missing)} acknowledged records are not in the raw table"
    positions = {(r["_shard"], r["_seq"]) for r in table}
    assert len(positions) == len(table) == in_log


def test_dropping_a_stream_drops_its_tables_and_kinesis_streams_are_schemaless(server, kinesis):
    kinesis.create_stream(StreamName="k", ShardCount=1)
    kinesis.put_record(StreamName="k", Data=b'{"any": 1}', PartitionKey="a")
    kinesis.put_record(StreamName="k", Data=b"not json", PartitionKey="a")
    tables = wait_for_rows(server, 2, ["k", "k_errors"])
    assert [r["data"] for r in tables["k"]] == ['{"any": 1}']
    assert tables["k_errors"][0]["raw"] == "not json"

    server.sql("DROP STREAM k")
    deadline = time.monotonic() + 10
    while DeltaTable.is_deltatable(table_path(server, "k")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not DeltaTable.is_deltatable(table_path(server, "k"))
    assert not DeltaTable.is_deltatable(table_path(server, "k_errors"))


def test_partitioned_streams_and_ctas_tables_read_alike_in_sluice_polars_and_deltalake(server):
    """Hive partitions (a column and the date and hour of the event time), and a table written
    by CREATE TABLE … PARTITIONED BY AS SELECT: the same rows through Sluice, Polars and
    deltalake, and time travel to the version before an INSERT."""
    server.sql(CLICKS.replace("WITH (shards = 2)", "WITH (shards = 2, partition_by = 'date(ts), hour(ts), device')"))
    events = gen("clicks", 3000)
    status, _, answer = server.ingest("clicks", events, key="user_id")
    assert status == 200 and answer["accepted"] == 3000, answer
    good = sum(expected_outcome(line) == "good" for line in events.splitlines())
    wait_for_rows(server, 3000, ["clicks", "clicks_errors"])

    root = server.data_dir / "lake" / "clicks"
    folders = {p.relative_to(root).as_posix() for p in root.glob("ts_date=*/ts_hour=*/device=*")}
    assert folders and all(f.count("/") == 2 for f in folders), folders

    query = "SELECT ts_date, ts_hour, device, count(*) AS n FROM clicks GROUP BY 1, 2, 3"
    ours = {(str(d), h, dev): n for d, h, dev, n in server.sql(query)["rows"]}
    frame = pl.read_delta(table_path(server, "clicks"))
    theirs = {
        (str(d), h, dev): n
        for d, h, dev, n in frame.group_by("ts_date", "ts_hour", "device").len().iter_rows()
    }
    assert ours == theirs and sum(ours.values()) == good
    assert (frame["ts_date"] == frame["ts"].dt.date()).all()
    assert (frame["ts_hour"] == frame["ts"].dt.hour()).all()

    answer = server.sql(
        "CREATE TABLE per_device PARTITIONED BY (device) AS "
        "SELECT device, count(*) AS n FROM clicks GROUP BY device"
    )
    assert answer["columns"][0]["name"] == "count"
    server.sql("INSERT INTO per_device VALUES ('toaster', 1)")
    table = DeltaTable(table_path(server, "per_device"))
    assert table.version() == 1
    written = {r["device"]: r["n"] for r in table.to_pyarrow_table().to_pylist()}
    assert written["toaster"] == 1 and sum(written.values()) == good + 1
    before = server.sql("SELECT sum(n) FROM per_device VERSION AS OF 0")["rows"]
    assert before == [[good]]
    assert dict(pl.read_delta(table_path(server, "per_device"), version=0).iter_rows()) == {
        k: v for k, v in written.items() if k != "toaster"
    }
