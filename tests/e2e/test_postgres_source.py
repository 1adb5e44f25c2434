"""PostgreSQL sources end to end: Debian's PostgreSQL 15 started by the tests (initdb as the
postgres user, wal_level = logical), random DML on two tables during and after the snapshot,
CREATE SOURCE through Sluice's SQL, and the mirrors compared with SELECT * of the source — across
kill -9 of Sluice and a restart of PostgreSQL; the slot's lag back to zero when idle; DROP SOURCE
dropping the slot."""

from __future__ import annotations

import decimal
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import wait_for

BIN = Path("/usr/lib/postgresql/15/bin")


class Postgres:
    """A PostgreSQL server of its own, as the postgres user, on a free port."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    @property
    def data(self) -> str:
        return str(self.dir / "data")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args):
        out = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], capture_output=True, text=True)
        assert out.returncode == 0, f"{args}: {out.stderr}"

    def start(self):
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c wal_level=logical "
                   "-c max_replication_slots=10 -c max_wal_senders=10 -c fsync=off -c wal_sender_timeout=10s")
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "log", "-w", "-t", "30", "-o", options,
                          "start")

    def stop(self, mode="fast"):
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def connect(self):
        return psycopg.connect(self.url, autocommit=True)

    def value(self, sql: str):
        with self.connect() as c:
            return c.execute(sql).fetchone()[0]

    def rows(self, table: str, key: str) -> dict:
        with self.connect() as c:
            cur = c.execute(f"SELECT * FROM {table}")
            names = [d.name for d in cur.description]
            return {r[names.index(key)]: dict(zip(names, r)) for r in cur.fetchall()}


@pytest.fixture
def postgres():
    pg = Postgres()
    try:
        yield pg
    finally:
        try:
            pg.stop("immediate")
        except AssertionError:
            pass
        shutil.rmtree(pg.dir, ignore_errors=True)


SCHEMA = """
CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, qty bigint, price numeric(10, 2),
                     note text, at timestamptz);
CREATE TABLE customers (id int PRIMARY KEY, name text, vip boolean);
CREATE TABLE logs (line text);
CREATE PUBLICATION sluice FOR TABLE orders, customers, logs;
"""


class Workload:
    """pgbench-style random DML on both tables, in a thread, until stopped."""

    def __init__(self, pg: Postgres, seed: int):
        self.pg, self.rng = pg, random.Random(seed)
        self.stop_event, self.thread, self.done = threading.Event(), None, 0
        self.errors: list[Exception] = []

    def step(self, c):
        r, table = self.rng, self.rng.choice(["orders", "customers"])
        key = r.randrange(300)
        with c.transaction():
            if table == "orders":
                op = r.random()
                if op < 0.4:
                    big = "".join(r.choice("abcdef0123456789") for _ in range(3000)) if r.random() < 0.2 else "n"
                    c.execute("INSERT INTO orders VALUES (%s, 'new', %s, %s, %s, now()) ON CONFLICT (id) DO UPDATE "
                              "SET status = 'again', qty = excluded.qty",
                              (key, r.randrange(100), decimal.Decimal(r.randrange(10000)) / 100, big))
                elif op < 0.8:
                    c.execute("UPDATE orders SET status = %s, qty = qty + 1 WHERE id = %s",
                              (r.choice(["paid", "sent"]), key))
                else:
                    c.execute("DELETE FROM orders WHERE id = %s", (key,))
            else:
                if r.random() < 0.7:
                    c.execute("INSERT INTO customers VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET name = "
                              "excluded.name", (key, f"c{r.randrange(1000)}", r.random() < 0.5))
                else:
                    c.execute("DELETE FROM customers WHERE id = %s", (key,))
        self.done += 1

    def run(self, steps: int | None = None):
        with self.pg.connect() as c:
            n = 0
            while not self.stop_event.is_set() and (steps is None or n < steps):
                try:
                    self.step(c)
                except psycopg.OperationalError:
                    return  # PostgreSQL restarting: the test starts another
                n += 1

    def start(self):
        self.stop_event.clear()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        if self.thread:
            self.thread.join(30)


def mirror(server, table: str, key: str) -> dict | None:
    status, answer = server.sql_status(f"SELECT * FROM {table}")
    if status != 200:
        return None
    names = [c["name"] for c in answer["columns"]]
    return {r[names.index(key)]: dict(zip(names, r)) for r in answer["rows"]}


def same(server, pg: Postgres, table: str) -> bool:
    """Whether Sluice's mirror of `table` holds the rows PostgreSQL does (id, and the columns
    compared as text: numbers and times as JSON gives them)."""
    got = mirror(server, table, "id")
    if got is None:
        return False
    want = pg.rows(table, "id")
    if set(got) != set(want):
        return False
    for key, row in want.items():
        for column, value in row.items():
            if column in ("price", "at"):
                continue
            if column not in got[key] or got[key][column] != value:
                return False
    return True


def converge(server, pg, what: str, timeout: float = 90):
    wait_for(lambda: same(server, pg, "orders") and same(server, pg, "customers"), what, timeout=timeout)


def create_source(server, pg: Postgres, tables="public.orders, customers"):
    server.sql(f"CREATE SOURCE shop FROM POSTGRES '{pg.url}' PUBLICATION 'sluice' TABLES ({tables})")


def lag(pg: Postgres) -> int:
    return int(pg.value("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                        "FROM pg_replication_slots WHERE slot_name = 'sluice_shop'"))


def test_a_postgres_source_mirrors_its_tables_through_snapshot_kill_9_and_restart(server, postgres):
    """The tables mirrored from a snapshot taken while DML runs, then streamed; kill -9 of
    Sluice and a restart of PostgreSQL mid-stream lose and double nothing; idle, the slot holds
    no WAL; DROP SOURCE drops the slot and the tables."""
    with postgres.connect() as c:
        c.execute(SCHEMA)
    load = Workload(postgres, seed=3)
    load.run(steps=500)
    load.start()
    create_source(server, postgres)
    time.sleep(2)
    server.kill9()
    server.restart()
    time.sleep(2)
    # A fast shutdown waits for the slot's reader to confirm the end of the WAL, which the
    # reader cannot: it disconnects when its next heartbeat (every 10 s) finds its session ended.
    started = time.monotonic()
    postgres.stop("fast")
    assert time.monotonic() - started < 30, "a fast shutdown waited for Sluice"
    load.stop()
    postgres.start()
    load = Workload(postgres, seed=4)
    load.run(steps=500)
    converge(server, postgres, "the mirrors to equal the tables")
    history = server.sql("SELECT count(*) FROM orders_changes")["rows"][0][0]
    assert history >= 1, history
    ids = server.sql("SELECT count(*), count(DISTINCT _event_id) FROM orders_changes WHERE _op <> 'r'")["rows"][0]
    assert ids[0] == ids[1], f"a change twice in the history: {ids}"

    # Idle (but for other tables' WAL), the slot is acknowledged to the end.
    with postgres.connect() as c:
        c.execute("INSERT INTO logs SELECT 'x' FROM generate_series(1, 1000)")
    wait_for(lambda: lag(postgres) < 4096, "the slot's lag back to zero", timeout=60)
    wait_for(lambda: all(r[4] == "reading" and r[5] == 0 for r in server.sql("SHOW SOURCES")["rows"]),
             "the source reading again, nothing behind")
    shown = server.sql("SHOW SOURCES")
    assert [c["name"] for c in shown["columns"]] == ["source", "table", "stream", "slot", "state", "behind",
                                                     "last_error"], shown
    assert [r[:4] for r in shown["rows"]] == [["shop", "public.orders", "orders", "sluice_shop"],
                                              ["shop", "public.customers", "customers", "sluice_shop"]], shown

    dropped = server.sql("DROP SOURCE shop")
    assert ["replication slot sluice_shop"] in dropped["rows"], dropped
    assert postgres.value("SELECT count(*) FROM pg_replication_slots") == 0
    status, _ = server.sql_status("SELECT * FROM orders")
    assert status != 200


def test_a_source_is_refused_clearly(server, postgres):
    """A password in the connection string, a table without a primary key or outside the
    publication, and a name taken are refused at CREATE, leaving nothing behind; the doors refuse
    a source's tables' records."""
    with postgres.connect() as c:
        c.execute(SCHEMA)
    status, answer = server.sql_status(
        f"CREATE SOURCE s FROM POSTGRES 'postgres://postgres:secret@127.0.0.1:{postgres.port}/postgres' "
        "PUBLICATION 'sluice' TABLES (orders)")
    assert status == 400 and "password" in answer["error"], answer
    status, answer = server.sql_status(
        f"CREATE SOURCE s FROM POSTGRES '{postgres.url}' PUBLICATION 'sluice' TABLES (logs)")
    assert status >= 400 and "primary key" in answer["error"], answer
    server.sql("CREATE STREAM customers (id INT)")
    status, answer = server.sql_status(
        f"CREATE SOURCE s FROM POSTGRES '{postgres.url}' PUBLICATION 'sluice' TABLES (orders, customers)")
    assert status >= 400 and "customers" in answer["error"], answer
    assert postgres.value("SELECT count(*) FROM pg_replication_slots") == 0
    server.sql("DROP STREAM customers")
    create_source(server, postgres)
    status, _, answer = server.ingest("orders", b'{"op":"c"}\n')
    assert status >= 400 and "PostgreSQL source 'shop'" in str(answer), answer
    server.sql("DROP SOURCE shop")


def test_a_column_added_reaches_the_mirror_and_other_schema_changes_stop_their_table(server, postgres):
    """A nullable column added to a table is added to its mirror and history (across kill -9);
    a column changing type stops that table with the reason in SHOW SOURCES while the other goes
    on; a source's table is dropped with the source, not alone."""
    with postgres.connect() as c:
        c.execute(SCHEMA)
    Workload(postgres, seed=5).run(steps=300)
    create_source(server, postgres)
    converge(server, postgres, "the snapshot")

    with postgres.connect() as c:
        c.execute("ALTER TABLE orders ADD COLUMN coupon text")
        c.execute("UPDATE orders SET coupon = 'SPRING' WHERE id % 3 = 0")
    converge(server, postgres, "the mirror to have the new column")
    server.kill9()
    server.restart()
    with postgres.connect() as c:
        c.execute("INSERT INTO orders (id, status, coupon) VALUES (1000, 'new', 'FALL')")
    converge(server, postgres, "the mirror after a kill -9")
    coupons = server.sql("SELECT count(*) FROM orders_changes WHERE coupon IS NOT NULL")["rows"][0][0]
    assert coupons == postgres.value("SELECT count(*) FROM orders WHERE coupon IS NOT NULL"), coupons

    with postgres.connect() as c:
        c.execute("ALTER TABLE customers ALTER COLUMN vip TYPE int USING 0")
        c.execute("INSERT INTO customers VALUES (5000, 'late', 1)")
        c.execute("INSERT INTO orders (id, status) VALUES (1001, 'after')")

    def customers():
        return next(r for r in server.sql("SHOW SOURCES")["rows"] if r[1] == "public.customers")

    wait_for(lambda: customers()[4] == "stopped", "customers stopped")
    assert "column vip is INT, was BOOLEAN" in customers()[6], customers()
    wait_for(lambda: same(server, postgres, "orders"), "orders going on")
    assert 5000 not in mirror(server, "customers", "id")

    status, answer = server.sql_status("DROP STREAM orders")
    assert status >= 400 and "DROP SOURCE shop" in answer["error"], answer

    # A slot that cannot be dropped (the database down) drops nothing: the source reads on.
    postgres.stop("immediate")
    status, answer = server.sql_status("DROP SOURCE shop")
    assert status >= 400 and "PostgreSQL" in answer["error"], answer
    assert len(server.sql("SHOW SOURCES")["rows"]) == 2
    postgres.start()
    with postgres.connect() as c:
        c.execute("INSERT INTO orders (id, status) VALUES (1002, 'back')")
    wait_for(lambda: same(server, postgres, "orders"), "orders read on")
    dropped = server.sql("DROP SOURCE shop")["rows"]
    assert ["replication slot sluice_shop"] in dropped and ["stream orders"] in dropped, dropped
