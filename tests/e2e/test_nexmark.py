"""Nexmark at small scale through the real binary: 100,000 events from `sluice gen nexmark`
sent with `sluice produce`, every query Sluice can express created as views
(bench/nexmark/queries.py), and each view's table equal to DuckDB's batch recomputation over the
same NDJSON files.

The events span 100 s of event time (`--event-rate 1000`), so that 10-second windows and
sessions close; the bids are sent in two halves 11 s apart, so that q12's windows of the time
bids reached the log close too."""

from __future__ import annotations

import datetime
import functools
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import conftest
import duckdb
import pytest
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "nexmark"))
import queries  # noqa: E402

EVENTS = 100_000

wait_for = functools.partial(conftest.wait_for, timeout=240.0)


def normal(value):
    """A value as both sides can be compared: floats to 9 significant digits, instants as UTC
    wall times."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def rows(batch) -> Counter:
    return Counter(tuple(normal(v) for v in row) for row in batch)


@pytest.fixture(scope="module")
def nexmark(tmp_path_factory):
    """The events, one NDJSON file a kind, and a server holding them in its streams."""
    data = tmp_path_factory.mktemp("nexmark")
    for kind in queries.STREAMS:
        with open(data / f"{kind}.ndjson", "wb") as out:
            subprocess.run([str(conftest.sluice_bin_path()), "gen", "nexmark", "--events", str(EVENTS),
                            "--event-rate", "1000", "--only", kind], stdout=out, check=True)
    server = conftest.Server(data / "server").start(data / "data")
    for kind, statement in queries.STREAMS.items():
        server.sql(statement)
        lines = open(data / f"{kind}.ndjson", "rb").readlines()
        halves = [lines[: len(lines) // 2], lines[len(lines) // 2:]] if kind == "bids" else [lines]
        for i, half in enumerate(halves):
            if i:
                time.sleep(11)
            sent = subprocess.run([str(conftest.sluice_bin_path()), "produce", kind, "--server", server.url,
                                   "--quiet"], input=b"".join(half), capture_output=True)
            assert sent.returncode == 0, sent.stderr.decode()
    server.sql(queries.SIDE_INPUT)
    yield data, server
    server.stop()


def test_every_expressible_query_equals_duckdbs_recomputation(nexmark):
    data, server = nexmark
    counts = {kind: sum(1 for _ in open(data / f"{kind}.ndjson")) for kind in queries.STREAMS}
    assert counts["bids"] > 0.9 * EVENTS and counts["persons"] == EVENTS // 50, counts
    con = duckdb.connect()
    for kind, columns in queries.COLUMNS.items():
        con.sql(f"CREATE TABLE {kind} AS SELECT * FROM read_json('{data / kind}.ndjson', columns = {columns})")

    def raw_complete():
        raw = DeltaTable(str(server.data_dir / "lake" / "bids")).to_pyarrow_table()
        return raw if raw.num_rows == counts["bids"] else None

    raw_bids = wait_for(raw_complete, "the bids' raw table to hold every bid")
    con.register("raw_bids", raw_bids)
    failures = []
    # Every view runs at once: they all have this long to hold their rows.
    deadline = time.monotonic() + 400
    for query in queries.VIEWS:
        for name, sql in queries.views(query):
            server.sql(f"CREATE MATERIALIZED VIEW {name} AS {sql}")
    for query in queries.VIEWS:
        want = rows(con.sql(queries.DUCKDB[query]).fetchall())
        if not want:
            failures.append(f"{query}: DuckDB gives no rows: the query tests nothing")
            continue
        name = queries.views(query)[-1][0]

        def held():
            table = DeltaTable(str(server.data_dir / "lake" / name)).to_pyarrow_table()
            return table, rows(tuple(r.values()) for r in table.to_pylist())

        def holds_every_row():
            # The table read whole only once it has as many rows as it should.
            if DeltaTable(str(server.data_dir / "lake" / name)).to_pyarrow_table().num_rows != sum(want.values()):
                return None
            return held()[1] == want

        try:
            wait_for(holds_every_row, f"{query} to hold DuckDB's rows", timeout=max(deadline - time.monotonic(), 1), every=1.0)
        except AssertionError:
            got = held()[1]
            failures.append(f"{query}: {sum(got.values())} rows, DuckDB {sum(want.values())}; "
                            f"only Sluice's: {list((got - want).items())[:3]}; only DuckDB's: {list((want - got).items())[:3]}")
    assert not failures, "\n".join(failures)
    for query in queries.VIEWS:
        errors = DeltaTable(str(server.data_dir / "lake" / f"{queries.views(query)[0][0]}_errors")).to_pyarrow_table()
        assert errors.num_rows == 0, f"{query}: {errors.to_pylist()[:3]}"
