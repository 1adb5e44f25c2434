"""The lake on S3: `sluice serve --lake s3://BUCKET/PREFIX` keeps every stream's raw and errors
tables as Delta tables in a real S3-compatible server (moto's, on loopback, reached through the
standard AWS_* variables), not on the local disk. SQL answers the same rows that the deltalake
package reads from the bucket; a restart (clean, then kill -9) on the same data dir and lake
loses and duplicates nothing; DROP STREAM deletes its tables' objects and no other table's.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

from deltalake import DeltaTable

from conftest import S3_BUCKET, data_dir_snapshot
from test_lake import CLICKS, expected_outcome, gen

CLICKS_COLUMNS = ["event_id", "user_id", "session_id", "event_type", "page", "device", "country", "ts", "_shard", "_seq"]
ERRORS_COLUMNS = ["raw", "reason", "_shard", "_seq"]


def delta(lake, name):
    """The table `name` of the lake, read from the bucket, or None if there is none."""
    uri, options = lake.table_url(name), lake.s3.storage_options()
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    return DeltaTable(uri, storage_options=options)


def rows(lake, name):
    table = delta(lake, name)
    return [] if table is None else table.to_pyarrow_table().to_pylist()


def wait_for_rows(lake, expected, names, timeout=90.0):
    """Waits until the tables hold `expected` rows in all; returns their rows by table."""
    deadline = time.monotonic() + timeout
    while True:
        got = {name: rows(lake, name) for name in names}
        total = sum(len(r) for r in got.values())
        if total >= expected or time.monotonic() > deadline:
            assert total == expected, f"the tables hold {total} rows, expected {expected}"
            return got
        time.sleep(0.3)


def by_position(table_rows, columns):
    """The rows in log order, each reduced to `columns`."""
    ordered = sorted(table_rows, key=lambda r: (r["_shard"], r["_seq"]))
    return [{c: r[c] for c in columns} for r in ordered]


def sql_rows(server, statement):
    """/v1/sql's answer as dicts, timestamps parsed to aware datetimes."""
    answer = server.sql(statement)
    names = [c["name"] for c in answer["columns"]]
    stamps = [c["type"].startswith("Timestamp") for c in answer["columns"]]
    return [
        {n: datetime.fromisoformat(v) if ts and v is not None else v for n, v, ts in zip(names, row, stamps)}
        for row in answer["rows"]
    ]


def show_tables(server):
    return {row[2] for row in server.sql("SHOW TABLES")["rows"]}


def check_w2(lake, lines, timeout=90.0):
    """The clicks tables hold every line exactly once, in the table W2 says; returns their rows."""
    tables = wait_for_rows(lake, len(lines), ["clicks", "clicks_errors"], timeout)
    good, errors = tables["clicks"], tables["clicks_errors"]
    outcome = Counter(expected_outcome(line) for line in lines)
    assert len(good) == outcome["good"], outcome
    assert len(errors) == outcome["invalid_json"] + outcome["bad_ts"], outcome
    positions = [(r["_shard"], r["_seq"]) for r in good] + [(e["_shard"], e["_seq"]) for e in errors]
    assert len(set(positions)) == len(lines), "a record is in the tables twice"
    assert sorted(e["raw"].encode() for e in errors) == sorted(
        line for line in lines if expected_outcome(line) != "good"
    )
    return good, errors


def check_sql_reads_what_deltalake_reads(server, good, errors):
    assert sql_rows(server, f"SELECT {', '.join(CLICKS_COLUMNS)} FROM clicks ORDER BY _shard, _seq") == (
        by_position(good, CLICKS_COLUMNS)
    )
    assert sql_rows(server, f"SELECT {', '.join(ERRORS_COLUMNS)} FROM clicks_errors ORDER BY _shard, _seq") == (
        by_position(errors, ERRORS_COLUMNS)
    )


def test_w2_lands_in_s3_reads_alike_and_survives_restarts(s3_server, s3_lake):
    server, lake = s3_server, s3_lake
    server.sql(CLICKS)
    events = gen("clicks", 6000)
    lines = events.splitlines()
    status, _, answer = server.ingest("clicks", events, key="user_id")
    assert status == 200 and answer["accepted"] == 6000, answer

    good, errors = check_w2(lake, lines)
    reasons = Counter("invalid JSON" if e["reason"].startswith("invalid JSON") else e["reason"].split(":")[0] for e in errors)
    outcome = Counter(expected_outcome(line) for line in lines)
    assert reasons == {"invalid JSON": outcome["invalid_json"], "field 'ts'": outcome["bad_ts"]}, reasons
    check_sql_reads_what_deltalake_reads(server, good, errors)
    assert {"clicks", "clicks_errors"} <= show_tables(server)

    # The tables are objects in the bucket, under the prefix: each commit and every data file the
    # log names. Nothing of them is on the local disk.
    for name in ("clicks", "clicks_errors"):
        keys = set(lake.keys(name))
        assert f"{name}/_delta_log/00000000000000000000.json" in keys, sorted(keys)[:20]
        files = delta(lake, name).file_uris()
        assert files, f"{name}: the table has no data file"
        assert {uri.removeprefix(lake.url + "/") for uri in files} <= keys, f"{name}: data files missing in the bucket"
    assert not [p for p in data_dir_snapshot(server.data_dir) if "_delta_log" in p or p.endswith(".parquet")]

    # A clean restart on the same data dir and lake: the same rows, nothing written again.
    server.restart()
    assert {"clicks", "clicks_errors"} <= show_tables(server)
    time.sleep(2.5)  # several commit intervals
    again_good, again_errors = check_w2(lake, lines)
    assert by_position(again_good, CLICKS_COLUMNS) == by_position(good, CLICKS_COLUMNS)
    assert by_position(again_errors, ERRORS_COLUMNS) == by_position(errors, ERRORS_COLUMNS)
    check_sql_reads_what_deltalake_reads(server, again_good, again_errors)

    # More records, then kill -9 before they are surely committed: after the restart the tables
    # resume from the positions recorded in the bucket, exactly once.
    more = gen("clicks", 2000, seed=7)
    status, _, answer = server.ingest("clicks", more, key="user_id")
    assert status == 200 and answer["accepted"] == 2000, answer
    server.restart(kill=True)
    all_lines = lines + more.splitlines()
    good, errors = check_w2(lake, all_lines)
    check_sql_reads_what_deltalake_reads(server, good, errors)


def test_drop_stream_deletes_its_tables_objects_and_no_other(s3_server, s3_lake):
    server, lake = s3_server, s3_lake
    kinesis = server.kinesis_client()
    kinesis.create_stream(StreamName="k", ShardCount=1)
    kinesis.put_record(StreamName="k", Data=b'{"any": 1}', PartitionKey="a")
    kinesis.put_record(StreamName="k", Data=b"not json", PartitionKey="a")
    # A stream whose name starts with the dropped one's: its objects share the key prefix "k".
    server.sql("CREATE STREAM kk (n BIGINT) WITH (shards = 1)")
    status, _, answer = server.ingest("kk", b'{"n": 1}\n')
    assert status == 200 and answer["accepted"] == 1, answer

    tables = wait_for_rows(lake, 3, ["k", "k_errors", "kk"])
    assert [r["data"] for r in tables["k"]] == ['{"any": 1}']
    assert tables["k_errors"][0]["raw"] == "not json"
    assert lake.keys("k") and lake.keys("k_errors") and lake.keys("kk")

    server.sql("DROP STREAM k")
    deadline = time.monotonic() + 10
    while (lake.keys("k") or lake.keys("k_errors")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lake.keys("k") == [], "objects of the dropped table are left in the bucket"
    assert lake.keys("k_errors") == [], "objects of the dropped errors table are left in the bucket"
    assert delta(lake, "k") is None and delta(lake, "k_errors") is None
    assert [r["n"] for r in rows(lake, "kk")] == [1]
    assert server.sql("SELECT n FROM kk")["rows"] == [[1]]
    tables = show_tables(server)
    assert "k" not in tables and "k_errors" not in tables and "kk" in tables

    # The dropped tables do not come back with a restart; the other one is still there.
    server.restart()
    tables = show_tables(server)
    assert "k" not in tables and "k_errors" not in tables and "kk" in tables
    assert lake.keys("k") == [] and lake.keys("k_errors") == []
    assert server.sql("SELECT n FROM kk")["rows"] == [[1]]


def test_the_s3_stand_in_lets_one_writer_create_a_key_under_concurrency(moto_s3):
    """Delta on S3 commits by creating the next log entry with `If-None-Match: *`: of writers
    racing for a version, exactly one must win. moto's server is the S3 stand-in of every test
    that shares a lake between writers (and stand-ins have ignored the header before): 8
    threads race to create each of 200 keys; each key has one winner, the others get 412."""
    import threading

    from botocore.exceptions import ClientError

    prefix = f"race-{time.time_ns()}/_delta_log"
    keys = [f"{prefix}/{n:020}.json" for n in range(200)]
    won: Counter = Counter()
    refused: Counter = Counter()
    other: list = []
    start, counting = threading.Barrier(8), threading.Lock()

    def writer(w: int):
        client = moto_s3.client()  # boto3's clients may be shared between threads
        start.wait()
        for key in keys:
            try:
                client.put_object(Bucket=S3_BUCKET, Key=key, Body=f"writer {w}".encode(), IfNoneMatch="*")
                with counting:
                    won[key] += 1
            except ClientError as e:
                code = e.response["Error"]["Code"]
                with counting:
                    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                        refused[key] += 1
                    else:
                        other.append(code)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not other, Counter(other)
    assert [k for k in keys if won[k] != 1] == [], {k: won[k] for k in keys if won[k] != 1}
    assert all(refused[k] == 7 for k in keys)
