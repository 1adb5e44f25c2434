"""W3: the lake queries of shared/bench/WORKLOADS.md, Sluice beside DuckDB (run by bench/queries.sh).

Waits until the server's `clicks` table holds every loaded event (rows + error rows), compacts it
(OPTIMIZE), then reads the table's current Parquet files from its Delta log (the `deltalake`
package) and gives exactly those to DuckDB, with their Hive partition folders, so that both
engines read the same bytes. Each query runs once on each engine to warm the page cache, then
RUNS times alternating (Sluice, DuckDB, Sluice, …); the answers must agree. Sluice is timed
around its HTTP request (parse, plan, open the Delta table, scan, JSON answer); DuckDB around
`execute(...).fetchall()` in this process, on a connection opened before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import duckdb
from deltalake import DeltaTable

QUERIES = [
    "SELECT event_type, count(*) FROM clicks GROUP BY event_type",
    "SELECT hour, count(DISTINCT user_id) FROM clicks GROUP BY hour ORDER BY hour",
    "SELECT page, count(*) AS n FROM clicks WHERE event_type = 'purchase' "
    "AND date = DATE '2026-01-05' GROUP BY page ORDER BY n DESC LIMIT 10",
    "SELECT * FROM clicks WHERE user_id = 'u000123' ORDER BY ts DESC LIMIT 20",
]
# Sluice's raw table has the log's columns too; the DuckDB answer is compared on the W2 ones.
W2_COLUMNS = "event_id, user_id, session_id, event_type, page, device, country, ts"


def sql(server: str, statement: str) -> dict:
    request = urllib.request.Request(
        f"{server}/v1/sql",
        data=json.dumps({"sql": statement}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.load(answer)


def wait_for(server: str, events: int) -> None:
    """Until every event is a row or an error row (fresh: the log's tail included)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rows = sql(server, "SELECT (SELECT count(*) FROM clicks) + (SELECT count(*) FROM clicks_errors)")
        if rows["rows"][0][0] >= events:
            return
        time.sleep(0.5)
    raise SystemExit(f"the lake did not reach {events} events in time")


def committed(lake: str) -> DeltaTable:
    """The table once its pipeline has committed everything the log holds (no tail)."""
    deadline = time.monotonic() + 600
    last = -1
    while time.monotonic() < deadline:
        table = DeltaTable(f"{lake}/clicks")
        if table.version() == last:
            return table
        last = table.version()
        time.sleep(3)
    raise SystemExit("the clicks table kept changing")


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    answer = run()
    return (time.perf_counter() - started) * 1000, answer


def normalized(rows) -> list:
    return sorted(tuple(str(v) for v in row) for row in rows)


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--server", required=True)
    args.add_argument("--lake", required=True)
    args.add_argument("--events", type=int, required=True)
    args.add_argument("--runs", type=int, default=5)
    args = args.parse_args()

    wait_for(args.server, args.events)
    committed(args.lake)
    optimized = sql(args.server, "OPTIMIZE clicks")
    table = committed(args.lake)
    files = table.file_uris()
    rows = sql(args.server, "SELECT count(*) FROM clicks")["rows"][0][0]
    print(
        f"W3 on {rows:,} rows of clicks ({args.events:,} events, the rest in clicks_errors), "
        f"{len(files)} Parquet files after OPTIMIZE ({optimized['rows']}), "
        f"medians of {args.runs} runs, A B A B"
    )

    duck = duckdb.connect()
    listed = ", ".join(f"'{f}'" for f in files)
    duck.execute(
        f"CREATE VIEW clicks AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true)"
    )

    print(f"  {'query':5} {'sluice ms':>10} {'duckdb ms':>10} {'ratio':>6}")
    for number, query in enumerate(QUERIES, 1):
        sluice_query = query
        duck_query = query.replace("SELECT *", f"SELECT {W2_COLUMNS}")
        sluice_ms, duck_ms = [], []
        for run in range(args.runs + 1):
            took, ours = timed(lambda: sql(args.server, sluice_query)["rows"])
            if run:
                sluice_ms.append(took)
            took, theirs = timed(lambda: duck.execute(duck_query).fetchall())
            if run:
                duck_ms.append(took)
        if number == 4:
            ours = [row[:8] for row in ours]
            # ts as both print it: compare the instants' text up to the second.
            ours = [row[:7] + [str(row[7])[:19].replace("T", " ")] for row in ours]
            theirs = [row[:7] + (str(row[7])[:19],) for row in theirs]
        if normalized(ours) != normalized(theirs):
            raise SystemExit(f"query {number}: the answers differ\n sluice {ours[:5]}\n duckdb {theirs[:5]}")
        s, d = statistics.median(sluice_ms), statistics.median(duck_ms)
        print(f"  {number:<5} {s:10.1f} {d:10.1f} {s / d:6.2f}")


if __name__ == "__main__":
    main()
