"""psqlODBC (Debian's `odbc-postgresql`, the driver Tableau and Power BI use on Linux) through
unixODBC and pyodbc, with their defaults: autocommit off, so every statement runs inside a
transaction the driver opens, with a SAVEPOINT before each statement to roll back to when it
fails; parameters bound with the extended protocol.

Against a server on loopback and one with users and TLS (the driver verifying the server's
certificate through libpq's options).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyodbc
import pytest

from conftest import KINDS, Door

DRIVER = "PostgreSQL Unicode"


def connect(door: Door) -> pyodbc.Connection:
    params = {
        "Driver": "{" + DRIVER + "}",
        "Server": "127.0.0.1",
        "Port": door.server.pg_port,
        "Database": "sluice",
        "UID": door.user,
    }
    if door.cert:
        params.update(PWD=door.password, SSLmode="verify-full", pqopt=f"{{sslrootcert={door.cert}}}")
    return pyodbc.connect(";".join(f"{k}={v}" for k, v in params.items()), timeout=10)


def test_psqlodbc_queries_in_transactions_and_reads_the_catalog(door):
    assert DRIVER in pyodbc.drivers(), pyodbc.drivers()
    conn = connect(door)
    try:
        assert conn.autocommit is False
        assert conn.getinfo(pyodbc.SQL_DBMS_NAME) == "PostgreSQL"
        assert conn.getinfo(pyodbc.SQL_DBMS_VER).startswith("16.")
        cur = conn.cursor()

        # A parameterized query, typed. psqlODBC's default BoolsAsChar gives booleans as '1' and
        # '0', against PostgreSQL as here.
        cur.execute("SELECT ticker, price, volume, qty, amount, day, ok, ts, settled FROM ticks "
                    "WHERE qty >= ? ORDER BY ticker", 3)
        rows = [tuple(r) for r in cur.fetchall()]
        assert [r[0] for r in rows] == ["AAPL", "MSFT", "NVDA"]
        assert rows[0][1:7] == (187.25, 100, 3, Decimal("12.34"), dt.date(2024, 3, 1), "1")
        assert rows[1][2] == 5_000_000_000 and rows[1][4] == Decimal("-0.50") and rows[1][6] == "0"
        assert rows[2][1:7] == (None, None, 3, None, None, None)
        assert [r[7] for r in rows] == [dt.datetime(2024, 3, 1, 9, 30),
                                        dt.datetime(2024, 3, 1, 9, 30, 1, 500_000),
                                        dt.datetime(2024, 3, 1, 9, 0)]
        # A TIMESTAMPTZ as ODBC gives one (SQL_TYPE_TIMESTAMP has no zone): in the session's
        # zone, UTC.
        assert [r[8] for r in rows] == [dt.datetime(2024, 3, 1, 9, 0), None, None]
        kinds = {d[0]: d[1] for d in cur.description}
        assert kinds["qty"] is int and kinds["volume"] is int and kinds["amount"] is Decimal
        assert kinds["ok"] is str and kinds["day"] is dt.date and kinds["ts"] is dt.datetime

        # An error rolls back to the driver's savepoint; the transaction and the connection go on.
        with pytest.raises(pyodbc.ProgrammingError, match="nope"):
            cur.execute("SELECT * FROM nope")
        assert cur.execute("SELECT count(*) FROM ticks WHERE ticker = ?", "AAPL").fetchval() == 1
        conn.commit()
        assert cur.execute("SELECT 1").fetchval() == 1
        conn.rollback()

        # The catalog calls BI tools make: SQLTables, SQLColumns, SQLPrimaryKeys, SQLStatistics.
        tables = {t.table_name: t for t in cur.tables(schema="public")}
        assert {"ticks", "ticks_errors"} <= set(tables)
        assert tables["ticks"].table_type == "TABLE"
        columns = [(c.column_name, c.type_name, c.nullable) for c in cur.columns(table="ticks")]
        assert columns[:9] == [
            ("ticker", "text", 0), ("price", "float8", 1), ("volume", "int8", 1),
            ("qty", "int4", 1), ("amount", "numeric", 1), ("day", "date", 1),
            ("ok", "bool", 1), ("ts", "timestamp", 0), ("settled", "timestamptz", 1),
        ]
        assert list(cur.primaryKeys("ticks")) == []
        assert [s for s in cur.statistics("ticks") if s.index_name] == []
        conn.commit()
    finally:
        conn.close()


def test_psqlodbc_reads_every_type_with_its_size_and_scale(door):
    conn = connect(door)
    try:
        cur = conn.cursor()
        # SQLColumns: what Tableau and Power BI size their fields by.
        columns = {c.column_name: (c.type_name, c.data_type, c.column_size, c.decimal_digits)
                   for c in cur.columns(table="orders")}
        assert columns["id"] == ("int2", pyodbc.SQL_SMALLINT, 5, 0)
        assert columns["attrs"][0] == "json"
        assert columns["total"] == ("numeric", pyodbc.SQL_NUMERIC, 10, 3)

        cur.execute(KINDS)
        described = {d[0]: (d[1], d[4], d[5]) for d in cur.description}
        assert described["total"] == (Decimal, 10, 3) and described["id"][0] is int
        # psqlODBC gives json, arrays and intervals as their text, bytea as bytes.
        assert [tuple(r) for r in cur.fetchall()] == [
            (1, '{"who": "ann", "tags": ["a", "b"]}', Decimal("1.500"), "{1,1}", '["a", "b"]', "ann",
             "1 day 02:00:00", b"ab"),
            (2, "[1, 2]", None, "{2,2}", None, None, "1 day 02:00:00", b"ab"),
            (3, None, Decimal("-1234567.125"), "{3,3}", None, None, "1 day 02:00:00", b"ab"),
        ]
        conn.commit()
    finally:
        conn.close()
