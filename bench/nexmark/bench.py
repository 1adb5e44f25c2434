"""Nexmark through the real server, a query at a time (run by bench/nexmark.sh).

  python bench.py --url URL --pid PID --data DIR [--query q0 …]

The server's streams already hold the events of DIR/{persons,auctions,bids}.ndjson. For each
query its views (queries.py) are created and timed until every one of them has taken all its
input (`input_lag` 0 in `GET /v1/views`, after a round that committed): its rows are then in its
table, but for the last windows of q11 and q12, which wait for the idle timeout (nothing comes
after the last event to close them). Over that time: events/s (the events of the streams the
query reads), the server's cores busy (its CPU seconds from /proc over the wall time) and its
peak RSS (VmHWM, reset before each query by /proc/PID/clear_refs). The views are dropped after.
One JSON line a query on stdout.
"""

import argparse
import json
import os
import time
import urllib.request
from pathlib import Path

import queries

TICK = 0.02
# A view's round interval (ViewConfig's default).
ROUND = 0.6


def request(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=600) as r:
        return json.loads(r.read() or b"{}")


def sql(url: str, statement: str) -> dict:
    return request(url, "/v1/sql", {"sql": statement})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def caught_up(url: str, names: list[str]) -> bool:
    views = {v["name"]: v for v in request(url, "/v1/views")["views"]}
    return all(
        n in views and views[n].get("input_lag") == 0 and views[n].get("last_round_ms") is not None
        for n in names
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--data", required=True, help="the folder of the events' NDJSON files")
    ap.add_argument("--query", action="append", help="a query (default: every one)")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    events = {k: sum(1 for _ in open(Path(args.data) / f"{k}.ndjson")) for k in queries.STREAMS}
    for query in args.query or list(queries.VIEWS):
        views = queries.views(query)
        Path(f"/proc/{args.pid}/clear_refs").write_text("5")
        cpu0, t0 = cpu_seconds(args.pid), time.monotonic()
        for name, definition in views:
            sql(args.url, f"CREATE MATERIALIZED VIEW {name} AS {definition}")
        names = [n for n, _ in views]
        while True:
            while not caught_up(args.url, names):
                if time.monotonic() - t0 > args.timeout:
                    raise SystemExit(f"{query}: not caught up after {args.timeout} s")
                time.sleep(TICK)
            wall = time.monotonic() - t0
            # A view over a view may have run its round before its upstream's last commit: it
            # is caught up when it still is a round later (which the time then includes).
            if len(names) == 1:
                break
            time.sleep(ROUND)
            if caught_up(args.url, names):
                wall = time.monotonic() - t0
                break
        cpu = cpu_seconds(args.pid) - cpu0
        rss = peak_rss_mib(args.pid)
        read = sum(events[s] for s in queries.READS[query])
        rows = sql(args.url, f"SELECT count(*) FROM {names[-1]}")["rows"][0][0]
        for name in reversed(names):
            sql(args.url, f"DROP MATERIALIZED VIEW {name}")
        print(json.dumps({"engine": "sluice", "query": query, "events": read, "wall_s": round(wall, 3),
                          "events_per_s": round(read / wall), "cores": round(cpu / wall, 2),
                          "peak_rss_mb": round(rss), "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
