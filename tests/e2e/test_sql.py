"""SQL over the lake: HTTP in JSON, CSV and Arrow, `sluice sql`, and what SQL may not do."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import pyarrow as pa
from deltalake import DeltaTable

from conftest import sluice_bin_path

TICKS = "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL) WITH (shards = 4)"


def gen_ticks(n):
    return subprocess.run(
        [str(sluice_bin_path()), "gen", "ticks", "--events", str(n)], capture_output=True, check=True
    ).stdout


def loaded(server, n):
    server.sql(TICKS)
    events = gen_ticks(n)
    status, _, answer = server.ingest("ticks", events, key="ticker")
    assert status == 200 and answer["accepted"] == n, answer
    # Queries see the records at once (the log's tail); other readers once they are committed.
    assert server.sql("SELECT count(*) AS n FROM ticks")["rows"] == [[n]]
    deadline = time.monotonic() + 30
    while True:
        committed = DeltaTable(str(server.data_dir / "lake" / "ticks")).to_pyarrow_table().num_rows
        if committed == n:
            return [json.loads(line) for line in events.splitlines()]
        assert time.monotonic() < deadline, f"the raw table did not reach {n} committed rows: {committed}"
        time.sleep(0.3)


def test_queries_answer_from_the_raw_table_as_other_readers_see_it(server):
    events = loaded(server, 3000)
    sql = "SELECT ticker, count(*) AS trades, sum(volume) AS volume FROM ticks GROUP BY ticker ORDER BY ticker"
    answer = server.sql(sql)
    assert [c["name"] for c in answer["columns"]] == ["ticker", "trades", "volume"]
    expected = {}
    for e in events:
        t = expected.setdefault(e["ticker"], [0, 0])
        t[0] += 1
        t[1] += e["volume"]
    assert answer["rows"] == [[t, c, v] for t, (c, v) in sorted(expected.items())]

    # The deltalake package reads the same rows.
    table = DeltaTable(str(server.data_dir / "lake" / "ticks")).to_pyarrow_table()
    assert table.num_rows == 3000
    assert sorted(table.column("ticker").to_pylist()) == sorted(e["ticker"] for e in events)

    status, headers, body = server.request(
        "POST", "/v1/sql", json.dumps({"sql": sql}).encode(),
        {"Content-Type": "application/json", "Accept": "text/csv"}, raw=True,
    )
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["ticker", "trades", "volume"]
    assert [[r[0], int(r[1]), int(r[2])] for r in rows[1:]] == answer["rows"]

    status, headers, body = server.request(
        "POST", "/v1/sql", json.dumps({"sql": sql}).encode(),
        {"Content-Type": "application/json", "Accept": "application/vnd.apache.arrow.stream"}, raw=True,
    )
    assert status == 200 and headers["content-type"] == "application/vnd.apache.arrow.stream"
    arrow = pa.ipc.open_stream(body).read_all()
    assert arrow.column_names == ["ticker", "trades", "volume"]
    assert arrow.num_rows == len(expected)

    tables = [row[2] for row in server.sql("SHOW TABLES")["rows"]]
    assert "ticks" in tables and "ticks_errors" in tables


def test_the_sql_command_prints_tables_csv_and_errors(server):
    loaded(server, 500)
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(sluice_bin_path()), "sql", *args, "--server", server.url], capture_output=True, timeout=60
    )
    out = run("SELECT count(*) AS trades FROM ticks")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == " trades\n--------\n 500\n(1 row)\n"
    out = run("SELECT ticker FROM ticks ORDER BY ticker LIMIT 2", "--format", "csv")
    assert out.stdout.decode().splitlines()[0] == "ticker"
    out = run("SELEC 1")
    assert out.returncode != 0
    assert "Line: 1, Column: 1" in out.stderr.decode(), out.stderr.decode()


def test_sql_cannot_write_or_read_outside_the_lake(server, tmp_path):
    loaded(server, 10)
    target = tmp_path / "stolen.csv"
    for statement, code in [
        ("INSERT INTO ticks SELECT * FROM ticks", "statement_refused"),
        ("CREATE TABLE copy (a INT)", "statement_refused"),
        ('CREATE TABLE "../escape" AS SELECT 1 AS a', "statement_refused"),
        (f"COPY ticks TO '{target}'", None),
        (f"CREATE EXTERNAL TABLE x (a INT) STORED AS TEXTFILE LOCATION '{target}'", None),
        ("SELECT * FROM '/etc/passwd'", None),
    ]:
        status, body = server.sql_status(statement)
        assert 400 <= status < 500, f"{statement} → {status} {body}"
        if code:
            assert body["code"] == code, body
    assert not target.exists()
    assert not (server.data_dir / "escape").exists()
    assert server.sql("SELECT count(*) FROM ticks")["rows"] == [[10]]
