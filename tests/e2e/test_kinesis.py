"""The Kinesis Data Streams API of Sluice, driven by boto3 and by raw JSON 1.1 requests."""

from __future__ import annotations

import base64
import json
import random
import re
import time

from botocore.exceptions import ClientError

from conftest import (
    MAX_HASH,
    all_records,
    data_dir_snapshot,
    error_code,
    expect_client_error,
    read_from_iterator,
    read_shard,
    read_stream,
    rows_as_dicts,
    shard_for_hash,
    shard_for_key,
    shard_ranges,
)

MIB = 1 << 20
SHARD_ID_RE = re.compile(r"^shardId-\d{12}$")

THREE_SHARD_SPLITS = (
    113427455640312821154458202477256070485,
    226854911280625642308916404954512140970,
)


def shard_id(i: int) -> str:
    return f"shardId-{i:012d}"


def datas(records) -> list[bytes]:
    return [r["Data"] for r in records]


def raw_error(resp, name: str, status: int = 400):
    got_status, body = resp
    assert got_status == status, f"expected HTTP {status} {name}, got {got_status}: {body!r}"
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    typ = str(body.get("__type", ""))
    assert typ.split("#")[-1] == name, f"expected __type {name!r}, got {body!r}"
    msg = body.get("message", body.get("Message"))
    assert isinstance(msg, str), f"error body lacks a message: {body!r}"
    return body


def raw_error_any(resp, *names: str):
    got_status, body = resp
    assert got_status == 400, f"expected HTTP 400 ({'/'.join(names)}), got {got_status}: {body!r}"
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    typ = str(body.get("__type", "")).split("#")[-1]
    assert typ in names, f"expected __type in {names}, got {body!r}"
    return body


# --------------------------------------------------------------------------------------------
# Control plane
# --------------------------------------------------------------------------------------------


def test_create_describe_list_delete(server, kinesis):
    kinesis.create_stream(StreamName="three", ShardCount=3)
    kinesis.create_stream(StreamName="default4")  # ShardCount absent → 4

    desc = kinesis.describe_stream(StreamName="three")["StreamDescription"]
    assert desc["StreamName"] == "three", desc
    assert desc["StreamStatus"] == "ACTIVE", f"StreamStatus: {desc.get('StreamStatus')}"
    assert desc.get("HasMoreShards") is False, f"HasMoreShards: {desc.get('HasMoreShards')!r}"
    shards = desc["Shards"]
    assert [s["ShardId"] for s in shards] == [shard_id(i) for i in range(3)], shards
    for s in shards:
        assert SHARD_ID_RE.match(s["ShardId"]), s
        assert "StartingSequenceNumber" in s["SequenceNumberRange"], s
    ranges = [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    ]
    a, b = THREE_SHARD_SPLITS
    assert ranges == [(0, a - 1), (a, b - 1), (b, MAX_HASH)], f"3-shard hash ranges: {ranges}"

    listed = kinesis.list_shards(StreamName="three")
    assert not listed.get("NextToken"), f"ListShards should not paginate: {listed.get('NextToken')}"
    assert [
        (s["ShardId"], s["HashKeyRange"]["StartingHashKey"], s["HashKeyRange"]["EndingHashKey"])
        for s in listed["Shards"]
    ] == [
        (s["ShardId"], s["HashKeyRange"]["StartingHashKey"], s["HashKeyRange"]["EndingHashKey"])
        for s in shards
    ], "ListShards and DescribeStream disagree"

    r4 = shard_ranges(kinesis, "default4")
    assert [sid for sid, _, _ in r4] == [shard_id(i) for i in range(4)], r4
    assert r4[0][1] == 0 and r4[-1][2] == MAX_HASH, f"4 shards must cover 0..2^128-1: {r4}"
    for (_, _, end), (_, start, _) in zip(r4, r4[1:]):
        assert start == end + 1, f"4-shard ranges not contiguous: {r4}"
    assert r4[1][1] == 2**126, f"4 shards split at multiples of 2^126: {r4}"

    summary = kinesis.describe_stream_summary(StreamName="three")["StreamDescriptionSummary"]
    assert summary["StreamName"] == "three", summary
    assert summary["OpenShardCount"] == 3, summary
    summary4 = kinesis.describe_stream_summary(StreamName="default4")["StreamDescriptionSummary"]
    assert summary4["OpenShardCount"] == 4, f"default ShardCount should be 4: {summary4}"

    ls = kinesis.list_streams()
    assert {"three", "default4"} <= set(ls["StreamNames"]), ls
    assert ls.get("HasMoreStreams") is False, ls

    e = expect_client_error(
        kinesis.create_stream, "ResourceInUseException", StreamName="three", ShardCount=2
    )
    assert isinstance(e, kinesis.exceptions.ResourceInUseException)
    assert kinesis.describe_stream_summary(StreamName="three")["StreamDescriptionSummary"][
        "OpenShardCount"
    ] == 3, "a refused CreateStream must not change the stream"

    # Kinesis-created streams are visible to SQL.
    shown = {r["name"]: r for r in rows_as_dicts(server.sql("SHOW STREAMS"))}
    assert "three" in shown and "default4" in shown, shown
    assert int(shown["three"]["shards"]) == 3, shown["three"]

    kinesis.delete_stream(StreamName="three")
    e = expect_client_error(
        kinesis.describe_stream, "ResourceNotFoundException", StreamName="three"
    )
    assert isinstance(e, kinesis.exceptions.ResourceNotFoundException)
    assert "three" not in kinesis.list_streams()["StreamNames"]
    expect_client_error(kinesis.delete_stream, "ResourceNotFoundException", StreamName="three")
    shown = {r["name"] for r in rows_as_dicts(server.sql("SHOW STREAMS"))}
    assert "three" not in shown, shown

    # The name can be reused; the new stream starts empty.
    kinesis.create_stream(StreamName="three", ShardCount=2)
    assert len(shard_ranges(kinesis, "three")) == 2
    assert sum(len(v) for v in read_stream(kinesis, "three").values()) == 0


# --------------------------------------------------------------------------------------------
# Data plane: everything written is read back exactly once, in the right shard
# --------------------------------------------------------------------------------------------


def test_put_and_read_back_every_record(server, kinesis):
    stream = "many"
    kinesis.create_stream(StreamName=stream, ShardCount=4)
    ranges = shard_ranges(kinesis, stream)
    rng = random.Random(7)
    expected: dict[bytes, dict] = {}  # data → {key, shard, seq}

    def payload(i: int) -> bytes:
        # Binary, unique, variable length (including bytes that are not UTF-8).
        return b"\x00\xff" + i.to_bytes(4, "big") + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))

    n = 0
    for i in range(40):
        key = f"single-{i}"
        data = payload(n)
        n += 1
        r = kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)
        want = shard_for_key(ranges, key)
        assert r["ShardId"] == want, f"PutRecord key {key!r}: shard {r['ShardId']}, MD5 says {want}"
        assert re.match(r"^\d+$", r["SequenceNumber"]), r
        expected[data] = {"key": key, "shard": want, "seq": r["SequenceNumber"]}

    # ExplicitHashKey overrides the partition key's hash.
    for i, (sid, lo, hi) in enumerate(ranges):
        for ehk in (lo, hi, (lo + hi) // 2):
            data = payload(n)
            n += 1
            key = f"explicit-{i}-{ehk % 1000}"
            r = kinesis.put_record(
                StreamName=stream, Data=data, PartitionKey=key, ExplicitHashKey=str(ehk)
            )
            assert r["ShardId"] == sid, f"ExplicitHashKey {ehk} must go to {sid}, went to {r}"
            expected[data] = {"key": key, "shard": sid, "seq": r["SequenceNumber"]}

    for batch in range(3):
        entries = []
        for j in range(500 if batch < 2 else 123):
            key = f"key-{rng.randrange(400)}"
            e = {"Data": payload(n), "PartitionKey": key}
            n += 1
            if j % 50 == 7:  # some explicit hash keys inside PutRecords too
                e["ExplicitHashKey"] = str(rng.randrange(MAX_HASH + 1))
            entries.append(e)
        r = kinesis.put_records(StreamName=stream, Records=entries)
        assert r.get("FailedRecordCount", 0) == 0, f"PutRecords failures: {r.get('FailedRecordCount')}"
        assert len(r["Records"]) == len(entries), "PutRecords must answer one entry per record"
        for e, res in zip(entries, r["Records"]):
            if "ExplicitHashKey" in e:
                want = shard_for_hash(ranges, int(e["ExplicitHashKey"]))
            else:
                want = shard_for_key(ranges, e["PartitionKey"])
            assert "ErrorCode" not in res, res
            assert res["ShardId"] == want, f"{e['PartitionKey']}: {res['ShardId']} != {want}"
            expected[e["Data"]] = {"key": e["PartitionKey"], "shard": want, "seq": res["SequenceNumber"]}

    assert len(expected) == n
    per_shard = read_stream(kinesis, stream)
    seen: dict[bytes, str] = {}
    for sid, recs in per_shard.items():
        for rec in recs:
            d = rec["Data"]
            assert isinstance(d, bytes)
            assert d not in seen, f"record read twice (shards {seen.get(d)} and {sid})"
            seen[d] = sid
            exp = expected.get(d)
            assert exp is not None, f"unknown record read from {sid}: {d[:40]!r}"
            assert rec["PartitionKey"] == exp["key"], f"PartitionKey {rec['PartitionKey']!r} != {exp['key']!r}"
            assert sid == exp["shard"], f"record with key {exp['key']!r} in {sid}, expected {exp['shard']}"
            assert rec["SequenceNumber"] == exp["seq"], (
                f"SequenceNumber read {rec['SequenceNumber']} != acknowledged {exp['seq']}"
            )
            assert "ApproximateArrivalTimestamp" in rec
    missing = [v for k, v in expected.items() if k not in seen]
    assert not missing, f"{len(missing)} acknowledged records never read back, e.g. {missing[:3]}"
    assert len(seen) == n

    # Per-shard sequence numbers from the put answers increase in put order.
    by_shard: dict[str, list[int]] = {}
    for exp in expected.values():
        by_shard.setdefault(exp["shard"], []).append(int(exp["seq"]))
    for sid, seqs in by_shard.items():
        assert len(set(seqs)) == len(seqs), f"{sid}: duplicate sequence numbers acknowledged"

    # The HTTP listing counts the same records.
    status, _, body = server.get("/v1/streams")
    assert status == 200, body
    entry = [s for s in body["streams"] if s["name"] == stream]
    assert entry and entry[0]["records"] == n, f"/v1/streams says {entry}, expected {n} records"


def test_latest_iterator_sees_only_later_records(kinesis):
    stream = "latest"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    early = [{"Data": f"early-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(30)]
    kinesis.put_records(StreamName=stream, Records=early)
    sids = [sid for sid, _, _ in shard_ranges(kinesis, stream)]

    fresh, used = {}, {}
    for sid in sids:
        fresh[sid] = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=sid, ShardIteratorType="LATEST"
        )["ShardIterator"]
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=sid, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]
        r = kinesis.get_records(ShardIterator=it)
        assert r["Records"] == [], f"{sid}: LATEST returned old records {datas(r['Records'])[:5]}"
        assert r["MillisBehindLatest"] == 0, r["MillisBehindLatest"]
        used[sid] = r["NextShardIterator"]

    late = [{"Data": f"late-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(30)]
    res = kinesis.put_records(StreamName=stream, Records=late)
    want = {sid: [] for sid in sids}
    for e, r in zip(late, res["Records"]):
        want[r["ShardId"]].append(e["Data"])

    for sid in sids:
        got_fresh = datas(read_from_iterator(kinesis, fresh[sid], where=sid))
        got_used = datas(read_from_iterator(kinesis, used[sid], where=sid))
        assert got_fresh == want[sid], f"{sid}: LATEST iterator read {got_fresh}, expected {want[sid]}"
        assert got_used == want[sid], f"{sid}: NextShardIterator after LATEST read {got_used}"


def test_at_and_after_sequence_number(kinesis):
    stream = "seqs"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": f"r{i}".encode(), "PartitionKey": "k"} for i in range(30)],
    )
    sid = shard_id(0)
    recs = read_shard(kinesis, stream, sid)
    assert datas(recs) == [f"r{i}".encode() for i in range(30)]
    seqs = [r["SequenceNumber"] for r in recs]

    for k in (0, 10, 29):
        at = read_shard(kinesis, stream, sid, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[k])
        assert [r["SequenceNumber"] for r in at] == seqs[k:], f"AT_SEQUENCE_NUMBER {seqs[k]}"
        after = read_shard(
            kinesis, stream, sid, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[k]
        )
        assert [r["SequenceNumber"] for r in after] == seqs[k + 1 :], f"AFTER_SEQUENCE_NUMBER {seqs[k]}"

    # AFTER the last record, then a new record arrives: it is read.
    it = kinesis.get_shard_iterator(
        StreamName=stream,
        ShardId=sid,
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        StartingSequenceNumber=seqs[-1],
    )["ShardIterator"]
    kinesis.put_record(StreamName=stream, Data=b"r30", PartitionKey="k")
    assert datas(read_from_iterator(kinesis, it)) == [b"r30"]

    expect_client_error(
        kinesis.get_shard_iterator,
        "InvalidArgumentException",
        StreamName=stream,
        ShardId=sid,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber="not-a-number",
    )
    expect_client_error(
        kinesis.get_shard_iterator,
        "InvalidArgumentException",
        "ValidationException",
        StreamName=stream,
        ShardId=sid,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
    )


def test_at_timestamp(kinesis):
    stream = "times"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    sids = [sid for sid, _, _ in shard_ranges(kinesis, stream)]
    early = [{"Data": f"early-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(20)]
    kinesis.put_records(StreamName=stream, Records=early)
    time.sleep(1.1)
    t = time.time()
    time.sleep(0.05)
    late = [{"Data": f"late-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(20)]
    kinesis.put_records(StreamName=stream, Records=late)

    got_late, got_all = [], []
    for sid in sids:
        recs = read_shard(kinesis, stream, sid, "AT_TIMESTAMP", Timestamp=t)
        got_late += datas(recs)
        for r in recs:
            ts = r["ApproximateArrivalTimestamp"].timestamp()
            assert ts >= t - 0.002, f"AT_TIMESTAMP {t} returned a record stamped {ts}"
        got_all += datas(read_shard(kinesis, stream, sid, "AT_TIMESTAMP", Timestamp=t - 3600))
        future = read_shard(kinesis, stream, sid, "AT_TIMESTAMP", Timestamp=t + 3600)
        assert future == [], f"{sid}: AT_TIMESTAMP in the future returned {datas(future)}"
    assert sorted(got_late) == sorted(e["Data"] for e in late), (
        f"AT_TIMESTAMP should return exactly the 20 later records, got {sorted(got_late)}"
    )
    assert sorted(got_all) == sorted(e["Data"] for e in early + late)


def test_get_records_limit_and_millis_behind(kinesis):
    stream = "limits"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": f"r{i}".encode(), "PartitionKey": "k"} for i in range(25)],
    )
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id(0), ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    got, sizes, last = [], [], None
    for _ in range(100):
        r = kinesis.get_records(ShardIterator=it, Limit=7)
        mbl = r["MillisBehindLatest"]
        assert isinstance(mbl, int) and mbl >= 0, f"MillisBehindLatest {mbl!r}"
        assert len(r["Records"]) <= 7, f"Limit=7 returned {len(r['Records'])} records"
        sizes.append(len(r["Records"]))
        got += datas(r["Records"])
        it = r["NextShardIterator"]
        last = r
        if not r["Records"]:
            break
    assert got == [f"r{i}".encode() for i in range(25)], got
    assert max(sizes) == 7, f"Limit=7 never returned 7 records: {sizes}"
    assert last["MillisBehindLatest"] == 0, "caught up, MillisBehindLatest must be 0"
    # Caught up, then more arrives: the same iterator chain continues.
    kinesis.put_record(StreamName=stream, Data=b"r25", PartitionKey="k")
    assert datas(read_from_iterator(kinesis, it)) == [b"r25"]


# --------------------------------------------------------------------------------------------
# PutRecords partial failure, limits
# --------------------------------------------------------------------------------------------


def test_put_records_partial_failure_shape(kinesis):
    stream = "partial"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    probes = {
        "oversize": {"Data": b"x" * (MIB + 1), "PartitionKey": "bad"},
        "ehk-nan": {"Data": b"bad-ehk-nan", "PartitionKey": "bad", "ExplicitHashKey": "not-a-number"},
        "ehk-range": {"Data": b"bad-ehk-range", "PartitionKey": "bad", "ExplicitHashKey": str(2**128)},
    }
    stored: list[bytes] = []
    for label, bad in probes.items():
        good1 = {"Data": f"good1-{label}".encode(), "PartitionKey": "g1"}
        good2 = {"Data": f"good2-{label}".encode(), "PartitionKey": "g2"}
        try:
            resp = kinesis.put_records(StreamName=stream, Records=[good1, bad, good2])
        except ClientError as e:
            assert error_code(e) in ("ValidationException", "InvalidArgumentException"), (
                f"{label}: whole-request rejection must be ValidationException or "
                f"InvalidArgumentException, got {error_code(e)}: {e}"
            )
            now = sorted(r["Data"] for r in all_records(kinesis, stream))
            assert now == sorted(stored), f"{label}: a rejected PutRecords stored something"
            continue
        assert resp["FailedRecordCount"] == 1, f"{label}: FailedRecordCount {resp['FailedRecordCount']}"
        res = resp["Records"]
        assert len(res) == 3, res
        assert res[1].get("ErrorCode") and res[1].get("ErrorMessage"), (
            f"{label}: failed entry needs ErrorCode and ErrorMessage: {res[1]}"
        )
        assert "SequenceNumber" not in res[1], res[1]
        for ok in (res[0], res[2]):
            assert ok.get("SequenceNumber") and ok.get("ShardId") and "ErrorCode" not in ok, ok
        stored += [good1["Data"], good2["Data"]]
        now = sorted(r["Data"] for r in all_records(kinesis, stream))
        assert now == sorted(stored), f"{label}: after a partial failure stored {now}"


def test_record_limits(server, kinesis):
    stream = "big"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    exact = bytes(range(256)) * (MIB // 256)
    assert len(exact) == MIB
    kinesis.put_record(StreamName=stream, Data=exact, PartitionKey="k")

    # Kinesis answers a record over 1 MiB with a ValidationException (a model constraint).
    expect_client_error(
        kinesis.put_record,
        "ValidationException",
        StreamName=stream,
        Data=b"y" * (MIB + 1),
        PartitionKey="k",
    )
    expect_client_error(
        kinesis.put_records,
        "ValidationException",
        StreamName=stream,
        Records=[{"Data": f"n{i}".encode(), "PartitionKey": "k"} for i in range(501)],
    )
    kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": f"ok{i}".encode(), "PartitionKey": f"k{i}"} for i in range(500)],
    )
    # > 5 MiB in one PutRecords.
    expect_client_error(
        kinesis.put_records,
        "ValidationException",
        "InvalidArgumentException",
        StreamName=stream,
        Records=[{"Data": bytes([65 + i]) * 1_000_000, "PartitionKey": f"b{i}"} for i in range(6)],
    )
    # 4 MiB is fine.
    kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": bytes([97 + i]) * MIB, "PartitionKey": f"c{i}"} for i in range(4)],
    )
    # Partition keys of 1..256 characters.
    kinesis.put_record(StreamName=stream, Data=b"key256", PartitionKey="p" * 256)
    expect_client_error(
        kinesis.put_record,
        "ValidationException",
        "InvalidArgumentException",
        StreamName=stream,
        Data=b"key257",
        PartitionKey="p" * 257,
    )
    raw_error_any(
        server.kinesis_raw(
            "PutRecord",
            {"StreamName": stream, "Data": base64.b64encode(b"e").decode(), "PartitionKey": ""},
        ),
        "ValidationException",
        "InvalidArgumentException",
    )

    recs = all_records(kinesis, stream)
    got = sorted(r["Data"] for r in recs)
    want = sorted(
        [exact, b"key256"]
        + [f"ok{i}".encode() for i in range(500)]
        + [bytes([97 + i]) * MIB for i in range(4)]
    )
    assert len(got) == len(want), f"stored {len(got)} records, expected {len(want)}"
    assert got == want, "stored records differ from the accepted ones"
    assert [r for r in recs if r["PartitionKey"] == "p" * 256], "256-char key lost"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_errors_through_boto3(server, kinesis):
    kinesis.create_stream(StreamName="errs", ShardCount=2)
    for call, args in [
        (kinesis.describe_stream, {"StreamName": "nope"}),
        (kinesis.describe_stream_summary, {"StreamName": "nope"}),
        (kinesis.list_shards, {"StreamName": "nope"}),
        (kinesis.delete_stream, {"StreamName": "nope"}),
        (kinesis.put_record, {"StreamName": "nope", "Data": b"x", "PartitionKey": "k"}),
        (kinesis.put_records, {"StreamName": "nope", "Records": [{"Data": b"x", "PartitionKey": "k"}]}),
        (
            kinesis.get_shard_iterator,
            {"StreamName": "nope", "ShardId": shard_id(0), "ShardIteratorType": "TRIM_HORIZON"},
        ),
    ]:
        e = expect_client_error(call, "ResourceNotFoundException", **args)
        assert isinstance(e, kinesis.exceptions.ResourceNotFoundException)

    before = data_dir_snapshot(server.data_dir)
    expect_client_error(
        kinesis.create_stream, "ValidationException", "InvalidArgumentException",
        StreamName="a/b", ShardCount=1,
    )
    expect_client_error(
        kinesis.create_stream, "ValidationException", "InvalidArgumentException",
        StreamName="../escape", ShardCount=1,
    )
    assert data_dir_snapshot(server.data_dir) == before, "an invalid stream name touched files"
    assert not (server.data_dir.parent / "escape").exists()
    names = kinesis.list_streams()["StreamNames"]
    assert "a/b" not in names and "../escape" not in names, names

    expect_client_error(
        kinesis.get_shard_iterator,
        "InvalidArgumentException",
        "ValidationException",
        StreamName="errs",
        ShardId=shard_id(0),
        ShardIteratorType="SIDEWAYS",
    )
    for garbled in ("garbage", base64.b64encode(bytes(range(64))).decode(), "A" * 300):
        e = expect_client_error(kinesis.get_records, "InvalidArgumentException", ShardIterator=garbled)
        assert isinstance(e, kinesis.exceptions.InvalidArgumentException)
    expect_client_error(
        kinesis.get_shard_iterator,
        "ResourceNotFoundException",
        StreamName="errs",
        ShardId="not-a-shard",
        ShardIteratorType="TRIM_HORIZON",
    )
    expect_client_error(
        kinesis.get_shard_iterator,
        "InvalidArgumentException",
        "ResourceNotFoundException",
        StreamName="errs",
        ShardId=shard_id(99),
        ShardIteratorType="TRIM_HORIZON",
    )
    # A stream name is required (DescribeStream also takes StreamARN, so boto3 sends it).
    expect_client_error(kinesis.describe_stream, "ValidationException")
    expect_client_error(
        kinesis.put_record, "ValidationException", "InvalidArgumentException",
        Data=b"x", PartitionKey="k",
    )


def test_errors_through_raw_http(server, kinesis):
    kinesis.create_stream(StreamName="raw", ShardCount=2)
    ok = server.kinesis_raw("DescribeStreamSummary", {"StreamName": "raw"})
    assert ok[0] == 200 and ok[1]["StreamDescriptionSummary"]["OpenShardCount"] == 2, ok

    raw_error(server.kinesis_raw("FlyToTheMoon", {"StreamName": "raw"}), "UnknownOperationException")
    raw_error(server.kinesis_raw("DescribeStream", b"this is {not json"), "SerializationException")
    raw_error(server.kinesis_raw("ListStreams", b"[1, 2"), "SerializationException")
    raw_error(server.kinesis_raw("CreateStream", {"ShardCount": 1}), "ValidationException")
    raw_error(
        server.kinesis_raw("CreateStream", {"StreamName": "typed", "ShardCount": "4"}),
        "SerializationException",
    )
    raw_error(
        server.kinesis_raw("PutRecord", {"StreamName": "raw", "Data": 12, "PartitionKey": "k"}),
        "SerializationException",
    )
    raw_error(
        server.kinesis_raw("GetRecords", {"ShardIterator": 12345}), "SerializationException"
    )
    raw_error(server.kinesis_raw("GetRecords", {}), "ValidationException")
    raw_error(
        server.kinesis_raw("GetShardIterator", {"StreamName": "raw", "ShardIteratorType": "LATEST"}),
        "ValidationException",
    )
    status, _ = server.kinesis_raw("DescribeStreamSummary", {"StreamName": "typed"})
    assert status == 400, "a CreateStream rejected for ShardCount's type must not create the stream"
    raw_error(
        server.kinesis_raw("DescribeStreamSummary", {"StreamName": "typed"}),
        "ResourceNotFoundException",
    )

    records = [
        {"Data": base64.b64encode(f"r{i}".encode()).decode(), "PartitionKey": "k"} for i in range(501)
    ]
    raw_error(server.kinesis_raw("PutRecords", {"StreamName": "raw", "Records": records}), "ValidationException")

    big = base64.b64encode(b"z" * (MIB + 1)).decode()
    raw_error(
        server.kinesis_raw("PutRecord", {"StreamName": "raw", "Data": big, "PartitionKey": "k"}),
        "ValidationException",
    )
    raw_error(
        server.kinesis_raw("PutRecord", {"StreamName": "nope", "Data": "eA==", "PartitionKey": "k"}),
        "ResourceNotFoundException",
    )
    before = data_dir_snapshot(server.data_dir)
    raw_error_any(
        server.kinesis_raw("CreateStream", {"StreamName": "a/b", "ShardCount": 1}),
        "ValidationException",
        "InvalidArgumentException",
    )
    raw_error_any(
        server.kinesis_raw("PutRecord", {"StreamName": "a/b", "Data": "eA==", "PartitionKey": "k"}),
        "ValidationException",
        "InvalidArgumentException",
        "ResourceNotFoundException",
    )
    assert data_dir_snapshot(server.data_dir) == before, "a stream name with '/' touched files"
    raw_error_any(
        server.kinesis_raw(
            "GetShardIterator",
            {"StreamName": "raw", "ShardId": shard_id(0), "ShardIteratorType": "SIDEWAYS"},
        ),
        "InvalidArgumentException",
        "ValidationException",
    )
    raw_error(
        server.kinesis_raw("GetRecords", {"ShardIterator": "%%%garbled%%%"}),
        "InvalidArgumentException",
    )
    # No X-Amz-Target at all: a 4xx, never a 5xx.
    status, body = server.kinesis_raw(None, {"StreamName": "raw"})
    assert 400 <= status < 500, f"POST / without X-Amz-Target → {status}: {body!r}"

    # None of that stored anything.
    assert all_records(kinesis, "raw") == []


# --------------------------------------------------------------------------------------------
# Kinesis ↔ SQL ↔ HTTP
# --------------------------------------------------------------------------------------------


def test_sql_stream_works_through_kinesis_and_vice_versa(server, kinesis):
    server.sql("CREATE STREAM from_sql WITH (shards = 3, format = 'json')")
    assert "from_sql" in kinesis.list_streams()["StreamNames"]
    summary = kinesis.describe_stream_summary(StreamName="from_sql")["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 3, summary
    ranges = shard_ranges(kinesis, "from_sql")
    r = kinesis.put_record(StreamName="from_sql", Data=b'{"a": 1}', PartitionKey="alpha")
    assert r["ShardId"] == shard_for_key(ranges, "alpha")
    got = all_records(kinesis, "from_sql")
    assert [(x["Data"], x["PartitionKey"], x["_shard"]) for x in got] == [
        (b'{"a": 1}', "alpha", r["ShardId"])
    ]

    kinesis.create_stream(StreamName="from_kinesis", ShardCount=2)
    shown = {row["name"]: row for row in rows_as_dicts(server.sql("SHOW STREAMS"))}
    assert "from_kinesis" in shown and int(shown["from_kinesis"]["shards"]) == 2, shown
    status, _, body = server.ingest("from_kinesis", b'{"user": "bob", "v": 1}\n{"user": "eve", "v": 2}\n', key="user")
    assert status == 200 and body["accepted"] == 2, (status, body)
    got = all_records(kinesis, "from_kinesis")
    ranges = shard_ranges(kinesis, "from_kinesis")
    assert sorted((x["PartitionKey"], x["_shard"]) for x in got) == sorted(
        [("bob", shard_for_key(ranges, "bob")), ("eve", shard_for_key(ranges, "eve"))]
    ), got
