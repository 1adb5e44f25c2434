"""The Firehose API through boto3's `firehose` client against the real binary: delivery streams
are Sluice streams (created, described, listed, deleted), PutRecord and PutRecordBatch land in
the lake, bad requests change nothing, and on a full disk PutRecordBatch says per record which
were taken — what a producer retries lands once."""

from __future__ import annotations

import functools
import json
import time

import pytest
from botocore.exceptions import ClientError

import conftest
from test_faults import fill, small_disk  # noqa: F401 (a fixture)

wait_for = functools.partial(conftest.wait_for, timeout=60.0)


def client(server):
    return conftest._BOTO_SESSION.client(
        "firehose",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=server.kinesis_keys[0],
        aws_secret_access_key=server.kinesis_keys[1],
        config=conftest._BOTO_CONFIG,
    )


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def ids_in_lake(server, stream: str) -> list[int]:
    """The ids in the stream's raw table (none while its pipeline has not made it yet)."""
    status, answer = server.sql_status(f"SELECT data FROM {stream}")
    if status == 404:
        return []
    assert status == 200, answer
    return sorted(json.loads(data)["id"] for (data,) in answer["rows"])


def test_a_delivery_stream_takes_records_into_the_lake_and_refuses_bad_requests_whole(server):
    firehose = client(server)
    created = firehose.create_delivery_stream(
        DeliveryStreamName="clicks",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={"BucketARN": "arn:aws:s3:::lake", "RoleARN": "arn:aws:iam::1:role/r"},
    )
    assert created["DeliveryStreamARN"] == "arn:aws:firehose:us-east-1:000000000000:deliverystream/clicks"
    description = firehose.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
    assert description["DeliveryStreamStatus"] == "ACTIVE" and description["DeliveryStreamType"] == "DirectPut"
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == ["clicks"]
    # The delivery stream is a Sluice stream.
    assert [s["name"] for s in server.get("/v1/streams")[2]["streams"]] == ["clicks"]

    answer = firehose.put_record(DeliveryStreamName="clicks", Record={"Data": json.dumps({"id": 0}).encode()})
    assert answer["RecordId"] and answer["Encrypted"] is False
    batch = [{"Data": json.dumps({"id": i}).encode() + b"\n"} for i in range(1, 501)]
    answer = firehose.put_record_batch(DeliveryStreamName="clicks", Records=batch)
    assert answer["FailedPutCount"] == 0
    ids = [r["RecordId"] for r in answer["RequestResponses"]]
    assert len(ids) == 500 and len(set(ids)) == 500
    wait_for(lambda: ids_in_lake(server, "clicks") == list(range(501)) or None, "the records in the lake")

    for call, expected in [
        (lambda: firehose.put_record(DeliveryStreamName="nope", Record={"Data": b"x"}), "ResourceNotFoundException"),
        (lambda: firehose.put_record_batch(DeliveryStreamName="clicks", Records=batch + batch[:1]),
         "ValidationException"),
        (lambda: firehose.put_record_batch(DeliveryStreamName="clicks",
                                           Records=[{"Data": b"{}"}, {"Data": b"x" * (1000 * 1024 + 1)}]),
         "ValidationException"),
        (lambda: firehose.put_record_batch(DeliveryStreamName="clicks", Records=[{"Data": b"x" * 1000 * 1024}] * 5),
         "InvalidArgumentException"),
        (lambda: firehose.create_delivery_stream(DeliveryStreamName="clicks"), "ResourceInUseException"),
        (lambda: firehose.create_delivery_stream(DeliveryStreamName="bad name!"), "ValidationException"),
        (lambda: firehose.describe_delivery_stream(DeliveryStreamName="nope"), "ResourceNotFoundException"),
    ]:
        with pytest.raises(ClientError) as raised:
            call()
        assert code(raised.value) == expected, raised.value
    # Nothing of a refused request was written.
    assert ids_in_lake(server, "clicks") == list(range(501))

    firehose.delete_delivery_stream(DeliveryStreamName="clicks")
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []


def test_on_a_full_disk_a_batch_says_per_record_what_was_taken_and_retries_land_once(
    request, tmp_path, small_disk, sluice_bin  # noqa: F811 (the fixture)
):
    srv = conftest.Server(tmp_path / "logs", sluice_bin)
    request.node._sluice_servers = [srv]
    srv.start(small_disk / "data")
    try:
        firehose = client(srv)
        firehose.create_delivery_stream(DeliveryStreamName="s")
        taken: list[int] = []
        failed: list[int] = []
        reported = 0
        next_id = 0
        # The disk is all but full: room for a few shards' appends, not for all of them.
        reserve = small_disk / "reserve"
        reserve.write_bytes(b"\0" * (48 << 10))
        filler = fill(small_disk)
        reserve.unlink()
        mixed = 0
        # A batch is refused whole (503), or says per record what it took.
        for _ in range(40):
            ids = list(range(next_id, next_id + 40))
            next_id += 40
            records = [{"Data": json.dumps({"id": i, "pad": "x" * 2000}).encode()} for i in ids]
            try:
                answer = firehose.put_record_batch(DeliveryStreamName="s", Records=records)
            except ClientError as e:
                assert code(e) == "ServiceUnavailableException", e
                failed += ids
                continue
            for i, response in zip(ids, answer["RequestResponses"]):
                if "ErrorCode" in response:
                    assert response["ErrorCode"] == "ServiceUnavailableException", response
                    assert response["ErrorMessage"] and "RecordId" not in response, response
                    failed.append(i)
                else:
                    assert response["RecordId"], response
                    taken.append(i)
            failures = sum("ErrorCode" in r for r in answer["RequestResponses"])
            assert answer["FailedPutCount"] == failures
            reported += failures
            mixed += 0 < failures < len(records)
        assert reported > 0, "a full disk failed no record of any batch"
        assert mixed > 0, "no batch had records both taken and failed"

        # Space returns: the producer retries what failed, as Firehose's producers do.
        filler.unlink()
        pending = failed
        deadline = time.monotonic() + 60
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} records still refused with room on disk"
            batch, pending = pending[:200], pending[200:]
            records = [{"Data": json.dumps({"id": i}).encode()} for i in batch]
            try:
                responses = firehose.put_record_batch(DeliveryStreamName="s", Records=records)["RequestResponses"]
            except ClientError as e:
                assert code(e) == "ServiceUnavailableException", e
                responses = [{"ErrorCode": code(e)}] * len(batch)
            for i, response in zip(batch, responses):
                if "ErrorCode" in response:
                    pending.append(i)
                else:
                    taken.append(i)
            if any("ErrorCode" in r for r in responses):
                time.sleep(0.5)
        expected = sorted(set(taken))
        assert len(expected) == next_id
        wait_for(lambda: ids_in_lake(srv, "s") == expected or None, "every record taken in the lake, once",
                 timeout=90)
    finally:
        srv.stop()
