"""Measures the dashboard against a running demo (see bench/dashboard.sh).

- CPU: the demo's user + system time over 60 s, as a share of one core, with no browser.
- Overview load: 10 loads of `/` in headless Chromium; each the time from navigation start to
  the first overview drawn (the page's `sluice-overview` mark); the median and the worst.
- Browser memory: a windowed view's live page for MINUTES, the JS heap sampled after a forced
  GC every 30 s; first, last and highest. The demo's CPU over the same time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

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


def heap_mib(driver) -> float:
    driver.execute_script("window.gc()")
    return driver.execute_script("return performance.memory.usedJSHeapSize") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=10)
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
    finally:
        driver.quit()
    print("dashboard and demo (2 cores, release build, default demo rates)")
    print(f"  demo cpu          {idle * 100:.1f} % of one core (no browser), "
          f"{watched * 100:.1f} % with a live view page open")
    print(f"  overview load     median {statistics.median(loads):.0f} ms, worst {max(loads):.0f} ms (10 loads)")
    print(f"  browser JS heap   first {heap[0]:.1f} MiB, last {heap[-1]:.1f} MiB, highest {max(heap):.1f} MiB "
          f"over {args.minutes:g} min ({len(heap)} samples after GC)")


if __name__ == "__main__":
    main()
