"""Saved dashboards: pinned in the page by headless Chromium, kept in the lake (a folder or S3),
declared in the config file, guarded from read-only users, across restarts."""

from __future__ import annotations

import json
import threading
import time

import pytest
import conftest
from conftest import Server, screenshot, wait_for
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

STREAM = "CREATE STREAM trades (ticker TEXT NOT NULL, qty BIGINT, ts TIMESTAMP NOT NULL)"
ADMIN, READER = "admin-" + "a" * 24, "reader-" + "r" * 24


def put(server: Server, name: str, dashboard: dict, headers=None):
    return server.request("PUT", f"/v1/dashboards/{name}", json.dumps(dashboard).encode(),
                          {"Content-Type": "application/json", **(headers or {})})


def panel(title: str, sql: str, chart: str = "table", **drawn) -> dict:
    return {"title": title, "sql": sql, "chart": chart, **drawn}


class Feeder:
    """Sends a few trades every 300 ms while it runs, so that panels have something to update."""

    def __init__(self, server: Server):
        self.server, self.sent, self._stop = server, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            body = "".join(json.dumps({"ticker": t, "qty": 1 + self.sent % 7, "ts": "2026-01-01T00:00:00Z"}) + "\n"
                           for t in ("AAPL", "MSFT", "MSFT"))
            status, _, _ = self.server.ingest("trades", body.encode())
            if status == 200:
                self.sent += 3
            self._stop.wait(0.3)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def tiles(browser) -> list[dict]:
    """Each panel on screen: its chart, how many answers it drew, what it shows."""
    return browser.execute_script("""
        return [...document.querySelectorAll('.tile')].map((t) => ({
          chart: t.dataset.chart, updates: Number(t.dataset.updates),
          value: t.querySelector('.number')?.dataset.value ?? null,
          canvas: !!t.querySelector('.chart canvas'),
          points: Number(t.querySelector('.chart')?.dataset.points ?? 0),
          error: t.querySelector('.message')?.textContent ?? null,
        }))""")


def pin(browser, sql: str, dashboard: str, title: str, chart: str, new: bool):
    browser.get(browser.current_url.split("#")[0] + "#/sql")
    editor = browser.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys(sql)
    browser.find_element(By.ID, "run").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#result table.result"), "the answer", timeout=20)
    browser.find_element(By.ID, "pin").click()
    wait_for(lambda: browser.find_elements(By.ID, "pin-to"), "the pin form", timeout=10)
    if new:
        Select(browser.find_element(By.ID, "pin-to")).select_by_value("")
        browser.find_element(By.ID, "pin-new").send_keys(dashboard)
    else:
        Select(browser.find_element(By.ID, "pin-to")).select_by_value(dashboard)
    title_box = browser.find_element(By.ID, "pin-title")
    title_box.clear()
    title_box.send_keys(title)
    Select(browser.find_element(By.ID, "pin-chart")).select_by_visible_text(chart)
    browser.find_element(By.CSS_SELECTOR, "#pin-form button[type=submit]").click()
    wait_for(lambda: browser.find_elements(By.ID, "pinned") or browser.find_elements(By.ID, "pin-error"),
             "the pin", timeout=10)
    assert not browser.find_elements(By.ID, "pin-error"), browser.find_element(By.ID, "pin-error").text


def test_chromium_pins_two_panels_and_after_a_reload_sees_both_drawn_and_updating(server, browser):
    server.sql(STREAM)
    with Feeder(server) as feeder:
        wait_for(lambda: server.sql("SELECT count(*) FROM trades")["rows"][0][0] > 0, "the first trades")
        browser.get(server.url + "/")
        pin(browser, "SELECT count(*) AS trades FROM trades", "desk", "Trades", "number", new=True)
        pin(browser, "SELECT ticker, sum(qty) AS qty FROM trades GROUP BY ticker ORDER BY ticker",
            "desk", "Quantity by ticker", "bar", new=False)
        _, _, stored = server.get("/v1/dashboards/desk")
        assert [p["chart"] for p in stored["dashboard"]["panels"]] == ["number", "bar"]
        assert stored["version"] == 2 and stored["editable"] and not stored["declared"]

        browser.get(server.url + "/#/dashboards/desk")
        browser.refresh()
        drawn = wait_for(lambda: (t := tiles(browser)) and len(t) == 2 and t[0]["value"] and t[1]["canvas"] and t,
                         "both panels drawn after the reload", timeout=30)
        assert drawn[0]["chart"] == "number" and drawn[1]["chart"] == "bar"
        assert drawn[1]["points"] == 2, drawn  # AAPL and MSFT
        first = int(drawn[0]["value"])
        # Updating: more trades arrive, and both panels draw new answers without a reload.
        wait_for(lambda: (t := tiles(browser)) and int(t[0]["value"]) > first and t[1]["updates"] > drawn[1]["updates"],
                 "both panels to update", timeout=30)
        assert all(t["error"] is None for t in tiles(browser))
        assert browser.find_element(By.ID, "dashboard-title").text == "desk"
        assert browser.find_elements(By.ID, "add-panel"), "an admin may edit it"
        screenshot(browser, "saved-dashboard")
        assert feeder.sent > 0


def test_the_api_checks_what_is_saved_and_refuses_edits_of_a_changed_version(server):
    server.sql(STREAM)
    # Created with If-None-Match: *, only once.
    board = {"title": "Desk", "panels": [panel("All", "SELECT * FROM trades")]}
    status, headers, answer = put(server, "desk", board, {"If-None-Match": "*"})
    assert status == 201 and headers["ETag"] == answer["etag"] and answer["version"] == 1, answer
    first = answer["etag"]
    status, _, answer = put(server, "desk", board, {"If-None-Match": "*"})
    assert (status, answer["code"]) == (409, "dashboard_exists"), answer

    # Replaced over its version; an edit of an older version is refused, not merged.
    board["panels"].append(panel("Count", "SELECT count(*) AS n FROM trades", "number"))
    status, headers, answer = put(server, "desk", board, {"If-Match": first})
    assert status == 200 and answer["version"] == 2 and headers["ETag"] == answer["etag"] != first, answer
    second = answer["etag"]
    status, _, answer = put(server, "desk", board, {"If-Match": first})
    assert (status, answer["code"]) == (409, "dashboard_changed"), answer
    assert "version 2" in answer["error"]

    # What cannot be saved is refused, naming the panel, and changes nothing.
    cases = [
        ({"panels": [panel("ok", "SELECT 1"), panel("bad", "SELECT * FROM nowhere")]}, 404, "panel 2 (\"bad\")"),
        ({"panels": [panel("syntax", "SELEC 1")]}, 400, "panel 1"),
        ({"panels": [panel("write", "DROP TABLE trades")]}, 400, "one query"),
        ({"panels": [panel("two", "SELECT 1; SELECT 2")]}, 400, "one query"),
        ({"panels": [panel("x", "SELECT 1 AS a", "line", x="b")]}, 400, "no column \"b\""),
        ({"panels": [panel("chart", "SELECT 1", "pie")]}, 400, "unknown variant"),
        ({"panels": [], "refresh_seconds": 0}, 400, "refresh_seconds"),
        ({"panels": [panel(str(i), "SELECT 1") for i in range(25)]}, 400, "at most 24 panels"),
        ({"panels": [], "colour": "red"}, 400, "unknown field"),
        ({"name": "other", "panels": []}, 400, "the URL"),
    ]
    for body, status_expected, words in cases:
        status, _, answer = put(server, "desk", body)
        assert status == status_expected and words in answer["error"], (body, status, answer)
    status, _, answer = put(server, "..", {"panels": []})
    assert status in (400, 404), answer
    status, _, answer = put(server, "bad%20name", {"panels": []})
    assert status == 400 and "invalid dashboard name" in answer["error"], answer
    _, _, answer = server.get("/v1/dashboards/desk")
    assert answer["version"] == 2 and len(answer["dashboard"]["panels"]) == 2

    status, _, answer = server.get("/v1/dashboards")
    assert [d["name"] for d in answer["dashboards"]] == ["desk"] and answer["may_create"]
    status, _, _ = server.request("DELETE", "/v1/dashboards/desk")
    assert status == 204
    status, _, answer = server.request("DELETE", "/v1/dashboards/desk")
    assert (status, answer["code"]) == (404, "dashboard_not_found")
    status, _, answer = server.get("/v1/dashboards/desk")
    assert (status, answer["code"]) == (404, "dashboard_not_found")

    # Made again under its name: an edit from before the drop does not take it over.
    status, _, answer = put(server, "desk", {"panels": []}, {"If-None-Match": "*"})
    assert status == 201 and answer["version"] == 1, answer
    for stale in (first, second):
        status, _, answer = put(server, "desk", board, {"If-Match": stale})
        assert (status, answer["code"]) == (409, "dashboard_changed"), answer


def test_a_panel_whose_table_goes_shows_the_error_and_the_dashboard_stays(server):
    server.sql("CREATE TABLE prices AS SELECT 'AAPL' AS ticker, 187.5 AS price")
    status, _, answer = put(server, "board", {"refresh_seconds": 1, "panels": [
        panel("Prices", "SELECT * FROM prices"), panel("One", "SELECT 1 AS one", "number")]})
    assert status == 201, answer
    events = read_events(server, "/v1/live/dashboards/board",
                         lambda e: sum(n == "panel" for n, _ in e) >= 2)
    assert [a["rows"] for n, a in events if n == "panel"] == [[["AAPL", 187.5]], [[1]]], events
    server.sql("DROP TABLE prices")
    events = read_events(server, "/v1/live/dashboards/board",
                         lambda e: any(n == "panel" and a["panel"] == 0 for n, a in e))
    failed = next(a for n, a in events if n == "panel" and a["panel"] == 0)
    assert "prices" in failed["error"], failed
    _, _, answer = server.get("/v1/dashboards/board")
    assert len(answer["dashboard"]["panels"]) == 2


def read_events(server: Server, path: str, until, timeout: float = 20.0) -> list[tuple[str, dict]]:
    """Reads server-sent events from `path` until `until(events)` holds."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    events, name, deadline = [], None, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = response.fp.readline().decode().rstrip("\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
                if until(events):
                    return events
        raise AssertionError(f"events from {path}: {events}")
    finally:
        conn.close()


def test_a_read_only_user_opens_and_watches_but_does_not_edit(request, tmp_path, sluice_bin):
    server = Server(tmp_path / "logs", sluice_bin)
    request.node._sluice_servers = [server]
    server.env = {"SLUICE_ADMIN_SECRET": ADMIN, "SLUICE_READER_SECRET": READER}
    server.start(tmp_path / "data")
    try:
        server.token = ADMIN
        server.sql(STREAM)
        status, _, answer = put(server, "desk", {"panels": [panel("n", "SELECT count(*) AS n FROM trades", "number")]})
        assert status == 201, answer
        server.token = READER
        _, _, answer = server.get("/v1/dashboards")
        assert answer["may_create"] is False and answer["dashboards"][0]["editable"] is False
        _, _, answer = server.get("/v1/dashboards/desk")
        assert answer["editable"] is False and answer["writer"] is False
        events = read_events(server, "/v1/live/dashboards/desk", lambda e: any(n == "panel" for n, _ in e))
        assert events[0][0] == "dashboard" and events[1][1]["rows"] == [[0]], events
        for method, body in (("PUT", json.dumps({"panels": []}).encode()), ("DELETE", None)):
            status, _, answer = server.request(method, "/v1/dashboards/desk", body, {"Content-Type": "application/json"})
            assert (status, answer["code"]) == (403, "forbidden"), answer
            assert "read-only" in answer["error"]
        status, _, answer = put(server, "mine", {"panels": []})
        assert status == 403, answer
        server.token = None
        status, _, _ = server.get("/v1/dashboards")
        assert status == 401
    finally:
        server.stop()


CONFIG = """
sql = "CREATE STREAM trades (ticker TEXT NOT NULL, qty BIGINT, ts TIMESTAMP NOT NULL);"

[[dashboards]]
name = "ops"
title = "Operations"
refresh_seconds = 1

[[dashboards.panels]]
title = "Trades"
chart = "number"
sql = "SELECT count(*) AS trades FROM trades"

[[dashboards.panels]]
title = "By ticker"
chart = "bar"
x = "ticker"
sql = '''
SELECT ticker, sum(qty) AS qty FROM trades
GROUP BY ticker ORDER BY ticker
'''
"""


def test_config_dashboards_are_read_only_and_others_survive_restarts(request, tmp_path, sluice_bin, browser):
    config = tmp_path / "sluice.toml"
    config.write_text(CONFIG)
    server = Server(tmp_path / "logs", sluice_bin)
    request.node._sluice_servers = [server]
    server.extra_args = ["--config", str(config)]
    server.start(tmp_path / "data")
    try:
        _, _, ops = server.get("/v1/dashboards/ops")
        assert ops["declared"] and not ops["editable"] and ops["writer"], ops
        assert [p["title"] for p in ops["dashboard"]["panels"]] == ["Trades", "By ticker"]
        for method, body in (("PUT", json.dumps({"panels": []}).encode()), ("DELETE", None)):
            status, _, answer = server.request(method, "/v1/dashboards/ops", body, {"Content-Type": "application/json"})
            assert (status, answer["code"]) == (403, "dashboard_declared"), answer
        status, _, answer = put(server, "mine", {"title": "Mine", "panels": [panel("All", "SELECT * FROM trades")]})
        assert status == 201, answer

        # In the page: drawn, marked read-only, without the editing buttons; a copy is editable.
        server.ingest("trades", b'{"ticker": "A", "qty": 2, "ts": "2026-01-01T00:00:00Z"}\n')
        browser.get(server.url + "/#/dashboards/ops")
        wait_for(lambda: (t := tiles(browser)) and t[0]["value"] == "1" and t[1]["canvas"], "the declared dashboard",
                 timeout=30)
        assert "read-only" in browser.find_element(By.ID, "dashboard-badges").text
        assert not browser.find_elements(By.ID, "add-panel") and not browser.find_elements(By.CSS_SELECTOR, "button[data-act]")
        browser.find_element(By.ID, "copy-name").send_keys("ops-copy")
        browser.find_element(By.ID, "copy-dashboard").click()
        wait_for(lambda: browser.find_elements(By.ID, "add-panel"), "the copy, editable", timeout=15)
        _, _, copy = server.get("/v1/dashboards/ops-copy")
        assert not copy["declared"] and copy["dashboard"]["panels"] == ops["dashboard"]["panels"]

        # After kill -9 and with the config file changed: the page's dashboards are still there,
        # the declared one follows the file, and one the file no longer declares is released.
        server.kill9()
        config.write_text(CONFIG.replace('title = "Operations"', 'title = "Ops"').replace("name = \"ops\"", "name = \"ops2\""))
        server.start()
        _, _, answer = server.get("/v1/dashboards")
        boards = {d["name"]: d for d in answer["dashboards"]}
        assert sorted(boards) == ["mine", "ops", "ops-copy", "ops2"]
        assert boards["ops2"]["declared"] and not boards["ops"]["declared"] and boards["ops"]["editable"]
        status, _, _ = server.request("DELETE", "/v1/dashboards/ops")
        assert status == 204
        _, _, mine = server.get("/v1/dashboards/mine")
        assert mine["dashboard"]["title"] == "Mine" and mine["version"] == 1
        browser.get(server.url + "/#/dashboards/mine")
        wait_for(lambda: (t := tiles(browser)) and t[0]["updates"] >= 1, "the saved dashboard after the restart",
                 timeout=30)

        # A config file whose dashboard cannot be refuses to start, naming it.
        server.stop()
        config.write_text(CONFIG.replace("FROM trades\"", "FROM nowhere\""))
        with pytest.raises(conftest.ServerStartError, match=r"dashboard 'ops'.*panel 1 \(\"Trades\"\).*nowhere"):
            server.start()
    finally:
        server.stop()


def test_dashboards_live_in_an_s3_lake_shared_by_two_servers(request, tmp_path, sluice_bin, s3_server, s3_lake):
    status, _, answer = put(s3_server, "shared", {"panels": [panel("one", "SELECT 1 AS one", "number")]})
    assert status == 201, answer
    assert ".sluice/dashboards/shared.json" in s3_lake.keys(), s3_lake.keys()
    # A second server on the same lake (its own data directory) sees it, and the first sees
    # what the second changes.
    other = Server(tmp_path / "other-logs", sluice_bin)
    other.extra_args = ["--lake", s3_lake.url]
    other.env = s3_lake.s3.env()
    request.node._sluice_servers.append(other)
    other.start(tmp_path / "other-data")
    try:
        _, _, answer = other.get("/v1/dashboards/shared")
        assert answer["dashboard"]["panels"][0]["title"] == "one"
        status, _, answer = put(other, "shared", {"panels": [panel("two", "SELECT 2 AS two", "number")]},
                                {"If-Match": answer["etag"]})
        assert status == 200, answer
        _, _, answer = s3_server.get("/v1/dashboards/shared")
        assert answer["version"] == 2 and answer["dashboard"]["panels"][0]["title"] == "two"
    finally:
        other.stop()
