"""Materialized views through the real binary: W1 through `ticks_1m` and `latest_price` with
kill -9 at random moments, their definitions across restarts, backfill, `GET /v1/views`."""

from __future__ import annotations

import functools
import http.client
import json
import random
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import conftest
from deltalake import DeltaTable

TICKS = (
    "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL) "
    "WITH (shards = 4, event_time = 'ts', watermark = '5 seconds')"
)
# As SPEC.md declares it.
TICKS_1M = (
    "CREATE MATERIALIZED VIEW ticks_1m PARTITIONED BY (trade_date) AS "
    "SELECT ticker, window_start, window_end, CAST(window_start AS DATE) AS trade_date, "
    "count(*) AS trades, avg(price) AS avg_price, min(price) AS min_price, max(price) AS max_price, "
    "sum(volume) AS volume, last_value(price ORDER BY ts) AS close "
    "FROM TUMBLE(ticks, ts, INTERVAL '1 minute') GROUP BY ticker, window_start, window_end"
)
LATEST_PRICE = (
    "CREATE MATERIALIZED VIEW latest_price AS "
    "SELECT ticker, last_value(price ORDER BY ts) AS price, max(ts) AS ts, count(*) AS trades "
    "FROM ticks GROUP BY ticker"
)
START = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
TICKERS = [f"T{i:03}" for i in range(40)]
# Far past every real event, on every shard: moves the watermark past all the real windows.
SENTINELS = [f"ZZ{i:02}" for i in range(32)]


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03}Z"


def tick(n: int) -> dict:
    """Event n: a W1 tick, 200 ms of event time after event n - 1 (so ~8 windows a minute of
    sending cover many minutes of event time), prices that make sums and orders matter."""
    rng = random.Random(n)
    return {
        "ticker": TICKERS[n % len(TICKERS)],
        "price": round(10 + rng.random() * 90, 4),
        "volume": rng.randrange(1, 100) * 100,
        "ts": stamp(START + timedelta(milliseconds=200 * n)),
    }


def table(server, name):
    return DeltaTable(str(server.data_dir / "lake" / name)).to_pyarrow_table().to_pylist()


class Producer:
    """Sends ticks in order, a batch at a time, and remembers which were acknowledged."""

    def __init__(self, server, batch=250):
        self.server, self.batch = server, batch
        self.next_n = 0
        self.acked: set[int] = set()
        self.unknown = 0

    def send(self, ns) -> bool:
        body = "".join(json.dumps(tick(n)) + "\n" for n in ns).encode()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            conn.request("POST", "/v1/streams/ticks/records?key=ticker", body=body,
                         headers={"Content-Type": "application/x-ndjson"})
            status = conn.getresponse().status
            conn.close()
        except (OSError, http.client.HTTPException):
            self.unknown += 1
            return False
        if status == 200:
            self.acked.update(ns)
            return True
        return False

    def run(self, until: int, stop: threading.Event):
        while self.next_n < until and not stop.is_set():
            ns = range(self.next_n, min(self.next_n + self.batch, until))
            self.next_n = ns.stop
            if not self.send(ns):
                time.sleep(0.05)


wait_for = functools.partial(conftest.wait_for, timeout=120.0)


def expected_windows(raw_rows):
    """ticks_1m recomputed from the raw table: what the view must hold for every window."""
    windows = defaultdict(list)
    for r in raw_rows:
        start = r["ts"].replace(second=0, microsecond=0)
        windows[(r["ticker"], start)].append(r)
    out = {}
    for key, rows in windows.items():
        last = max(rows, key=lambda r: (r["ts"], r["_shard"], r["_seq"]))
        out[key] = {
            "trades": len(rows),
            "volume": sum(r["volume"] for r in rows),
            "min_price": min(r["price"] for r in rows),
            "max_price": max(r["price"] for r in rows),
            "close": last["price"],
        }
    return out


def duckdb_ticks_1m(events) -> dict:
    """ticks_1m as DuckDB computes it over the W1 events of NDJSON file `events`, the sentinels
    left out: (ticker, window_start) → (trades, volume, min_price, max_price, close)."""
    import duckdb

    return {
        (ticker, window_start): (trades, volume, min_price, max_price, close)
        for ticker, window_start, trades, volume, min_price, max_price, close in duckdb.sql(
            f"""SELECT ticker, time_bucket(INTERVAL 1 minute, ts) AS window_start, count(*),
                       sum(volume), min(price), max(price), arg_max(price, ts)
                FROM read_json('{events}', columns = {{ticker: 'VARCHAR', price: 'DOUBLE',
                     volume: 'BIGINT', ts: 'TIMESTAMP'}})
                WHERE ticker NOT LIKE 'ZZ%' GROUP BY ALL"""
        ).fetchall()
    }


def ticks_1m_once_complete(server, windows: int) -> dict:
    """Waits until the view ticks_1m holds `windows` real windows (the sentinels' left out),
    checks that none appears twice, and returns them as `duckdb_ticks_1m` does."""

    def view_complete():
        rows = [r for r in table(server, "ticks_1m") if not r["ticker"].startswith("ZZ")]
        return rows if len(rows) >= windows else None

    view = wait_for(view_complete, "ticks_1m to emit every real window")
    keys = [(r["ticker"], r["window_start"]) for r in view]
    assert len(keys) == len(set(keys)), "a (ticker, window_start) appears twice"
    return {
        (r["ticker"], r["window_start"]): (r["trades"], r["volume"], r["min_price"], r["max_price"], r["close"])
        for r in view
    }


def test_ticks_1m_and_latest_price_are_exact_after_kill_9(server):
    server.sql(TICKS)
    server.sql(TICKS_1M)
    server.sql(LATEST_PRICE)
    producer = Producer(server)
    total = 24_000
    rng = random.Random(7)
    for cycle in range(3):
        stop = threading.Event()
        thread = threading.Thread(target=producer.run, args=((cycle + 1) * total // 3, stop), daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.5, 3.0))
        server.kill9()
        stop.set()
        thread.join(timeout=60)
        server.start()
    # What was in flight at a crash may or may not be in the log; everything acknowledged is.
    producer.run(total, threading.Event())
    sentinel = START + timedelta(days=1)
    body = "".join(
        json.dumps({"ticker": t, "price": 1.0, "volume": 1, "ts": stamp(sentinel)}) + "\n" for t in SENTINELS
    ).encode()
    status, _, answer = server.ingest("ticks", body, key="ticker")
    assert status == 200, answer

    def raw_complete():
        _, _, streams = server.get("/v1/streams")
        (stream,) = streams["streams"]
        rows = table(server, "ticks")
        return rows if len(rows) == stream["records"] else None

    raw = wait_for(raw_complete, "the raw table to hold the whole log")
    real = [r for r in raw if not r["ticker"].startswith("ZZ")]
    logged = {(r["ticker"], r["ts"]) for r in real}
    for n in producer.acked:
        t = tick(n)
        assert (t["ticker"], conftest.utc_wall_time(t["ts"])) in logged, f"acknowledged tick {n} is not in the log"
    expected = expected_windows(real)

    def view_complete():
        rows = [r for r in table(server, "ticks_1m") if not r["ticker"].startswith("ZZ")]
        return rows if len(rows) >= len(expected) else None

    view = wait_for(view_complete, "ticks_1m to emit every real window")
    keys = [(r["ticker"], r["window_start"]) for r in view]
    assert len(keys) == len(set(keys)), "a (ticker, window_start) appears twice"
    assert sum(r["trades"] for r in view) == len(real), "sum(trades) is not the events in the log"
    for r in view:
        want = expected[(r["ticker"], r["window_start"])]
        assert r["window_end"] - r["window_start"] == timedelta(minutes=1)
        assert r["trade_date"] == r["window_start"].date()
        got = {k: r[k] for k in want}
        assert got == want, f"{r['ticker']} {r['window_start']}: {got} != {want}"

    def latest_complete():
        rows = {r["ticker"]: r for r in table(server, "latest_price")}
        counted = sum(r["trades"] for t, r in rows.items() if not t.startswith("ZZ"))
        return rows if counted == len(real) else None

    latest = wait_for(latest_complete, "latest_price to count every event")
    for ticker in TICKERS:
        mine = [r for r in real if r["ticker"] == ticker]
        last = max(mine, key=lambda r: (r["ts"], r["_shard"], r["_seq"]))
        assert latest[ticker]["price"] == last["price"], ticker
        assert latest[ticker]["ts"] == last["ts"], ticker
        assert latest[ticker]["trades"] == len(mine), ticker
    assert len([t for t in latest if t.startswith("ZZ")]) == len(SENTINELS)


def test_a_view_backfills_its_streams_history_and_survives_restarts(server):
    server.sql(TICKS)
    body = "".join(json.dumps(tick(n)) + "\n" for n in range(3000)).encode()
    status, _, _ = server.ingest("ticks", body, key="ticker")
    assert status == 200
    server.sql(LATEST_PRICE)
    wait_for(lambda: sum(r["trades"] for r in table(server, "latest_price")) == 3000, "the backfill")

    server.restart()
    shown = server.sql("SHOW MATERIALIZED VIEWS")
    assert [r[0] for r in shown["rows"]] == ["latest_price"], shown
    body = "".join(json.dumps(tick(n)) + "\n" for n in range(3000, 4000)).encode()
    assert server.ingest("ticks", body, key="ticker")[0] == 200
    wait_for(lambda: sum(r["trades"] for r in table(server, "latest_price")) == 4000, "the view after a restart")

    # The view's status follows its commit by a moment: the table can show the round first.
    wait_for(lambda: server.get("/v1/views")[2]["views"][0]["rows_out"], "the view's status of the round")
    status, _, views = server.get("/v1/views")
    assert status == 200
    (view,) = views["views"]
    assert view["name"] == "latest_price" and view["kind"] == "updating" and view["input"] == "ticks"
    assert view["input_lag"] == 0 and view["last_error"] is None, view
    assert view["rows_out"] > 0 and view["last_round_ms"] is not None, view
    answer = server.sql("SELECT count(*), sum(trades) FROM latest_price")
    assert answer["rows"] == [[len(TICKERS), 4000]], answer

    server.sql("DROP MATERIALIZED VIEW latest_price")
    assert not (server.data_dir / "lake" / "latest_price").exists()
    server.restart()
    assert server.sql("SHOW MATERIALIZED VIEWS")["rows"] == []


def test_late_events_go_to_the_views_errors_table(server):
    server.sql(
        "CREATE STREAM t (k TEXT NOT NULL, ts TIMESTAMP NOT NULL) "
        "WITH (shards = 1, event_time = 'ts', watermark = '0 seconds')"
    )
    server.sql(
        "CREATE MATERIALIZED VIEW t_10s AS SELECT window_start, count(*) AS n "
        "FROM TUMBLE(t, ts, INTERVAL '10 seconds') GROUP BY window_start, window_end"
    )

    def send(*stamps):
        body = "".join(json.dumps({"k": "a", "ts": s}) + "\n" for s in stamps).encode()
        assert server.ingest("t", body)[0] == 200

    send("2026-01-05T00:00:01Z", "2026-01-05T00:00:15Z")
    wait_for(lambda: table(server, "t_10s"), "the first window")
    send("2026-01-05T00:00:02Z", "2026-01-05T00:00:31Z")
    errors = wait_for(lambda: table(server, "t_10s_errors"), "the late event")
    assert [e["reason"].split(":")[0] for e in errors] == ["late"], errors
    assert json.loads(errors[0]["raw"])["k"] == "a"
    rows = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(table(server, "t_10s")), "the second window")
    assert sorted(r["n"] for r in rows) == [1, 1]


def test_a_stream_views_read_is_refused_to_the_kinesis_api_as_to_sql(server):
    """One rule for every door: DeleteStream of a stream that views read is refused, as DROP
    STREAM is, and the view goes on; once the view is dropped, the stream may go."""
    from conftest import expect_client_error

    server.sql(TICKS)
    server.sql(LATEST_PRICE)
    kinesis = server.kinesis_client()
    expect_client_error(lambda: kinesis.delete_stream(StreamName="ticks"), "ResourceInUseException")
    status, body = server.sql_status("DROP STREAM ticks")
    assert (status, body["code"]) == (409, "stream_in_use"), body
    assert "latest_price" in body["error"], body
    assert kinesis.list_streams()["StreamNames"] == ["ticks"]
    _, _, answer = server.get("/v1/views")
    assert answer["views"][0]["last_error"] is None, answer
    server.sql("DROP MATERIALIZED VIEW latest_price")
    kinesis.delete_stream(StreamName="ticks")
    assert kinesis.list_streams()["StreamNames"] == []
