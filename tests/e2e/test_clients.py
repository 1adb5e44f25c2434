"""The clients analysts and their tools use, unmodified, against the PostgreSQL door: SQLAlchemy
(with psycopg 3 and psycopg2; its reflection and pandas.read_sql, as Superset and notebooks use
them), psycopg2 (named cursors: DECLARE, FETCH, CLOSE), asyncpg (binary protocol, prepared
statements); and transactions as BI drivers send them (BEGIN, SAVEPOINT, RELEASE, ROLLBACK TO,
SET, SHOW).

Each also reads the rest of PostgreSQL's types (conftest's KINDS over the stream orders): int2,
json (parsed where the driver parses json), numeric with its precision and scale, arrays,
interval, bytea — as values, as the result's description, and as the catalog says them.

Every client runs against two servers: one on loopback without users, and one with users and
TLS (the client verifying the server's certificate, logging in with a password). Each connects,
runs a parameterized query, checks the types of what comes back, survives an error, and makes
the catalog calls its tools make.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from decimal import Decimal

import asyncpg
import pandas as pd
import psycopg
import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa
from psycopg import errors
from psycopg.pq import TransactionStatus

from conftest import KINDS, Door

UTC = dt.timezone.utc
# The rows as Python values: ts (a TIMESTAMP) the UTC wall time, without a zone; settled (a
# TIMESTAMPTZ) an instant.
EXPECTED = {
    "AAPL": (187.25, 100, 3, Decimal("12.34"), dt.date(2024, 3, 1), True, dt.datetime(2024, 3, 1, 9, 30),
             dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),
    "MSFT": (402.5, 5_000_000_000, 7, Decimal("-0.50"), dt.date(2024, 3, 2), False,
             dt.datetime(2024, 3, 1, 9, 30, 1, 500_000), None),
    "NVDA": (None, None, 3, None, None, None, dt.datetime(2024, 3, 1, 9, 0), None),
}
COLUMNS = "ticker, price, volume, qty, amount, day, ok, ts, settled"


def check_rows(rows) -> None:
    """`rows` of COLUMNS are RECORDS, typed."""
    got = {row[0]: tuple(row[1:9]) for row in rows}
    assert got == EXPECTED
    for row in rows:
        assert isinstance(row[3], int) and not isinstance(row[3], bool)
        assert row[4] is None or isinstance(row[4], Decimal)
        assert row[5] is None or type(row[5]) is dt.date
        assert isinstance(row[7], dt.datetime) and row[7].tzinfo is None, row
        assert row[8] is None or row[8].utcoffset() is not None, row


def sqlalchemy_engine(door: Door, driver: str) -> sa.Engine:
    auth = f"{door.user}:{door.password}" if door.password else door.user
    url = f"postgresql+{driver}://{auth}@127.0.0.1:{door.server.pg_port}/sluice"
    args = dict(sslmode="verify-full", sslrootcert=str(door.cert)) if door.cert else {}
    return sa.create_engine(url, connect_args=args)


async def asyncpg_connect(door: Door) -> asyncpg.Connection:
    ssl_context = ssl.create_default_context(cafile=str(door.cert)) if door.cert else False
    return await asyncpg.connect(host="127.0.0.1", port=door.server.pg_port, user=door.user,
                                 password=door.password, database="sluice", ssl=ssl_context)


# --------------------------------------------------------------------------------------------
# SQLAlchemy, and pandas through it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy_connects_reflects_and_pandas_reads(door, driver):
    engine = sqlalchemy_engine(door, driver)
    try:
        with engine.connect() as conn:
            # The dialect reads the major version from version().
            assert engine.dialect.server_version_info[:2] == (16, 6)
            rows = conn.execute(sa.text(f"SELECT {COLUMNS} FROM ticks WHERE qty >= :q"), {"q": 3}).all()
            check_rows(rows)

            # An error, and the connection goes on (SQLAlchemy rolls the transaction back).
            with pytest.raises(sa.exc.ProgrammingError, match="nope"):
                conn.execute(sa.text("SELECT * FROM nope"))
            conn.rollback()
            assert conn.execute(sa.text("SELECT count(*) FROM ticks")).scalar() == 3
            conn.commit()

            # A nested transaction (a SAVEPOINT) rolled back after an error; the outer one lives.
            with conn.begin():
                nested = conn.begin_nested()
                with pytest.raises(sa.exc.ProgrammingError):
                    conn.execute(sa.text("SELECT * FROM nope"))
                nested.rollback()
                assert conn.execute(sa.text("SELECT count(*) FROM ticks WHERE ok")).scalar() == 1

        inspector = sa.inspect(engine)
        assert "public" in inspector.get_schema_names()
        assert {"ticks", "ticks_errors"} <= set(inspector.get_table_names())
        assert inspector.has_table("ticks")
        columns = {c["name"]: c for c in inspector.get_columns("ticks")}
        assert list(columns)[:9] == COLUMNS.split(", ")
        kinds = {name: type(c["type"]) for name, c in columns.items()}
        assert kinds["ticker"] is sa.TEXT and kinds["qty"] is sa.INTEGER and kinds["volume"] is sa.BIGINT
        assert kinds["ok"] is sa.BOOLEAN and kinds["day"] is sa.DATE
        assert isinstance(columns["amount"]["type"], sa.NUMERIC)
        assert isinstance(columns["price"]["type"], sa.Float)
        assert isinstance(columns["ts"]["type"], sa.TIMESTAMP) and not columns["ts"]["type"].timezone
        assert isinstance(columns["settled"]["type"], sa.TIMESTAMP) and columns["settled"]["type"].timezone
        assert columns["ticker"]["nullable"] is False and columns["price"]["nullable"] is True
        assert all(c["default"] is None for c in columns.values())
        # Delta tables have no keys, indexes or constraints.
        assert inspector.get_pk_constraint("ticks")["constrained_columns"] == []
        assert inspector.get_foreign_keys("ticks") == []
        assert inspector.get_indexes("ticks") == []
        assert inspector.get_unique_constraints("ticks") == []
        assert inspector.get_check_constraints("ticks") == []

        metadata = sa.MetaData()
        metadata.reflect(engine, only=["ticks"])
        ticks = metadata.tables["ticks"]
        with engine.connect() as conn:
            query = sa.select(ticks.c.ticker).where(ticks.c.qty == 7)
            assert conn.execute(query).scalars().all() == ["MSFT"]

        frame = pd.read_sql(sa.text(f"SELECT {COLUMNS} FROM ticks WHERE qty = :q ORDER BY ticker"),
                            engine, params={"q": 3})
        assert list(frame["ticker"]) == ["AAPL", "NVDA"]
        assert str(frame["qty"].dtype) == "int64" and str(frame["ok"].dtype) == "object"
        assert frame["price"].isna().tolist() == [False, True]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# psycopg2
# --------------------------------------------------------------------------------------------


def test_psycopg2_reads_through_a_named_cursor(door):
    with psycopg2.connect(**door.libpq) as conn:
        # A named cursor is a server-side cursor: DECLARE … CURSOR, FETCH n, CLOSE.
        with conn.cursor("ticks_by_ticker") as cur:
            cur.itersize = 2
            cur.execute(f"SELECT {COLUMNS} FROM ticks WHERE qty > %s ORDER BY ticker", (0,))
            check_rows(list(cur))
        # The same by hand, as tools that page through results send it.
        with conn.cursor() as cur:
            cur.execute("DECLARE page CURSOR FOR SELECT ticker FROM ticks ORDER BY ticker")
            cur.execute("FETCH 2 FROM page")
            assert cur.fetchall() == [("AAPL",), ("MSFT",)]
            cur.execute("FETCH 2 FROM page")
            assert cur.fetchall() == [("NVDA",)]
            cur.execute("CLOSE page")
        conn.commit()

        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.UndefinedTable):
                cur.execute("SELECT * FROM nope")
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = %s ORDER BY 1", ("public",))
            assert {"ticks", "ticks_errors"} <= {r[0] for r in cur.fetchall()}
            cur.execute("SELECT count(*) FROM ticks WHERE ticker = %(t)s AND ok = %(ok)s",
                        {"t": "AAPL", "ok": True})
            assert cur.fetchone() == (1,)


# --------------------------------------------------------------------------------------------
# asyncpg
# --------------------------------------------------------------------------------------------


def test_asyncpg_prepares_binds_and_decodes_binary(door):
    async def run():
        conn = await asyncpg_connect(door)
        try:
            statement = await conn.prepare(f"SELECT {COLUMNS} FROM ticks WHERE qty >= $1")
            check_rows([tuple(r) for r in await statement.fetch(3)])
            assert [t.name for t in statement.get_parameters()] == ["int4"]
            assert await conn.fetchval("SELECT count(*) FROM ticks WHERE ticker = $1", "MSFT") == 1

            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                await conn.fetch("SELECT * FROM nope")
            assert await conn.fetchval("SELECT count(*) FROM ticks") == 3

            async with conn.transaction():
                assert await conn.fetchval("SELECT max(volume) FROM ticks") == 5_000_000_000
            names = await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = $1 ORDER BY ordinal_position", "ticks")
            assert [r[0] for r in names][:9] == COLUMNS.split(", ")
        finally:
            await conn.close()

    asyncio.run(run())


# --------------------------------------------------------------------------------------------
# Transactions and settings as BI drivers send them
# --------------------------------------------------------------------------------------------


def expect_sqlstate(conn, statement, sqlstate):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    assert caught.value.sqlstate == sqlstate, f"{statement}: {caught.value.sqlstate} {caught.value}"


def test_transactions_and_savepoints_say_what_postgresql_says(door):
    with psycopg.connect(**door.libpq, autocommit=True) as conn:
        expect_sqlstate(conn, "SAVEPOINT a", "25P01")
        expect_sqlstate(conn, "RELEASE SAVEPOINT a", "25P01")

        conn.execute("BEGIN")
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SAVEPOINT a")
        expect_sqlstate(conn, "SELECT * FROM nope", "42P01")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        # A failed transaction refuses everything but its end (PostgreSQL's 25P02).
        expect_sqlstate(conn, "SELECT 1", "25P02")
        expect_sqlstate(conn, "SAVEPOINT b", "25P02")
        conn.execute("ROLLBACK TO SAVEPOINT a")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (3,)
        conn.execute("SAVEPOINT b")
        conn.execute("RELEASE SAVEPOINT a")  # and b, made after it
        expect_sqlstate(conn, "ROLLBACK TO SAVEPOINT b", "3B001")
        conn.execute("ROLLBACK")
        assert conn.info.transaction_status == TransactionStatus.IDLE

        # psycopg's nested transactions are savepoints, in the extended protocol.
        with conn.transaction():
            with pytest.raises(errors.UndefinedTable):
                with conn.transaction():
                    conn.execute("SELECT * FROM nope")
            assert conn.execute("SELECT count(*) FROM ticks WHERE qty = %s", (3,)).fetchone() == (2,)
        assert conn.info.transaction_status == TransactionStatus.IDLE

        # The settings drivers set and read on connect.
        for statement in ("SET extra_float_digits = 3", "SET application_name = 'tableau'",
                          "SET DateStyle = 'ISO'", "SET client_encoding = 'UTF8'",
                          "SET TIME ZONE 'UTC'", "SET search_path = public",
                          "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"):
            conn.execute(statement)
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                 for name in ("server_version", "server_version_num", "standard_conforming_strings",
                              "transaction_isolation", "application_name")}
        assert shown == {"server_version": "16.6", "server_version_num": "160006",
                         "standard_conforming_strings": "on",
                         "transaction_isolation": "read committed", "application_name": "tableau"}
        version = conn.execute("SELECT version()").fetchone()[0]
        assert version.startswith("PostgreSQL 16.6 (Sluice "), version
        assert conn.execute("SELECT current_setting('server_version_num')").fetchone() == ("160006",)
        with pytest.raises(psycopg.Error, match="unrecognized configuration parameter"):
            conn.execute("SELECT current_setting('no_such_setting')")


# --------------------------------------------------------------------------------------------
# The rest of PostgreSQL's types: int2, json, numeric(p, s), arrays, interval, bytea
# --------------------------------------------------------------------------------------------

SPAN = dt.timedelta(days=1, hours=2)
# KINDS' rows as drivers that parse json give them (psycopg, psycopg2).
KIND_ROWS = [
    (1, {"who": "ann", "tags": ["a", "b"]}, Decimal("1.500"), [1, 1], ["a", "b"], "ann", SPAN, b"ab"),
    (2, [1, 2], None, [2, 2], None, None, SPAN, b"ab"),
    (3, None, Decimal("-1234567.125"), [3, 3], None, None, SPAN, b"ab"),
]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_psycopg_reads_every_type_as_postgresql_describes_it(door, protocol):
    with psycopg.connect(**door.libpq, autocommit=True) as conn:
        with conn.cursor() as cur:
            if protocol == "simple":
                # A query without parameters, through the simple protocol (psycopg's
                # ClientCursor), described by its RowDescription.
                cur = psycopg.ClientCursor(conn)
                cur.execute(KINDS)
            else:
                cur.execute(KINDS + " LIMIT %s", (10,))
            rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in cur.fetchall()]
            assert rows == KIND_ROWS
            described = {d.name: (d.type_code, d.internal_size, d.precision, d.scale)
                         for d in cur.description}
            assert described["id"] == (21, 2, None, None)
            assert described["attrs"][0] == 114 and described["tags"][0] == 114
            assert described["total"] == (1700, None, 10, 3)
            assert described["ids"][0] == 1005 and described["who"][0] == 25
            assert described["span"][:2] == (1186, 16) and described["raw"][0] == 17

        # psql's \d reads the column's type from pg_attribute through format_type.
        types = dict(conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON a.attrelid = c.oid WHERE c.relname = 'orders' AND a.attnum > 0"
        ).fetchall())
        assert {k: types[k] for k in ("id", "attrs", "total")} == {
            "id": "smallint", "attrs": "json", "total": "numeric(10,3)"}
        # information_schema.columns, with PostgreSQL's type names and precisions.
        columns = conn.execute(
            "SELECT c.column_name, c.data_type, c.numeric_precision, c.numeric_scale "
            "FROM information_schema.columns c WHERE c.table_name = %s ORDER BY c.ordinal_position",
            ("orders",)).fetchall()
        assert columns[:3] == [("id", "smallint", 16, 0), ("attrs", "json", None, None),
                               ("total", "numeric", 10, 3)]


def test_psycopg2_reads_every_type(door):
    with psycopg2.connect(**door.libpq) as conn, conn.cursor() as cur:
        cur.execute(KINDS)
        rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur.fetchall()]
        assert rows == KIND_ROWS
        described = {d.name: (d.type_code, d.precision, d.scale) for d in cur.description}
        assert described["total"] == (1700, 10, 3) and described["attrs"][0] == 114


def test_asyncpg_reads_every_type_in_binary(door):
    async def run():
        conn = await asyncpg_connect(door)
        try:
            # Arrays of anything but text make asyncpg look the type up in pg_type (after it
            # reads `jit` and calls set_config).
            statement = await conn.prepare(KINDS)
            types = {a.name: a.type.name for a in statement.get_attributes()}
            assert types == {"id": "int2", "attrs": "json", "total": "numeric", "ids": "int2[]",
                             "tags": "json", "who": "text", "span": "interval", "raw": "bytea"}
            rows = [tuple(r) for r in await statement.fetch()]
            # asyncpg gives json as its text, as it was sent.
            assert rows == [
                (1, '{"who": "ann", "tags": ["a", "b"]}', Decimal("1.500"), [1, 1], '["a", "b"]',
                 "ann", SPAN, b"ab"),
                (2, "[1, 2]", None, [2, 2], None, None, SPAN, b"ab"),
                (3, None, Decimal("-1234567.125"), [3, 3], None, None, SPAN, b"ab"),
            ]
            assert await conn.fetchval("SELECT make_array(total) FROM orders WHERE id = $1", 1) \
                == [Decimal("1.500")]
            assert await conn.fetchval("SELECT array_agg(id ORDER BY id) FROM orders") == [1, 2, 3]
        finally:
            await conn.close()

    asyncio.run(run())


def test_sqlalchemy_reflects_every_type(door):
    engine = sqlalchemy_engine(door, "psycopg")
    try:
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("orders")}
        assert isinstance(columns["id"], sa.SMALLINT)
        assert isinstance(columns["attrs"], sa.JSON)
        assert isinstance(columns["total"], sa.NUMERIC)
        assert (columns["total"].precision, columns["total"].scale) == (10, 3)
        frame = pd.read_sql(sa.text("SELECT id, attrs, total FROM orders ORDER BY id"), engine)
        assert frame["attrs"].tolist()[:2] == [{"who": "ann", "tags": ["a", "b"]}, [1, 2]]
    finally:
        engine.dispose()
