"""`sluice demo` and the dashboard, end to end.

One demo runs for the module (on a fresh data directory): its generators feed the five use
cases' streams and its views run. Headless Chromium (Debian's `chromium` and `chromedriver`,
driven by Selenium) loads the dashboard from it, as a user would. Screenshots go to
$SLUICE_ARTIFACTS (default: tests/e2e/artifacts), kept by CI as the tests' artifacts.
"""

from __future__ import annotations

import functools
import signal
import time

import pytest
import conftest
from conftest import Server, screenshot
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

DEMO_STREAMS = ["clickstream", "logs", "payments", "sensors", "ticks"]
DEMO_VIEWS = [
    "card_activity_1m", "clicks", "clicks_per_minute", "error_rate_1m", "error_spikes",
    "high_value_payments", "latest_price", "likely_bots", "merchant_stats", "overheating",
    "payment_anomalies", "sensor_10s", "ticks_1m", "users_per_hour",
]


class Demo(Server):
    """`sluice demo` instead of `sluice serve`: same ports on stdout, same lifecycle."""

    def _args(self) -> list[str]:
        return [
            str(self.binary), "demo", "--data-dir", str(self.data_dir), "--http", "127.0.0.1:0",
            "--pg", "127.0.0.1:0",
        ]


wait_for = functools.partial(conftest.wait_for, timeout=90.0, every=0.5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sluice_bin):
    root = tmp_path_factory.mktemp("demo")
    demo = Demo(root / "logs", sluice_bin)
    demo.start(root / "data")
    try:
        yield demo
    finally:
        demo.stop()


@pytest.fixture
def attach_demo_log(request, demo):
    request.node._sluice_servers = [demo]


def texts(browser, css: str) -> list[str]:
    """The text of every element `css` selects, read at once: the page redraws its tables as
    data arrives, so an element found in one call may be gone by the next."""
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", css)


def attribute(browser, css: str, name: str) -> str | None:
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
        css, name)


def views_committed(demo, names) -> bool:
    _, _, answer = demo.get("/v1/views")
    status = {v["name"]: v for v in answer["views"]}
    return all(status.get(n, {}).get("last_commit_ms") for n in names)


def test_the_demo_creates_its_streams_and_views_and_feeds_them(demo, attach_demo_log):
    _, _, answer = demo.get("/v1/streams")
    assert sorted(s["name"] for s in answer["streams"]) == DEMO_STREAMS
    _, _, answer = demo.get("/v1/views")
    assert sorted(v["name"] for v in answer["views"]) == DEMO_VIEWS
    wait_for(lambda: views_committed(demo, DEMO_VIEWS), "every view to commit")
    _, _, answer = demo.get("/v1/views")
    assert [v for v in answer["views"] if v["last_error"]] == []


def test_the_overview_lists_the_demo_streams_with_live_rates(demo, browser, attach_demo_log):
    browser.get(demo.url + "/")

    def rates():
        found = dict(browser.execute_script(
            "return [...document.querySelectorAll('#streams tr[data-stream]')]"
            ".map((r) => [r.dataset.stream, r.querySelector('.rate').textContent])"))
        if sorted(found) == DEMO_STREAMS and all(float(v.replace(",", "") or 0) > 0 for v in found.values()):
            return found
        return None

    wait_for(rates, "every demo stream with a non-zero rate", timeout=60)
    views = browser.execute_script(
        "return [...document.querySelectorAll('#views tr[data-view]')].map((r) => r.dataset.view)")
    assert sorted(views) == DEMO_VIEWS
    assert texts(browser, "#tables tr[data-table='ticks_1m']")
    screenshot(browser, "overview")


def test_the_overview_loads_again_and_again(demo, browser, attach_demo_log):
    """A page left closes its live feed: a browser opens at most six connections to a server,
    and feeds held by pages gone would block the seventh load."""
    for _ in range(8):
        browser.get("about:blank")
        browser.get(demo.url + "/")
        wait_for(lambda: texts(browser, "#streams tr[data-stream]"), "the overview", timeout=10)


def test_a_windowed_view_page_draws_a_chart_that_grows(demo, browser, attach_demo_log):
    browser.get(demo.url + "/#/views/sensor_10s")

    def drawn() -> int | None:
        """The last window end drawn, once the chart has points."""
        points = attribute(browser, "#chart", "data-points")
        return int(attribute(browser, "#chart", "data-last")) if points and int(points) > 0 else None

    last = wait_for(drawn, "the chart's first points")
    assert texts(browser, "#chart canvas"), "uPlot draws on a canvas"
    # Windows of 10 s: a new one closes within ~10 s plus the watermark, pushed without reloading.
    wait_for(lambda: (drawn() or 0) > last, "a later window", timeout=60)
    assert len(texts(browser, ".u-legend .u-series")) == 11  # x, and the top 10
    screenshot(browser, "view-sensor_10s")


def test_an_updating_view_page_is_a_live_table(demo, browser, attach_demo_log):
    browser.get(demo.url + "/#/views/latest_price")
    rows = wait_for(lambda: (lambda r: r if len(r) == 100 else None)(texts(browser, "#content tbody tr")),
                    "a page of rows")
    assert rows[0].startswith("T0000")
    wait_for(lambda: texts(browser, "#content tbody tr") not in ([], rows), "prices to change")
    assert texts(browser, "#content tbody tr")[0].startswith("T0000"), "rows change in place, in key order"
    screenshot(browser, "view-latest_price")


def test_the_sql_editor_runs_a_query_and_shows_rows(demo, browser, attach_demo_log):
    browser.get(demo.url + "/#/sql")
    editor = browser.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys("SELECT ticker, price FROM latest_price ORDER BY ticker LIMIT 3")
    editor.send_keys(Keys.CONTROL, Keys.ENTER)
    rows = wait_for(lambda: texts(browser, "#result tbody tr"), "the rows")
    assert [r[:5] for r in rows] == ["T0000", "T0001", "T0002"]
    browser.find_element(By.CSS_SELECTOR, "button[data-tab='chart']").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#result #chart canvas"), "the chart")
    screenshot(browser, "sql-result")
    history = texts(browser, "#history li")
    assert history and "latest_price" in history[0]


def test_the_sql_editor_shows_an_error_with_its_position(demo, browser, attach_demo_log):
    browser.get(demo.url + "/#/sql")
    editor = browser.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys("SELECT ticker FROM latest_price\nWHERE price >")
    browser.find_element(By.ID, "run").click()
    error = wait_for(lambda: texts(browser, "#sql-error"), "the error")[0]
    assert "Line: 2, Column: 14" in error, error
    # The cursor is put where the error is.
    assert browser.execute_script("return document.getElementById('sql').selectionStart") == 45
    editor.clear()
    editor.send_keys("SELECT nothing FROM latest_price")
    browser.find_element(By.ID, "run").click()
    wait_for(lambda: any("nothing" in e for e in texts(browser, "#sql-error")), "the planning error")
    screenshot(browser, "sql-error")


def test_a_stream_page_shows_records_and_the_errors_table(demo, browser, attach_demo_log):
    browser.get(demo.url + "/#/streams/clickstream")
    records = wait_for(lambda: (lambda r: r if len(r) == 50 else None)(texts(browser, "#recent tbody tr")),
                       "the newest records")
    assert "event_id" in records[0]
    # W2 holds invalid JSON and bad timestamps: the errors table says why.
    errors = wait_for(lambda: texts(browser, "#errors tbody tr"), "the errors", timeout=30)
    assert any("ts" in e or "JSON" in e or "json" in e for e in errors), errors
    screenshot(browser, "stream-clickstream")


def test_the_demo_ships_a_dashboard_per_use_case_every_panel_drawn(demo, browser, attach_demo_log):
    _, _, answer = demo.get("/v1/dashboards")
    boards = {d["name"]: d for d in answer["dashboards"]}
    assert sorted(boards) == ["clickstream", "logs", "market", "payments", "sensors"]
    assert all(d["declared"] and not d["editable"] and d["panels"] >= 4 for d in boards.values()), boards
    for name, board in boards.items():
        browser.get(f"{demo.url}/#/dashboards/{name}")

        def drawn():
            tiles = browser.execute_script(
                "return [...document.querySelectorAll('.tile')].map((t) => ({chart: t.dataset.chart, "
                "error: t.querySelector('.message')?.textContent ?? null, "
                "shown: !!t.querySelector('canvas, .number, table.result')}))")
            assert all(t["error"] is None for t in tiles), (name, tiles)
            return len(tiles) == board["panels"] and all(t["shown"] for t in tiles) and tiles

        tiles = wait_for(drawn, f"every panel of dashboard {name}", timeout=60)
        assert {"line", "number", "table"} <= {t["chart"] for t in tiles} or name in ("payments", "market"), tiles
        screenshot(browser, f"dashboard-{name}")


def test_the_demo_views_hold_correct_results(demo, attach_demo_log):
    """Every tick before the last emitted window's end is counted once in ticks_1m, and the
    same for the sensors' readings in sensor_10s (the generators are never late past the
    watermark)."""
    wait_for(lambda: views_committed(demo, ["ticks_1m", "sensor_10s"]), "the windowed views")
    for view, stream, count in [("ticks_1m", "ticks", "trades"), ("sensor_10s", "sensors", "readings")]:
        answer = demo.sql(f"SELECT max(window_end) AS until, sum({count}) AS counted, "
                          f"count(*) AS windows FROM {view}")
        until, counted, windows = answer["rows"][0]
        assert windows > 0
        answer = demo.sql(f"SELECT count(*) FROM {stream} WHERE ts < TIMESTAMP '{until}'")
        assert answer["rows"][0][0] == counted, (view, until)
    keys = "ticker, window_start"
    answer = demo.sql(f"SELECT count(*) FROM (SELECT {keys} FROM ticks_1m GROUP BY {keys} HAVING count(*) > 1)")
    assert answer["rows"][0][0] == 0
    # Every ticker is traded within seconds: one row each, updated in place.
    wait_for(lambda: demo.sql("SELECT count(*) FROM latest_price")["rows"][0][0] == 500, "500 tickers")


def test_ctrl_c_stops_the_demo_and_running_it_again_resumes(demo, browser, attach_demo_log):
    wait_for(lambda: views_committed(demo, ["ticks_1m"]), "ticks_1m")
    ticks = demo.sql("SELECT count(*) FROM ticks")["rows"][0][0]
    # A page with a live feed open does not hold the stop up.
    browser.get(demo.url + "/#/views/ticks_1m")
    wait_for(lambda: attribute(browser, "#chart", "data-points"), "the chart")
    stopping = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0
    assert time.monotonic() - stopping < 10
    demo._reap()
    demo.start(demo.data_dir)
    assert demo.sql("SELECT count(*) FROM ticks")["rows"][0][0] >= ticks
    wait_for(lambda: demo.sql("SELECT count(*) FROM ticks")["rows"][0][0] > ticks, "the feeds to resume")
    answer = demo.sql("SELECT count(*) FROM (SELECT ticker, window_start FROM ticks_1m "
                      "GROUP BY ticker, window_start HAVING count(*) > 1)")
    assert answer["rows"][0][0] == 0
