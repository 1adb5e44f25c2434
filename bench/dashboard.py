"""Measures the dashboard against a running demo (see bench/dashboard.sh).

- CPU: the demo's user + system time over 60 s, as a share of one core, with no browser.
- Overview load: 10 loads of `/` in headless Chromium; each the time from navigation start to
  the first overview drawn (the page's `sluice-overview` mark); the median and the worst.
- Browser memory: a windowed view's live page for MINUTES, the JS heap sampled after a forced
  GC every 30 s; first, last and highest. The demo's CPU over the same time.
- Saved dashboards: 10 loads of the demo's `market` dashboard, each the time from navigation
  start to every panel's first answer drawn (the page's `sluice-dashboard` mark); the demo's
  CPU with it open for MINUTES; and what one refresh of it queries: each panel's query through
  `POST /v1/sql` (median of 5), beside DuckDB running the same queries over the same lake tables
  (read with `deltalake`, from the demo's lake folder, `--lake`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def core_share(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--js-flags=--expose-gc",
                 "--enable-precise-memory-info"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def overview_ms(driver, url: str) -> float:
    driver.get("about:blank")
    driver.get(url + "/")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mark = driver.execute_script(
            "const m = performance.getEntriesByName('sluice-overview'); return m.length ? m[0].startTime : null")
        if mark is not None:
            return mark
        time.sleep(0.01)
    raise RuntimeError("the overview was not drawn within 10 s")


def mark_ms(driver, url: str, mark: str) -> float:
    """Loads `url` afresh; the time from navigation start to the page's performance mark."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = driver.execute_script(
            "const m = performance.getEntriesByName(arguments[0]); return m.length ? m[0].startTime : null", mark)
        if found is not None:
            return found
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not reach {mark} within 30 s")


def median_ms(run, times: int = 5) -> float:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def panel_queries(url: str, lake: Path, name: str) -> list[tuple[str, float, float]]:
    """Each panel of dashboard `name`: its title, its query's median ms through the server, and
    DuckDB's over the same lake tables."""
    import deltalake
    import duckdb

    with urllib.request.urlopen(f"{url}/v1/dashboards/{name}") as r:
        panels = json.load(r)["dashboard"]["panels"]
    duck = duckdb.connect()
    for table in sorted(p.name for p in lake.iterdir() if (p / "_delta_log").is_dir()):
        duck.register(table, deltalake.DeltaTable(str(lake / table)).to_pyarrow_dataset())

    def through_sluice(sql: str):
        request = urllib.request.Request(f"{url}/v1/sql", json.dumps({"sql": sql}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as r:
            r.read()

    return [(p["title"], median_ms(lambda: through_sluice(p["sql"])),
             median_ms(lambda: duck.sql(p["sql"]).fetchall())) for p in panels]


def heap_mib(driver) -> float:
    driver.execute_script("window.gc()")
    return driver.execute_script("return performance.memory.usedJSHeapSize") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--lake", type=Path, required=True, help="the demo's lake folder")
    args = parser.parse_args()

    time.sleep(30)  # the backfill of history, and the first rounds, settle
    idle = core_share(args.pid, 60)
    driver = browser()
    try:
        loads = [overview_ms(driver, args.url) for _ in range(10)]
        driver.get(args.url + "/#/views/sensor_10s")
        time.sleep(5)
        heap = [heap_mib(driver)]
        before, started = cpu_seconds(args.pid), time.monotonic()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30, max(0, end - time.monotonic())))
            heap.append(heap_mib(driver))
        watched = (cpu_seconds(args.pid) - before) / (time.monotonic() - started)
        board = args.url + "/#/dashboards/market"
        board_loads = [mark_ms(driver, board, "sluice-dashboard") for _ in range(10)]
        time.sleep(5)
        board_cpu = core_share(args.pid, args.minutes * 60)
    finally:
        driver.quit()
    panels = panel_queries(args.url, args.lake, "market")
    print("dashboard and demo (2 cores, release build, default demo rates)")
    print(f"  demo cpu          {idle * 100:.1f} % of one core (no browser), "
          f"{watched * 100:.1f} % with a live view page open")
    print(f"  overview load     median {statistics.median(loads):.0f} ms, worst {max(loads):.0f} ms (10 loads)")
    print(f"  browser JS heap   first {heap[0]:.1f} MiB, last {heap[-1]:.1f} MiB, highest {max(heap):.1f} MiB "
          f"over {args.minutes:g} min ({len(heap)} samples after GC)")
    print(f"  market dashboard  load median {statistics.median(board_loads):.0f} ms, worst {max(board_loads):.0f} ms "
          f"(10 loads, to every panel drawn); demo cpu {board_cpu * 100:.1f} % of one core with it open")
    print("  its panels' queries, median of 5: through sluice serve (POST /v1/sql) | DuckDB on the same lake tables")
    for title, sluice, duck in panels:
        print(f"    {title[:44]:<44} {sluice:8.1f} ms | {duck:8.1f} ms")
    print(f"    {'one refresh (every panel)':<44} {sum(p[1] for p in panels):8.1f} ms | "
          f"{sum(p[2] for p in panels):8.1f} ms")


if __name__ == "__main__":
    main()
