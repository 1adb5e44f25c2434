"""The command line: gen | produce into a server, serve --config, and the safe default address."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import time

from conftest import Server, all_records, sluice_bin_path


def run(*args, stdin=None, timeout=120, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(sluice_bin_path()), *args], input=stdin, capture_output=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, f"sluice {' '.join(args)} → {proc.returncode}: {proc.stderr.decode()[-2000:]}"
    return proc


def test_gen_is_deterministic_and_produce_delivers_every_event(server, kinesis):
    events = run("gen", "ticks", "--events", "20000", "--seed", "7").stdout
    assert run("gen", "ticks", "--events", "20000", "--seed", "7").stdout == events, "same seed, same bytes"
    assert run("gen", "ticks", "--events", "20000", "--seed", "8").stdout != events
    lines = events.splitlines()
    assert len(lines) == 20000
    first = json.loads(lines[0])
    assert set(first) == {"ticker", "price", "volume", "ts"} and first["ts"].startswith("2026-01-05T14:30:00.")

    server.sql("CREATE STREAM ticks WITH (shards = 4)")
    produced = run("produce", "ticks", "--server", server.url, "--key", "ticker", "--batch-bytes", "100000", stdin=events)
    assert b"sent 20000 events" in produced.stderr, produced.stderr.decode()

    records = all_records(kinesis, "ticks")
    assert sorted(r["Data"] for r in records) == sorted(lines), "every event arrived once, byte for byte"
    for r in records:
        assert r["PartitionKey"] == json.loads(r["Data"])["ticker"]


def test_gen_paces_a_live_feed():
    started = time.monotonic()
    out = run("gen", "clicks", "--events", "300", "--rate", "200", "--start", "now").stdout
    elapsed = time.monotonic() - started
    assert len(out.splitlines()) == 300
    assert elapsed >= 1.2, f"300 events at 200/s took only {elapsed:.2f} s"


def test_gen_writes_every_use_case():
    for workload, field in [("payments", "merchant_id"), ("logs", "service"), ("sensors", "device_id")]:
        lines = run("gen", workload, "--events", "100").stdout.splitlines()
        assert len(lines) == 100 and all(field in json.loads(line) for line in lines), workload


def test_produce_replays_a_file_at_a_steady_rate_and_loops(server, kinesis):
    server.sql("CREATE STREAM replay WITH (shards = 2)")
    history = b"".join(b'{"n":%d}\n' % i for i in range(50)) + b"\n"
    started = time.monotonic()
    run("produce", "replay", "--server", server.url, "--rate", "100", "--quiet", stdin=history)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.4, f"50 events at 100/s took only {elapsed:.2f} s"
    assert sorted(json.loads(r["Data"])["n"] for r in all_records(kinesis, "replay")) == list(range(50))

    # --loop goes round the file until stopped, at the rate asked.
    proc = subprocess.Popen(
        [str(sluice_bin_path()), "produce", "replay", "--server", server.url, "--rate", "200",
         "--loop", "--quiet"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdin.write(b'{"n":"a"}\n{"n":"b"}\n')
    proc.stdin.close()
    time.sleep(2)
    proc.kill()
    proc.wait()
    replayed = [json.loads(r["Data"])["n"] for r in all_records(kinesis, "replay")]
    looped = [n for n in replayed if isinstance(n, str)]
    assert 200 <= len(looped) <= 500, len(looped)
    assert looped.count("a") >= 100 and looped.count("b") >= 100
    refused = run("produce", "replay", "--server", server.url, "--loop", stdin=b"", check=False)
    assert refused.returncode != 0 and b"--rate" in refused.stderr


def test_produce_reports_a_refused_request(server):
    proc = run("produce", "nope", "--server", server.url, stdin=b'{"a":1}\n', check=False)
    assert proc.returncode != 0
    assert b"stream_not_found" in proc.stderr, proc.stderr.decode()


def test_serve_applies_the_config_file_idempotently(tmp_path):
    config = tmp_path / "sluice.toml"
    config.write_text(
        'sql = """\n'
        "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL)\n"
        "  WITH (shards = 3, event_time = 'ts', watermark = '5 seconds');\n"
        "CREATE STREAM logs WITH (format = 'text');\n"
        "CREATE MATERIALIZED VIEW highs AS SELECT ticker, max(price) AS high FROM ticks GROUP BY ticker;\n"
        '"""\n'
    )
    srv = Server(tmp_path / "logs")
    srv.extra_args = ["--config", str(config)]
    srv.start(tmp_path / "data")
    try:
        names = [row[0] for row in srv.sql("SHOW STREAMS")["rows"]]
        assert names == ["logs", "ticks"]
        status, _, _ = srv.ingest("ticks", b'{"ticker":"A","price":1,"ts":"2026-01-05T14:30:00Z"}\n')
        assert status == 200
        srv.stop()
        srv.start()  # the same file again: nothing changes, the record is still there
        shown = {row[0]: row for row in srv.sql("SHOW STREAMS")["rows"]}
        assert shown["ticks"][1] == 3 and shown["ticks"][6] == 1, shown
        assert [row[0] for row in srv.sql("SHOW MATERIALIZED VIEWS")["rows"]] == ["highs"]
        deadline = time.monotonic() + 30
        while srv.sql("SELECT * FROM highs")["rows"] != [["A", 1.0]]:
            assert time.monotonic() < deadline, "the view never took the record"
            time.sleep(0.2)
        srv.stop()

        original = config.read_text()
        config.write_text(original.replace("max(price)", "min(price)"))
        proc = subprocess.run(
            [str(sluice_bin_path()), "serve", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
             "--pg", "127.0.0.1:0", "--config", str(config)],
            capture_output=True, timeout=30,
        )
        assert proc.returncode != 0
        assert b"materialized view 'highs' exists with a different definition" in proc.stderr, proc.stderr.decode()
        config.write_text(original)

        config.write_text(config.read_text().replace("shards = 3", "shards = 5"))
        proc = subprocess.run(
            [str(sluice_bin_path()), "serve", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
             "--config", str(config)],
            capture_output=True, timeout=30,
        )
        assert proc.returncode != 0
        assert b"different definition" in proc.stderr, proc.stderr.decode()
    finally:
        srv.stop()


def test_serve_refuses_a_non_loopback_address_without_authentication(tmp_path):
    proc = subprocess.run(
        [str(sluice_bin_path()), "serve", "--data-dir", str(tmp_path / "d"), "--http", "0.0.0.0:0"],
        capture_output=True, timeout=30,
    )
    assert proc.returncode != 0
    assert b"without authentication" in proc.stderr and b"SLUICE_ADMIN_SECRET" in proc.stderr, proc.stderr.decode()
    assert not any((tmp_path / "d").glob("streams/*")), "nothing was created"


def test_serve_refuses_a_lake_it_cannot_keep(tmp_path):
    for lake, message in [
        ("gs://bucket/lake", b"s3://bucket/prefix or a folder"),
        ("s3://", b"expected s3://bucket/prefix"),
        (str(tmp_path), b"overlap"),
        (str(tmp_path / "d" / "streams"), b"overlap"),
    ]:
        proc = subprocess.run(
            [str(sluice_bin_path()), "serve", "--data-dir", str(tmp_path / "d"), "--lake", lake,
             "--http", "127.0.0.1:0", "--pg", "127.0.0.1:0"],
            capture_output=True, timeout=30,
        )
        assert proc.returncode != 0 and message in proc.stderr, (lake, proc.stderr.decode())


def history(folder, n=30):
    """`n` ticks a second apart, split over a Parquet file (even ones), a CSV file (odd ones
    before 20) and an NDJSON file (odd ones from 20): each file in time order, the three
    interleaved."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = dt.datetime(2026, 1, 5, 14, 30)
    rows = [{"ticker": f"T{i % 3}", "price": 10.0 + i, "ts": base + dt.timedelta(seconds=i)} for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows[0::2]), folder / "a.parquet")
    (folder / "b.csv").write_text("ticker,price,ts\n" + "".join(
        f"{r['ticker']},{r['price']},{r['ts'].isoformat()}\n" for r in rows[1:20:2]))
    (folder / "c.ndjson").write_text("".join(
        json.dumps({"ticker": r["ticker"], "price": r["price"], "ts": r["ts"].isoformat()}) + "\n"
        for r in rows[21::2]))
    return rows


def test_replay_sends_files_of_every_format_in_event_time_order_at_the_speed_asked(server, tmp_path):
    history(tmp_path)
    server.sql("CREATE STREAM ticks (ticker TEXT, price DOUBLE, ts TIMESTAMP NOT NULL) WITH (shards = 1)")
    started = time.monotonic()
    out = run("replay", str(tmp_path / "a.parquet"), str(tmp_path / "*.csv"), str(tmp_path / "c.ndjson"),
              "--stream", "ticks", "--server", server.url, "--event-time", "ts", "--speed", "20x")
    elapsed = time.monotonic() - started
    # 29 s of event time at 20× take 1.45 s (the pacing's accuracy is a benchmark's figure).
    assert elapsed >= 1.3, f"29 s of events at 20x took only {elapsed:.2f} s"
    assert b"sent 30 events" in out.stderr, out.stderr.decode()
    # One shard: the log's order is the order sent, which is event time's.
    rows = server.sql("SELECT price, ts FROM ticks ORDER BY _seq")["rows"]
    assert [r[0] for r in rows] == [10.0 + i for i in range(30)]

    # A rate instead of a speed, and the files' own order without --event-time.
    server.sql("CREATE STREAM copy (ticker TEXT, price DOUBLE, ts TIMESTAMP NOT NULL) WITH (shards = 1)")
    started = time.monotonic()
    run("replay", str(tmp_path / "a.parquet"), "--stream", "copy", "--server", server.url, "--rate", "20",
        "--quiet")
    assert time.monotonic() - started >= 0.6, "15 events at 20/s"
    assert server.sql("SELECT count(*) FROM copy")["rows"] == [[15]]


def test_replay_refuses_what_it_cannot_read_and_sends_nothing(server, tmp_path):
    history(tmp_path)
    server.sql("CREATE STREAM ticks (ticker TEXT, price DOUBLE, ts TIMESTAMP NOT NULL)")
    (tmp_path / "notes.txt").write_text("hello\n")
    cases = [
        (["notes.txt"], b"replay reads .parquet, .csv"),
        (["a.parquet", "--event-time", "when"], b'no column "when"'),
        (["a.parquet", "--speed", "10x"], b"--event-time"),
        (["a.parquet", "--event-time", "ts", "--speed", "fast"], b"is not a speed"),
        (["missing.parquet"], b"missing.parquet"),
    ]
    for args, message in cases:
        args = [str(tmp_path / args[0]), *args[1:]]
        proc = run("replay", *args, "--stream", "ticks", "--server", server.url, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr.decode())
    refused = run("replay", str(tmp_path / "a.parquet"), "--stream", "nope", "--server", server.url, check=False)
    assert refused.returncode != 0 and b"stream_not_found" in refused.stderr, refused.stderr.decode()
    assert server.sql("SELECT count(*) FROM ticks")["rows"] == [[0]]


def test_replay_reads_files_from_s3(server, tmp_path, s3_lake):
    history(tmp_path)
    client = s3_lake.s3.client()
    for name in ("a.parquet", "b.csv"):
        client.upload_file(str(tmp_path / name), s3_lake.bucket, f"{s3_lake.prefix}/history/{name}")
    server.sql("CREATE STREAM ticks (ticker TEXT, price DOUBLE, ts TIMESTAMP NOT NULL) WITH (shards = 1)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_lake.s3.storage_options())
    proc = subprocess.run(
        [str(sluice_bin_path()), "replay", f"s3://{s3_lake.bucket}/{s3_lake.prefix}/history/*.parquet",
         f"s3://{s3_lake.bucket}/{s3_lake.prefix}/history/b.csv", "--stream", "ticks", "--server",
         server.url, "--event-time", "ts", "--quiet"],
        capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    rows = server.sql("SELECT price FROM ticks ORDER BY _seq")["rows"]
    assert [r[0] for r in rows] == [10.0 + i for i in range(20)] + [10.0 + i for i in range(20, 30, 2)]
