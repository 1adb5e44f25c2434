"""HTTP ingest, SQL DDL, /metrics, /v1/streams and restart persistence."""

from __future__ import annotations

import http.client
import json
import re

from conftest import (
    all_records,
    assert_http_error,
    data_dir_snapshot,
    expect_client_error,
    raw_http,
    read_stream,
    rows_as_dicts,
    shard_for_key,
    shard_ranges,
)

MIB = 1 << 20
POSITION_RE = re.compile(r"Line: ?(\d+), Column: ?(\d+)")


def ndjson(events) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def make_stream(server, name: str, shards: int = 4):
    server.sql(f"CREATE STREAM {name} WITH (shards = {shards}, format = 'json')")


def shard_index(shard_id: str) -> int:
    return int(shard_id.split("-")[1])


def seq_value(v) -> int:
    assert (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, str) and v.isdigit()
    ), f"a shard sequence must be a number (or decimal string), got {v!r}"
    return int(v)


def check_ingest_answer(resp, accepted: int) -> dict[int, int]:
    status, _, body = resp
    assert status == 200, f"ingest → HTTP {status}: {body!r}"
    assert isinstance(body, dict), body
    assert body.get("accepted") == accepted, f"accepted {body.get('accepted')!r}, sent {accepted}"
    seqs = body.get("shard_sequences")
    assert isinstance(seqs, dict) and seqs, f"shard_sequences missing: {body!r}"
    out = {}
    for k, v in seqs.items():
        assert isinstance(k, str) and k.isdigit(), f"shard_sequences keys are shard indexes: {k!r}"
        out[int(k)] = seq_value(v)
    return out


def snapshot(kinesis, stream):
    """What a stream holds: sorted (shard, seq, key, data)."""
    return sorted(
        (r["_shard"], int(r["SequenceNumber"]), r["PartitionKey"], r["Data"])
        for r in all_records(kinesis, stream)
    )


def listed_records(server, stream):
    status, _, body = server.get("/v1/streams")
    assert status == 200, body
    entry = [s for s in body["streams"] if s["name"] == stream]
    assert len(entry) == 1, f"/v1/streams: {body}"
    return entry[0]["records"]


# --------------------------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------------------------


def test_ndjson_ingest_key_routing_and_answer(server, kinesis):
    make_stream(server, "ev", 4)
    ranges = shard_ranges(kinesis, "ev")
    events = [{"user": f"u{i % 7}", "n": i, "pad": "x" * (i % 13)} for i in range(50)]
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    body = b"\n".join(lines[:20]) + b"\n\n\n" + b"\n".join(lines[20:]) + b"\n"
    seqs = check_ingest_answer(server.ingest("ev", body, key="user"), 50)

    per_shard = read_stream(kinesis, "ev")
    by_data = {}
    for sid, recs in per_shard.items():
        for r in recs:
            assert r["Data"] not in by_data, f"record stored twice: {r['Data']!r}"
            by_data[r["Data"]] = (sid, r)
    assert sorted(by_data) == sorted(lines), "stored records must be the NDJSON lines, byte for byte"
    user_shard = {}
    for line, e in zip(lines, events):
        sid, r = by_data[line]
        assert r["PartitionKey"] == e["user"], f"PartitionKey {r['PartitionKey']!r} for {e}"
        assert sid == shard_for_key(ranges, e["user"]), f"{e['user']} landed in {sid}"
        assert user_shard.setdefault(e["user"], sid) == sid, f"key {e['user']} in two shards"
    for sid, recs in per_shard.items():
        ns = [json.loads(r["Data"])["n"] for r in recs]
        assert ns == sorted(ns), f"{sid}: records out of line order: {ns}"
        if recs:
            idx = shard_index(sid)
            assert idx in seqs, f"shard {idx} got records but is missing from shard_sequences {seqs}"
            assert seqs[idx] == int(recs[-1]["SequenceNumber"]), (
                f"shard_sequences[{idx}]={seqs[idx]}, last record there has "
                f"SequenceNumber {recs[-1]['SequenceNumber']}"
            )
        else:
            assert shard_index(sid) not in seqs, f"empty shard {sid} in shard_sequences {seqs}"

    # Lines that are not JSON, or lack the key field, get the empty key.
    odd = [b"not json at all", b'{"other": 1}', b"[1,2,3]", b'{"user": "u1", "n": 999}']
    check_ingest_answer(server.ingest("ev", b"\n".join(odd), key="user"), 4)
    got = {r["Data"]: r for r in all_records(kinesis, "ev")}
    empty_shard = shard_for_key(ranges, "")
    for line in odd[:3]:
        assert got[line]["PartitionKey"] == "", f"{line!r}: key should be empty, got {got[line]['PartitionKey']!r}"
        assert got[line]["_shard"] == empty_shard, f"{line!r}: empty key goes to {empty_shard}"
    assert got[odd[3]]["PartitionKey"] == "u1" and got[odd[3]]["_shard"] == user_shard["u1"]

    # Without ?key= records are accepted too.
    check_ingest_answer(server.ingest("ev", b'{"a":1}\n{"a":2}\n{"a":3}'), 3)
    assert len(all_records(kinesis, "ev")) == 57
    assert listed_records(server, "ev") == 57


def test_json_array_and_object_ingest(server, kinesis):
    make_stream(server, "arr", 3)
    ranges = shard_ranges(kinesis, "arr")
    events = [{"user": f"user-{i % 5}", "n": i, "nested": {"x": [i, str(i)]}} for i in range(20)]
    body = json.dumps(events, indent=2).encode()  # multi-line on purpose
    seqs = check_ingest_answer(
        server.ingest("arr", body, key="user", content_type="application/json"), 20
    )
    recs = all_records(kinesis, "arr")
    assert sorted(json.loads(r["Data"])["n"] for r in recs) == list(range(20))
    for r in recs:
        e = json.loads(r["Data"])
        assert e == events[e["n"]], f"stored event differs: {e}"
        assert r["PartitionKey"] == e["user"], r
        assert r["_shard"] == shard_for_key(ranges, e["user"]), r
    assert set(seqs) == {int(r["_shard"].split("-")[1]) for r in recs}

    one = {"user": "solo", "n": 100}
    check_ingest_answer(
        server.ingest("arr", json.dumps(one).encode(), key="user", content_type="application/json"), 1
    )
    recs = all_records(kinesis, "arr")
    solo = [r for r in recs if json.loads(r["Data"]).get("n") == 100]
    assert len(solo) == 1 and json.loads(solo[0]["Data"]) == one and solo[0]["PartitionKey"] == "solo"
    assert len(recs) == 21


def test_bad_requests_change_nothing(server, kinesis, tmp_path):
    make_stream(server, "ev", 4)
    check_ingest_answer(
        server.ingest("ev", ndjson({"user": f"u{i % 3}", "n": i} for i in range(30)), key="user"), 30
    )
    before = snapshot(kinesis, "ev")
    assert len(before) == 30

    def unchanged(what):
        now = snapshot(kinesis, "ev")
        assert now == before, f"after {what}: stream changed ({len(before)} → {len(now)} records)"
        assert listed_records(server, "ev") == 30, f"after {what}: /v1/streams count changed"

    good = ndjson({"user": "g", "n": 1000 + i} for i in range(5))

    # Unknown stream.
    assert_http_error(server.ingest("nosuch", good), 404, "stream_not_found", "nosuch")
    unchanged("unknown stream")

    # Invalid names.
    for name in ["bad$name", ".hidden", "x" * 129, "sp%20ace", "caf%C3%A9", "a*b"]:
        assert_http_error(
            server.ingest(name, good), 400, "invalid_stream_name", any_of=("name",)
        )
    unchanged("invalid names")

    # Path tricks: 400 or 404, never 5xx, never touching files.
    files_before = data_dir_snapshot(tmp_path)
    for name in ["a%2Fb", "..", "%00", ".", "a%2F..%2F..%2Fescape", "%2E%2E", "..%2F..%2Fescape"]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", f"/v1/streams/{name}/records", body=good,
                         headers={"Content-Type": "application/x-ndjson"})
            resp = conn.getresponse()
            text = resp.read()
        finally:
            conn.close()
        assert resp.status in (400, 404), f"POST /v1/streams/{name}/records → {resp.status}: {text[:300]!r}"
    after = {p for p in data_dir_snapshot(tmp_path) if not p.startswith("logs")}
    assert after == {p for p in files_before if not p.startswith("logs")}, (
        f"path-trick names touched files: {sorted(after ^ files_before)}"
    )
    assert not (tmp_path.parent / "escape").exists()
    unchanged("path-trick names")

    # Invalid JSON arrays: line and column named, nothing stored.
    for bad in [
        b'[\n  {"user": "g", "n": 1},\n  {"user": ]\n]',
        b'[{"user": "g", "n": 1}',
        b'[{"user": "g", "n": 1}] trailing',
        b'[{"user": "g", "n": 1}, {"user": "g", "n": 2}, nope]',
    ]:
        msg = assert_http_error(
            server.ingest("ev", bad, key="user", content_type="application/json"),
            400, "invalid_json", "line", "column",
        )
        assert re.search(r"\d", msg), f"invalid_json message should give numbers: {msg!r}"
        unchanged(f"invalid JSON {bad[:30]!r}")
    m = assert_http_error(
        server.ingest("ev", b'[\n  {"user": "g", "n": 1},\n  {"user": ]\n]', content_type="application/json"),
        400, "invalid_json", "line 3",
    )
    assert "column" in m.lower()

    # A record over 1 MiB in an otherwise good batch: all of it refused.
    huge = json.dumps({"user": "g", "blob": "y" * MIB}).encode()
    assert len(huge) > MIB
    assert_http_error(
        server.ingest("ev", good + huge + b"\n" + good, key="user"), 400, "record_too_large",
        any_of=("large", "1048576", "limit", "1 mib"),
    )
    unchanged("record_too_large (NDJSON)")
    arr = json.dumps([{"user": "g", "n": 1}, {"user": "g", "blob": "y" * MIB}, {"user": "g", "n": 2}]).encode()
    assert_http_error(
        server.ingest("ev", arr, key="user", content_type="application/json"), 400, "record_too_large",
        any_of=("large", "1048576", "limit", "1 mib"),
    )
    unchanged("record_too_large (JSON array)")

    # Bodies over 16 MiB: 413, with a Content-Length and chunked.
    line = json.dumps({"user": "g", "blob": "z" * (100 * 1024)}).encode() + b"\n"
    body20 = line * ((20 * MIB) // len(line) + 1)
    assert len(body20) > 20 * MIB
    for chunked in (False, True):
        status, headers, answer = raw_http(
            server.port, "POST", "/v1/streams/ev/records?key=user",
            {"Content-Type": "application/x-ndjson"}, body20, chunked=chunked,
        )
        assert_http_error((status, headers, answer), 413, "body_too_large",
                          any_of=("body", "large", "limit", "16"))
        unchanged(f"20 MiB body (chunked={chunked})")

    # Empty bodies.
    for empty in (b"", b"\n", b"\n\n  \n"):
        assert_http_error(server.ingest("ev", empty), 400, "no_records",
                          any_of=("no record", "empty", "no event", "nothing"))
        unchanged(f"empty body {empty!r}")
    status, _, answer = server.ingest("ev", b"[]", content_type="application/json")
    assert (status == 400 and answer.get("code") == "no_records") or (
        status == 200 and answer.get("accepted") == 0
    ), f"empty JSON array → {status}: {answer!r}"
    unchanged("empty JSON array")

    # And the stream still takes writes.
    check_ingest_answer(server.ingest("ev", good, key="user"), 5)
    assert len(snapshot(kinesis, "ev")) == 35


def test_record_size_boundary_and_large_body(server, kinesis):
    make_stream(server, "sizes", 2)
    prefix = b'{"k":"a","blob":"'
    exact = prefix + b"q" * (MIB - len(prefix) - 2) + b'"}'
    assert len(exact) == MIB
    check_ingest_answer(server.ingest("sizes", exact + b"\n", key="k"), 1)
    # 12 records of almost 1 MiB: 12 MiB, under the 16 MiB limit.
    big_lines = [
        json.dumps({"k": f"b{i}", "blob": chr(97 + i) * (MIB - 100)}).encode() for i in range(12)
    ]
    body = b"\n".join(big_lines)
    assert 11 * MIB < len(body) < 16 * MIB
    check_ingest_answer(server.ingest("sizes", body, key="k"), 12)
    got = sorted(r["Data"] for r in all_records(kinesis, "sizes"))
    assert got == sorted([exact] + big_lines), "large records not stored byte for byte"


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------

ORDERS_DDL = (
    "CREATE STREAM orders (id BIGINT NOT NULL, customer VARCHAR, amount DOUBLE, ts TIMESTAMP) "
    "WITH (shards = 4, format = 'json', event_time = 'ts', watermark = '5 seconds', "
    "retention = '24 hours')"
)


def truthy_nullable(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    assert s in ("yes", "no", "true", "false"), f"is_nullable should be YES/NO or a bool: {v!r}"
    return s in ("yes", "true")


def describe(server, name):
    res = server.sql(f"DESCRIBE {name}")
    rows = rows_as_dicts(res)
    for r in rows:
        assert {"column_name", "data_type", "is_nullable"} <= set(r), f"DESCRIBE columns: {res['columns']}"
    return rows


def show(server):
    res = server.sql("SHOW STREAMS")
    names = [c["name"] for c in res["columns"]]
    assert "name" in names and "shards" in names, f"SHOW STREAMS columns: {res['columns']}"
    for c in res["columns"]:
        assert "type" in c, f"column without a type: {c}"
    return {r["name"]: r for r in rows_as_dicts(res)}


def test_sql_ddl(server, kinesis):
    res = server.sql(ORDERS_DDL)
    assert isinstance(res["columns"], list) and isinstance(res["rows"], list), res

    streams = show(server)
    assert "orders" in streams and int(streams["orders"]["shards"]) == 4, streams

    rows = describe(server, "orders")
    assert [r["column_name"] for r in rows] == ["id", "customer", "amount", "ts"], rows
    nullable = {r["column_name"]: truthy_nullable(r["is_nullable"]) for r in rows}
    assert nullable == {"id": False, "customer": True, "amount": True, "ts": True}, rows
    types = {r["column_name"]: str(r["data_type"]).upper() for r in rows}
    assert "INT" in types["id"], types
    assert any(t in types["customer"] for t in ("CHAR", "STRING", "UTF8", "TEXT")), types
    assert any(t in types["amount"] for t in ("DOUBLE", "FLOAT")), types
    assert "TIMESTAMP" in types["ts"], types

    status, body = server.sql_status(ORDERS_DDL)
    assert status == 409 and body.get("code") == "stream_exists", f"duplicate CREATE → {status} {body}"
    assert "orders" in body.get("error", ""), body

    # IF NOT EXISTS: succeeds and changes nothing.
    for _ in range(2):
        server.sql("CREATE STREAM IF NOT EXISTS orders (other INT) WITH (shards = 2, format = 'json')")
    assert int(show(server)["orders"]["shards"]) == 4
    assert describe(server, "orders") == rows
    server.sql("CREATE STREAM IF NOT EXISTS fresh WITH (shards = 2, format = 'json')")
    server.sql("CREATE STREAM IF NOT EXISTS fresh WITH (shards = 2, format = 'json')")
    assert int(show(server)["fresh"]["shards"]) == 2
    assert len(shard_ranges(kinesis, "fresh")) == 2

    server.sql("DROP STREAM orders")
    assert "orders" not in show(server)
    expect_client_error(kinesis.describe_stream, "ResourceNotFoundException", StreamName="orders")
    status, body = server.sql_status("DROP STREAM orders")
    assert status == 404 and body.get("code") == "stream_not_found", f"DROP missing → {status} {body}"
    server.sql("DROP STREAM IF EXISTS orders")
    status, body = server.sql_status("DESCRIBE orders")
    assert 400 <= status < 500 and isinstance(body, dict) and body.get("error"), (status, body)
    assert set(show(server)) == {"fresh"}

    # Re-create after drop.
    server.sql(ORDERS_DDL)
    assert int(show(server)["orders"]["shards"]) == 4


def test_sql_errors(server):
    for stmt, line in [
        ("CREATE STREAMM x WITH (shards = 1)", 1),
        ("CREATE STREAM s WITH (shards = = 1)", 1),
        ("CREATE STREAM s (a BIGINT NOT) WITH (shards = 1)", 1),
        ("CREATE STREAM s\nWITH (shards = = 4)", 2),
        ("CREATE STREAM s (\n  a BIGINT,\n  b VARCHAR\n) WITH (shards = = 1)", 4),
    ]:
        status, body = server.sql_status(stmt)
        assert status == 400, f"{stmt!r} → {status}: {body!r}"
        assert isinstance(body, dict) and body.get("code") == "sql_parse_error", f"{stmt!r} → {body!r}"
        m = POSITION_RE.search(body.get("error", ""))
        assert m, f"{stmt!r}: parse error should name 'Line: N, Column: M': {body.get('error')!r}"
        assert int(m.group(1)) == line, f"{stmt!r}: error on line {line}, message says {m.group(0)}"
        assert int(m.group(2)) >= 1
    status, body = server.sql_status("CREATE STREAM s WITH (shards = = 1)")
    col = int(POSITION_RE.search(body["error"]).group(2))
    assert 23 <= col <= 33, f"the error is in the WITH clause (columns 23-33), message says column {col}"

    for raw in [b"not json", b'{"statement": "SHOW STREAMS"}', b'{"sql": 42}']:
        status, _, body = server.post("/v1/sql", raw, {"Content-Type": "application/json"})
        assert 400 <= status < 500, f"/v1/sql with {raw!r} → {status}: {body!r}"
        assert isinstance(body, dict) and body.get("error") and body.get("code"), (
            f"/v1/sql error body should be {{error, code}}: {body!r}"
        )
    assert show(server) == {}


# --------------------------------------------------------------------------------------------
# Metrics and listing
# --------------------------------------------------------------------------------------------


def test_metrics(server):
    make_stream(server, "mstream", 2)
    check_ingest_answer(server.ingest("mstream", ndjson({"k": i} for i in range(20)), key="k"), 20)
    check_ingest_answer(server.ingest("mstream", ndjson({"k": i} for i in range(5))), 5)
    status, headers, text = server.get("/metrics")
    assert status == 200, text
    assert isinstance(text, str), f"/metrics should be Prometheus text, got {type(text)}"
    m = re.search(
        r'^sluice_stream_records_in_total\{[^}]*stream="mstream"[^}]*\}\s+([0-9.e+]+)\s*$', text, re.M
    )
    assert m, f'no sluice_stream_records_in_total{{stream="mstream"}} in /metrics:\n{text[:3000]}'
    assert float(m.group(1)) == 25, f"records_in_total says {m.group(1)}, 25 were ingested"
    for name in ("sluice_log_fsync_seconds", "sluice_log_append_seconds", "sluice_log_backpressure_total"):
        assert re.search(rf"^{name}", text, re.M), f"{name} missing from /metrics:\n{text[:3000]}"


def test_v1_streams_listing(server, kinesis):
    make_stream(server, "one", 1)
    kinesis.create_stream(StreamName="two", ShardCount=3)
    a = ndjson({"i": i, "s": "abc" * i} for i in range(10))
    check_ingest_answer(server.ingest("one", a), 10)
    kinesis.put_records(
        StreamName="two", Records=[{"Data": b"0123456789", "PartitionKey": f"k{i}"} for i in range(7)]
    )
    status, _, body = server.get("/v1/streams")
    assert status == 200 and isinstance(body, dict), (status, body)
    listing = {s["name"]: s for s in body["streams"]}
    assert set(listing) == {"one", "two"}, listing
    assert listing["one"]["shards"] == 1 and listing["two"]["shards"] == 3, listing
    assert listing["one"]["records"] == 10 and listing["two"]["records"] == 7, listing
    assert listing["one"]["bytes"] >= len(a) - 10, listing  # the lines without their newlines
    assert listing["two"]["bytes"] >= 70, listing


# --------------------------------------------------------------------------------------------
# Restart
# --------------------------------------------------------------------------------------------


def test_definitions_and_records_survive_restart(server, kinesis):
    server.sql(ORDERS_DDL)
    kinesis.create_stream(StreamName="kin", ShardCount=3)
    make_stream(server, "gone", 1)
    server.sql("DROP STREAM gone")
    check_ingest_answer(
        server.ingest(
            "orders",
            ndjson({"id": i, "customer": f"c{i % 4}", "amount": i * 1.5, "ts": "2024-01-01T00:00:00Z"} for i in range(40)),
            key="customer",
        ),
        40,
    )
    kinesis.put_records(StreamName="kin", Records=[{"Data": f"k{i}".encode(), "PartitionKey": f"p{i}"} for i in range(30)])

    shown, desc = show(server), describe(server, "orders")
    data = {s: snapshot(kinesis, s) for s in ("orders", "kin")}
    server.stop()
    server.start(server.data_dir)

    assert show(server) == shown, "SHOW STREAMS changed across a restart"
    assert describe(server, "orders") == desc, "DESCRIBE changed across a restart"
    for s in ("orders", "kin"):
        assert snapshot(kinesis, s) == data[s], f"{s}: records changed across a restart"
    assert listed_records(server, "orders") == 40

    # New writes continue the shards' sequences.
    r = kinesis.put_record(StreamName="kin", Data=b"after", PartitionKey="p1")
    old = [seq for sid, seq, _, _ in data["kin"] if sid == r["ShardId"]]
    assert int(r["SequenceNumber"]) > max(old), "a sequence number was reused after restart"
    check_ingest_answer(server.ingest("orders", b'{"id": 100, "customer": "c1"}', key="customer"), 1)
    assert len(snapshot(kinesis, "orders")) == 41
