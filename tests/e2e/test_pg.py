"""The PostgreSQL protocol: psql and psycopg 3 query the lake and create and drop streams.

Stream statements (CREATE STREAM, DROP STREAM, SHOW STREAMS, DESCRIBE) run in the simple query
protocol: psql sends it, and so does psycopg for a statement without parameters (or through a
ClientCursor). `prepare=True` makes psycopg use the extended protocol (Parse/Bind/Execute).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors
from psycopg.pq import TransactionStatus

PSQL = "/usr/bin/psql"
TICKS = (
    "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL, "
    "ok BOOLEAN) WITH (shards = 2)"
)
UTC = timezone.utc

# Three good records (one with a quote in its ticker and NULLs) and one line that is not JSON.
RECORDS = [
    {"ticker": "AAPL", "price": 187.25, "volume": 100, "ts": "2024-03-01T09:30:00Z", "ok": True},
    {"ticker": "MSFT", "price": 402.5, "volume": 40, "ts": "2024-03-01T09:30:01.5Z", "ok": False},
    {"ticker": "O'Brien", "price": None, "volume": 75, "ts": "2024-03-01T09:30:02Z"},
]
BAD_LINE = b"not json"

# psycopg's type OIDs.
TEXT, FLOAT8, INT8, TIMESTAMP, TIMESTAMPTZ, BOOL, INT4 = 25, 701, 20, 1114, 1184, 16, 23
NUMERIC, DATE, INT2, FLOAT4 = 1700, 1082, 21, 700


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def ndjson(events, extra_lines=()) -> bytes:
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    return b"".join(line + b"\n" for line in [*lines, *extra_lines])


def psql(server, *args, stop_on_error=True) -> subprocess.CompletedProcess:
    """psql, unaligned and tuples only (-A -t), no psqlrc (-X), never asking for a password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    cmd = [
        PSQL, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", "sluice", "-d", "sluice",
        "-X", "-A", "-t", "-w",
    ]
    if stop_on_error:
        cmd += ["-v", "ON_ERROR_STOP=1"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, env=env)


def psql_ok(server, *args) -> list[str]:
    """Runs psql, asserts success, returns its stdout lines."""
    out = psql(server, *args)
    assert out.returncode == 0, f"psql {args} → exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    assert "ERROR" not in out.stderr, f"psql {args}: {out.stderr}"
    return out.stdout.splitlines()


def connect(server, autocommit=True) -> psycopg.Connection:
    assert server.pg_port, "the server did not print 'sluice: pg listening on …'"
    return psycopg.connect(
        host="127.0.0.1", port=server.pg_port, user="sluice", dbname="sluice",
        autocommit=autocommit, connect_timeout=10,
    )


def query(conn, statement, params=None, prepare=None):
    cur = conn.execute(statement, params, prepare=prepare)
    return cur.fetchall()


def count_ticks(conn) -> int:
    rows = query(conn, "SELECT count(*) FROM ticks")
    assert len(rows) == 1, rows
    return rows[0][0]


def expect_sqlstate(conn, statement, sqlstate, params=None, prepare=None, cursor=None):
    """Runs a statement that must fail with `sqlstate`; returns the error."""
    cur = cursor or conn.cursor()
    try:
        cur.execute(statement, params, prepare=prepare)
    except psycopg.Error as e:
        assert e.sqlstate == sqlstate, (
            f"{statement!r} (prepare={prepare}): expected SQLSTATE {sqlstate}, got {e.sqlstate} "
            f"{type(e).__name__}: {e}"
        )
        return e
    rows = cur.fetchall() if cur.description else cur.statusmessage
    raise AssertionError(f"{statement!r} (prepare={prepare}): expected SQLSTATE {sqlstate}, got success: {rows!r}")


def wait_for_tables(server, stream="ticks", timeout=10.0):
    """Waits until the stream's raw and errors tables answer queries over PostgreSQL (a stream
    created over SQL has them when CREATE STREAM returns; one created over the Kinesis API gets
    them within the server's next upkeep tick).
    """
    deadline = time.monotonic() + timeout
    with connect(server) as conn:
        for table in (stream, f"{stream}_errors"):
            while True:
                try:
                    query(conn, f"SELECT count(*) FROM {table}")
                    break
                except errors.UndefinedTable as e:
                    assert time.monotonic() < deadline, f"table {table} not queryable after {timeout} s: {e}"
                    time.sleep(0.1)


def create_ticks(server):
    """CREATE STREAM ticks over HTTP, and waits for its tables."""
    server.sql(TICKS)
    wait_for_tables(server)


def ingest(server, body: bytes, accepted: int, key=None):
    status, _, answer = server.ingest("ticks", body, key=key)
    assert status == 200, f"ingest → HTTP {status}: {answer!r}"
    assert answer.get("accepted") == accepted, f"accepted {answer!r}, sent {accepted}"
    return answer


def loaded(server):
    """The ticks stream holding RECORDS (and BAD_LINE in its errors table)."""
    create_ticks(server)
    ingest(server, ndjson(RECORDS, [BAD_LINE]), 4)


def http_rows(server, statement):
    """HTTP /v1/sql's answer as (column names, rows), timestamps parsed to datetimes (aware for
    a TIMESTAMPTZ, naive for a TIMESTAMP)."""
    answer = server.sql(statement)
    names = [c["name"] for c in answer["columns"]]
    stamps = [c["type"].startswith("Timestamp") for c in answer["columns"]]
    rows = []
    for row in answer["rows"]:
        rows.append(tuple(
            datetime.fromisoformat(v) if is_ts and v is not None else v for v, is_ts in zip(row, stamps)
        ))
    return names, rows


def same_value(a, b) -> bool:
    """One value from PG and one from HTTP: floats to 12 digits, booleans by identity."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, datetime) or isinstance(b, datetime):
        return (isinstance(a, datetime) and isinstance(b, datetime)
                and (a.tzinfo is None) == (b.tzinfo is None) and a == b)
    return type(a) is type(b) and a == b


def gen_ticks(n, seed) -> list[dict]:
    rnd = random.Random(seed)
    start = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        e = {
            "ticker": rnd.choice(["AAPL", "MSFT", "GOOG", "AMZN", "O'Brien"]),
            "price": round(rnd.uniform(1, 1000), 2) if rnd.random() > 0.05 else None,
            "volume": rnd.randint(1, 10_000),
            "ts": (start + timedelta(milliseconds=250 * i)).isoformat().replace("+00:00", "Z"),
        }
        if rnd.random() > 0.1:
            e["ok"] = rnd.random() > 0.5
        out.append(e)
    return out


# --------------------------------------------------------------------------------------------
# psql
# --------------------------------------------------------------------------------------------


def test_psql_creates_a_stream_reads_its_rows_describes_its_tables_and_survives_errors(server):
    assert psql_ok(server, "-c", TICKS) == ["CREATE STREAM"]
    wait_for_tables(server)
    ingest(server, ndjson(RECORDS, [BAD_LINE]), 4)

    lines = psql_ok(server, "-c", "SELECT ticker, price, volume, ts, ok FROM ticks ORDER BY ticker")
    # PostgreSQL itself prints a timestamp as '2024-03-01 09:30:00' (no zero fraction); Sluice
    # always prints six fractional digits. Both are valid timestamp text. (ts is a TIMESTAMP: a
    # wall time, without a zone.)
    assert lines == [
        "AAPL|187.25|100|2024-03-01 09:30:00.000000|t",
        "MSFT|402.5|40|2024-03-01 09:30:01.500000|f",
        "O'Brien||75|2024-03-01 09:30:02.000000|",
    ], f"psql rows: {lines}"

    lines = psql_ok(server, "-c", "SELECT raw, reason FROM ticks_errors")
    assert len(lines) == 1, f"ticks_errors: {lines}"
    raw, reason = lines[0].split("|", 1)
    assert raw == "not json" and reason.startswith("invalid JSON"), f"ticks_errors row: {lines[0]!r}"

    # \d: the relations (Schema|Name|Type|Owner).
    relations = [line.split("|") for line in psql_ok(server, "-c", r"\d")]
    assert [(r[0], r[1], r[2]) for r in relations] == [
        ("public", "ticks", "table"),
        ("public", "ticks_errors", "table"),
    ], f"\\d: {relations}"

    # \d ticks: the columns (Column|Type|Collation|Nullable|Default).
    columns = [line.split("|") for line in psql_ok(server, "-c", r"\d ticks")]
    assert [(c[0], c[1], c[3]) for c in columns] == [
        ("ticker", "text", "not null"),
        ("price", "double precision", ""),
        ("volume", "bigint", ""),
        ("ts", "timestamp without time zone", "not null"),
        ("ok", "boolean", ""),
        ("_shard", "integer", "not null"),
        ("_seq", "bigint", "not null"),
        ("_ingested_at", "timestamp with time zone", "not null"),
    ], f"\\d ticks: {columns}"
    columns = [line.split("|") for line in psql_ok(server, "-c", r"\d ticks_errors")]
    assert [(c[0], c[1], c[3]) for c in columns] == [
        ("raw", "text", "not null"),
        ("reason", "text", "not null"),
        ("_shard", "integer", "not null"),
        ("_seq", "bigint", "not null"),
        ("_ingested_at", "timestamp with time zone", "not null"),
    ], f"\\d ticks_errors: {columns}"

    # Without ON_ERROR_STOP psql reports the error and goes on, on the same connection.
    out = psql(
        server, "-c", "SELECT * FROM nope", "-c", "SELECT 1", "-c", "SELECT count(*) FROM ticks",
        stop_on_error=False,
    )
    assert out.stderr.startswith("ERROR:  ") and "nope" in out.stderr, f"stderr: {out.stderr!r}"
    assert out.stdout.splitlines() == ["1", "3"], f"stdout after the error: {out.stdout!r} (stderr {out.stderr!r})"
    assert out.returncode == 0, f"exit {out.returncode}"

    # With ON_ERROR_STOP psql stops at the error and exits non-zero.
    out = psql(server, "-c", "SELECT * FROM nope", "-c", "SELECT 1")
    assert out.returncode != 0, f"ON_ERROR_STOP: exit 0, stdout {out.stdout!r}"
    assert out.stdout == "", f"ON_ERROR_STOP: the next command ran: {out.stdout!r}"
    assert "ERROR:  " in out.stderr and "nope" in out.stderr, f"stderr: {out.stderr!r}"


# --------------------------------------------------------------------------------------------
# psycopg
# --------------------------------------------------------------------------------------------


def test_psql_shows_where_a_syntax_error_is(server):
    """psql prints the line of a syntax error and a caret under its place, from the position the
    server sends (PostgreSQL's error field P): for queries, which datafusion-postgres parses,
    and for the dialect's statements, which Sluice parses."""
    for sql, line, caret in [
        ("SELEC 1", "LINE 1: SELEC 1", "        ^"),
        ("SELECT 1\n  FROM ticks GROUP price", "LINE 2:   FROM ticks GROUP price",
         " " * (8 + len("  FROM ticks ")) + "^"),
        ("CREATE STREAM s WITH (shards = 0)", "LINE 1: CREATE STREAM s WITH (shards = 0)",
         " " * (8 + len("CREATE STREAM s WITH (")) + "^"),
    ]:
        out = psql(server, "-c", sql)
        assert out.returncode != 0, out
        lines = out.stderr.splitlines()
        assert lines[0].startswith("ERROR:"), out.stderr
        assert line in lines, f"{sql!r}: {out.stderr}"
        assert lines[lines.index(line) + 1] == caret, f"{sql!r}: {out.stderr}"


def test_psycopg_gets_postgres_types_and_python_values(server):
    create_ticks(server)
    before = datetime.now(UTC)
    ingest(server, ndjson(RECORDS, [BAD_LINE]), 4)
    after = datetime.now(UTC)

    with connect(server) as conn:
        for prepare in (False, True):  # simple protocol (text), then extended
            cur = conn.execute(
                "SELECT ticker, price, volume, ts, ok, _shard, _seq, _ingested_at FROM ticks ORDER BY ticker",
                prepare=prepare,
            )
            got = [(d.name, d.type_code) for d in cur.description]
            assert got == [
                ("ticker", TEXT), ("price", FLOAT8), ("volume", INT8), ("ts", TIMESTAMP), ("ok", BOOL),
                ("_shard", INT4), ("_seq", INT8), ("_ingested_at", TIMESTAMPTZ),
            ], f"prepare={prepare}: description {got}"
            rows = cur.fetchall()
            assert [r[:5] for r in rows] == [
                ("AAPL", 187.25, 100, datetime(2024, 3, 1, 9, 30), True),
                ("MSFT", 402.5, 40, datetime(2024, 3, 1, 9, 30, 1, 500_000), False),
                ("O'Brien", None, 75, datetime(2024, 3, 1, 9, 30, 2), None),
            ], f"prepare={prepare}: rows {rows}"
            for row in rows:
                ticker, _, volume, ts, ok, shard, seq, ingested_at = row
                assert type(volume) is int and (ok is None or type(ok) is bool), row
                assert ts.tzinfo is None, f"ts is a TIMESTAMP, without a zone: {ts!r}"
                assert shard in (0, 1) and type(seq) is int and seq >= 0, row
                assert ingested_at.utcoffset() == timedelta(0), f"_ingested_at should be in UTC: {ingested_at!r}"
                assert before - timedelta(seconds=1) <= ingested_at <= after + timedelta(seconds=1), (
                    f"_ingested_at {ingested_at} is not between {before} and {after}"
                )

            cur = conn.execute("SELECT raw, reason, _shard, _seq, _ingested_at FROM ticks_errors", prepare=prepare)
            assert [d.type_code for d in cur.description] == [TEXT, TEXT, INT4, INT8, TIMESTAMPTZ], cur.description
            errors_rows = cur.fetchall()
            assert len(errors_rows) == 1 and errors_rows[0][0] == "not json", errors_rows
            assert errors_rows[0][1].startswith("invalid JSON"), errors_rows

            cur = conn.execute(
                "SELECT CAST(12.34 AS DECIMAL(10,2)) AS d, DATE '2024-02-29' AS day, CAST(7 AS SMALLINT) AS s, "
                "CAST(1.5 AS REAL) AS r, NULL AS n, CAST(NULL AS BIGINT) AS nb",
                prepare=prepare,
            )
            codes = [d.type_code for d in cur.description]
            assert codes[:4] == [NUMERIC, DATE, INT2, FLOAT4] and codes[5] == INT8, f"prepare={prepare}: {codes}"
            row = cur.fetchone()
            assert row == (Decimal("12.34"), date(2024, 2, 29), 7, 1.5, None, None), f"prepare={prepare}: {row!r}"
            assert type(row[0]) is Decimal and type(row[1]) is date and type(row[2]) is int, row


def test_psycopg_parameters_are_bound_not_spliced(server):
    loaded(server)
    with connect(server) as conn:
        assert query(conn, "SELECT ticker FROM ticks WHERE volume > %s ORDER BY ticker", (50,)) == [
            ("AAPL",), ("O'Brien",)
        ]
        row = query(conn, "SELECT %s::bigint + 1, %s::text, %s::double precision, %s::boolean", (41, "x", 2.5, True))
        assert row == [(42, "x", 2.5, True)], row

        # A quote in a text parameter is data: it is neither an error nor SQL.
        assert query(conn, "SELECT volume FROM ticks WHERE ticker = %s", ("O'Brien",)) == [(75,)]
        assert query(conn, "SELECT count(*) FROM ticks WHERE ticker = %s", ("x' OR '1'='1",)) == [(0,)]
        assert query(conn, "SELECT %s::text", ("it's; DROP STREAM ticks; --",)) == [("it's; DROP STREAM ticks; --",)]

        # One named parameter used twice is one $1 on the wire.
        rows = query(
            conn, "SELECT ticker FROM ticks WHERE volume >= %(v)s AND volume < %(v)s + 30 ORDER BY ticker", {"v": 60}
        )
        assert rows == [("O'Brien",)], rows

        # A timestamp parameter, without a zone and with one (an instant compared as UTC).
        for after in (datetime(2024, 3, 1, 9, 30, 1), datetime(2024, 3, 1, 10, 30, 1, tzinfo=timezone(timedelta(hours=1)))):
            rows = query(conn, "SELECT ticker FROM ticks WHERE ts > %s ORDER BY ticker", (after,))
            assert rows == [("MSFT",), ("O'Brien",)], f"ts > {after!r}: {rows}"

        # One prepared statement, bound again and again.
        for threshold, expected in [(50, 2), (90, 1), (10, 3), (1000, 0)]:
            rows = query(conn, "SELECT count(*) FROM ticks WHERE volume > %s", (threshold,), prepare=True)
            assert rows == [(expected,)], f"volume > {threshold}: {rows}"

    # Still three rows: nothing was spliced into SQL.
    assert server.sql("SELECT count(*) FROM ticks")["rows"] == [[3]]


# Statements that fail, the SQLSTATE they fail with, in both protocols.
FAILING = [
    ("SELECT * FROM nope", "42P01"),
    ("SELECT nope FROM ticks", "42703"),
    ("SELEC 1", "42601"),
    ("DROP TABLE ticks", "42501"),
    ("INSERT INTO ticks (ticker, ts) VALUES ('X', now())", "42501"),
    ("INSERT INTO ticks_errors SELECT * FROM ticks_errors", "42501"),
    ("CREATE TABLE x (a INT)", "42501"),
    ("SET datafusion.execution.batch_size = 1", "42501"),
]
BATCH_SIZE = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'"


def test_psycopg_errors_carry_sqlstates_and_leave_the_connection_usable(server):
    loaded(server)
    with connect(server) as conn:
        batch_size = query(conn, BATCH_SIZE)
        assert len(batch_size) == 1, batch_size
        # Autocommit: each error ends its statement; the connection goes on.
        for statement, sqlstate in FAILING:
            for prepare in (False, True):
                expect_sqlstate(conn, statement, sqlstate, prepare=prepare)
                assert conn.info.transaction_status == TransactionStatus.IDLE, (
                    f"{statement!r}: transaction status {conn.info.transaction_status!r} after the error"
                )
                assert count_ticks(conn) == 3, f"after {statement!r} (prepare={prepare})"
        # The same with a parameter: an error in Bind/Execute rather than in a simple query.
        expect_sqlstate(conn, "SELECT * FROM nope WHERE a = %s", "42P01", params=(1,))
        expect_sqlstate(conn, "SELECT nope FROM ticks WHERE volume > %s", "42703", params=(1,))
        assert count_ticks(conn) == 3

        # Stream statements fail in the simple protocol (a ClientCursor) with their own codes.
        cur = psycopg.ClientCursor(conn)
        expect_sqlstate(conn, TICKS, "42P07", cursor=cur)
        expect_sqlstate(conn, "DROP STREAM nope", "42P01", cursor=cur)
        cur.execute("SELECT count(*) FROM ticks")
        assert cur.fetchall() == [(3,)]

        # Nothing changed: the tables are there, no table x, the option is as it was.
        expect_sqlstate(conn, "SELECT * FROM x", "42P01")
        assert query(conn, BATCH_SIZE) == batch_size, "SET datafusion.… changed the shared session"
        assert query(conn, "SELECT count(*) FROM ticks_errors") == [(1,)]
        assert psql_ok(server, "-c", "SHOW STREAMS")[0].split("|")[0] == "ticks"

    # In a transaction (psycopg's default): an error aborts it; rollback() and go on.
    with connect(server, autocommit=False) as conn:
        assert count_ticks(conn) == 3
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        for statement, sqlstate in FAILING:
            for prepare in (False, True):
                expect_sqlstate(conn, statement, sqlstate, prepare=prepare)
                assert conn.info.transaction_status == TransactionStatus.INERROR, (
                    f"{statement!r}: transaction status {conn.info.transaction_status!r}, expected INERROR"
                )
                conn.rollback()
                assert conn.info.transaction_status == TransactionStatus.IDLE
                assert count_ticks(conn) == 3, f"after {statement!r} (prepare={prepare}) and rollback"
        conn.commit()

        # `with conn.transaction()` rolls back by itself.
        with pytest.raises(errors.UndefinedTable):
            with conn.transaction():
                assert count_ticks(conn) == 3
                conn.execute("SELECT * FROM nope")
        assert count_ticks(conn) == 3
        conn.commit()


def test_an_aborted_transaction_refuses_statements_with_25P02(server):
    loaded(server)
    with connect(server, autocommit=False) as conn:
        expect_sqlstate(conn, "SELECT * FROM nope", "42P01")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT count(*) FROM ticks")
        conn.rollback()
        assert count_ticks(conn) == 3


def test_postgres_and_http_answer_the_same_rows(server):
    create_ticks(server)
    events = gen_ticks(300, seed=11)
    ingest(server, ndjson(events, [BAD_LINE, b"{\"ticker\": 5}", b"[1, 2]"]), 303, key="ticker")

    statements = [
        "SELECT ticker, price, volume, ts, ok FROM ticks ORDER BY _shard, _seq",
        "SELECT ticker, count(*) AS trades, sum(volume) AS volume, min(price) AS low, max(price) AS high, "
        "avg(price) AS mean FROM ticks GROUP BY ticker ORDER BY ticker",
        "SELECT _shard, count(*) AS n, min(_seq) AS first, max(_seq) AS last FROM ticks "
        "GROUP BY _shard ORDER BY _shard",
        "SELECT date_trunc('minute', ts) AS minute, count(*) AS n, sum(CASE WHEN ok THEN 1 ELSE 0 END) AS oks "
        "FROM ticks GROUP BY 1 ORDER BY 1",
        "SELECT ticker, _ingested_at FROM ticks WHERE price IS NULL ORDER BY _shard, _seq",
        "SELECT raw, reason FROM ticks_errors ORDER BY raw",
        "SELECT count(*) FROM ticks WHERE ticker = 'O''Brien' AND ok",
    ]
    with connect(server) as conn:
        for statement in statements:
            names, expected = http_rows(server, statement)
            assert expected, f"{statement}: no rows over HTTP (a vacuous comparison)"
            for prepare in (False, True):
                cur = conn.execute(statement, prepare=prepare)
                got = cur.fetchall()
                assert [d.name for d in cur.description] == names, f"{statement}: column names differ"
                assert len(got) == len(expected), f"{statement}: {len(got)} rows over PG, {len(expected)} over HTTP"
                for i, (g, e) in enumerate(zip(got, expected)):
                    assert len(g) == len(e) and all(same_value(a, b) for a, b in zip(g, e)), (
                        f"{statement} (prepare={prepare}) row {i}: PG {g!r} != HTTP {e!r}"
                    )
    # The sample did cover what it should: several shards, NULLs, errors.
    assert len(http_rows(server, statements[2])[1]) == 2, "the records should have reached both shards"


def test_many_rows_over_postgres(server):
    create_ticks(server)
    n = 20_000
    events = gen_ticks(n, seed=5)
    ingest(server, ndjson(events), n, key="ticker")
    volume = sum(e["volume"] for e in events)

    with connect(server) as conn:
        # Right after the acknowledgement: no waiting for the raw pipeline's commits.
        assert query(conn, "SELECT count(*), sum(volume) FROM ticks") == [(n, volume)]
        assert query(conn, "SELECT count(*), sum(volume) FROM ticks", prepare=True) == [(n, volume)]

        cur = conn.execute("SELECT ticker, volume, _shard, _seq FROM ticks")
        rows = cur.fetchall()
        assert len(rows) == n, f"fetched {len(rows)} rows, expected {n}"
        assert sum(r[1] for r in rows) == volume
        assert len({(r[2], r[3]) for r in rows}) == n, "(_shard, _seq) should be unique"
        assert sorted((r[0], r[1]) for r in rows) == sorted((e["ticker"], e["volume"]) for e in events)

        rows = query(conn, "SELECT ticker, volume FROM ticks WHERE volume > %s", (5000,), prepare=True)
        assert len(rows) == sum(1 for e in events if e["volume"] > 5000)


# --------------------------------------------------------------------------------------------
# Stream statements over PostgreSQL
# --------------------------------------------------------------------------------------------


def test_stream_statements_over_psql_and_a_client_cursor(server):
    assert psql_ok(server, "-c", TICKS) == ["CREATE STREAM"]
    with connect(server) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("CREATE STREAM quotes (symbol TEXT NOT NULL, bid DOUBLE) WITH (shards = 1)")
        assert cur.statusmessage == "CREATE STREAM", cur.statusmessage

        cur.execute("SHOW STREAMS")
        names = [d.name for d in cur.description]
        assert names[:2] == ["name", "shards"], f"SHOW STREAMS columns: {names}"
        assert [(r[0], r[1]) for r in cur.fetchall()] == [("quotes", 1), ("ticks", 2)]

        cur.execute("DESCRIBE quotes")
        assert [d.name for d in cur.description] == ["column_name", "data_type", "is_nullable"]
        assert cur.fetchall() == [("symbol", "TEXT", "NO"), ("bid", "DOUBLE", "YES")]

    streams = [line.split("|") for line in psql_ok(server, "-c", "SHOW STREAMS")]
    assert [(s[0], s[1]) for s in streams] == [("quotes", "1"), ("ticks", "2")], f"SHOW STREAMS: {streams}"
    assert psql_ok(server, "-c", "DESCRIBE ticks") == [
        "ticker|TEXT|NO", "price|DOUBLE|YES", "volume|BIGINT|YES", "ts|TIMESTAMP|NO", "ok|BOOLEAN|YES",
    ]

    out = psql(server, "-c", TICKS)
    assert out.returncode != 0 and "ERROR:  " in out.stderr and "already exists" in out.stderr, (
        f"a second CREATE STREAM ticks: exit {out.returncode}, stderr {out.stderr!r}"
    )

    wait_for_tables(server, "ticks")
    wait_for_tables(server, "quotes")
    ingest(server, ndjson(RECORDS), 3)
    assert psql_ok(server, "-c", "SELECT count(*) FROM ticks") == ["3"]

    assert psql_ok(server, "-c", "DROP STREAM ticks") == ["DROP STREAM"]
    assert [line.split("|")[0] for line in psql_ok(server, "-c", "SHOW STREAMS")] == ["quotes"]
    # The tables go with the stream (DROP STREAM returns once they are gone).
    with connect(server) as conn:
        for table in ("ticks", "ticks_errors"):
            deadline = time.monotonic() + 5
            while True:
                try:
                    rows = query(conn, f"SELECT count(*) FROM {table}")
                except errors.UndefinedTable:
                    break
                assert time.monotonic() < deadline, f"{table} still answers 5 s after DROP STREAM: {rows}"
                time.sleep(0.1)
        expect_sqlstate(conn, "SELECT count(*) FROM ticks", "42P01", prepare=True)
        assert query(conn, "SELECT count(*) FROM quotes") == [(0,)]
        relations = [line.split("|")[1] for line in psql_ok(server, "-c", r"\d")]
        assert relations == ["quotes", "quotes_errors"], f"\\d after DROP STREAM ticks: {relations}"

        # A stream of the same name again: a new, empty stream.
        cur = psycopg.ClientCursor(conn)
        cur.execute(TICKS)
        cur.execute("DROP STREAM quotes")
        assert cur.statusmessage == "DROP STREAM", cur.statusmessage
        cur.execute("SHOW STREAMS")
        assert [r[0] for r in cur.fetchall()] == ["ticks"]
    wait_for_tables(server, "ticks")
    assert psql_ok(server, "-c", "SELECT count(*) FROM ticks") == ["0"]

    # In the extended protocol stream statements are refused, never run.
    with connect(server) as conn:
        # The extended protocol parses with datafusion-postgres' parser, which does not know
        # CREATE STREAM; the other stream statements parse and are refused with a pointer to
        # the simple protocol.
        expect_sqlstate(conn, "CREATE STREAM other (a TEXT)", "42601", prepare=True)
        for statement in ("DROP STREAM ticks", "DESCRIBE ticks", "SHOW STREAMS"):
            expect_sqlstate(conn, statement, "0A000", prepare=True)
    assert [line.split("|")[0] for line in psql_ok(server, "-c", "SHOW STREAMS")] == ["ticks"]


def test_show_streams_in_the_extended_protocol_does_not_answer_wrongly(server):
    create_ticks(server)
    with connect(server) as conn:
        try:
            cur = conn.execute("SHOW STREAMS", prepare=True)
        except psycopg.Error:
            return  # refused: fine
        rows = cur.fetchall()
        assert [d.name for d in cur.description][:2] == ["name", "shards"] and rows[0][:2] == ("ticks", 2), (
            f"SHOW STREAMS (extended): {[d.name for d in cur.description]} {rows}"
        )


def test_drop_stream_after_prepared_statements_in_psycopg(server):
    loaded(server)
    with connect(server) as conn:
        # psycopg prepares a query it runs five times (prepare_threshold).
        for _ in range(6):
            assert count_ticks(conn) == 3
        conn.execute("DROP STREAM ticks")
        assert conn.execute("SHOW STREAMS").fetchall() == []


def test_a_new_streams_tables_answer_at_once(server):
    with connect(server) as conn:
        cur = psycopg.ClientCursor(conn)
        for name in ("s1", "s2", "s3"):
            cur.execute(f"CREATE STREAM {name} (a TEXT NOT NULL) WITH (shards = 1)")
            status, _, answer = server.ingest(name, b'{"a": "x"}\n')
            assert status == 200 and answer.get("accepted") == 1, answer
            assert query(conn, f"SELECT a FROM {name}") == [("x",)], name
            assert query(conn, f"SELECT count(*) FROM {name}_errors") == [(0,)], name


def test_lake_writes_and_time_travel_through_both_protocols(server):
    """CREATE TABLE … AS, INSERT with parameters, time travel and DROP TABLE from psycopg (simple
    and extended protocol) and psql; each write is a Delta commit, i.e. a version."""
    loaded(server)
    with connect(server) as conn:
        cur = conn.execute(
            "CREATE TABLE movers PARTITIONED BY (ticker) AS SELECT ticker, volume FROM ticks", prepare=True
        )
        assert cur.statusmessage == "SELECT 3" and cur.rowcount == 3
        cur = conn.execute("INSERT INTO movers VALUES (%s, %s), (%s, %s)", ["NEW", 5, "NEW", 6])
        assert cur.statusmessage == "INSERT 0 2"
        assert query(conn, "SELECT sum(volume) FROM movers") == [(226,)]
        for prepare in (False, True):
            assert query(conn, "SELECT count(*) FROM movers VERSION AS OF 0", prepare=prepare) == [(3,)]
            assert query(
                conn, "SELECT count(*) FROM movers VERSION AS OF 1 WHERE ticker = %s", ["NEW"], prepare=prepare
            ) == [(2,)]
        expect_sqlstate(conn, "CREATE TABLE movers AS SELECT 1 AS a", "42P07")
        expect_sqlstate(conn, "INSERT INTO ticks (ticker, ts) VALUES ('X', now())", "42501")
        expect_sqlstate(conn, "SELECT * FROM movers VERSION AS OF 9", "22023")
        assert count_ticks(conn) == 3, "the connection is still usable"
    assert psql_ok(server, "-c", "SELECT count(*) FROM movers TIMESTAMP AS OF '2999-01-01'") == ["5"]
    assert psql_ok(server, "-c", "OPTIMIZE movers") == ["0|0"]
    assert psql_ok(server, "-c", "DROP TABLE movers") == ["DROP TABLE"]
    assert not (server.data_dir / "lake" / "movers").exists()
