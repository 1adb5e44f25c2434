"""Change streams through the real binary: streams of format 'dynamodb' and 'debezium' keep a
mirror `<t>` (the current rows), a history `<t>_changes` (one row per change) and `<t>_errors`.

- A DynamoDB table in moto's server, changed 10,000 times at random, read from its stream as
  EventBridge Pipes reads it and put through Sluice's Kinesis door: the mirror equals a Scan of
  the table, the history holds each stream record once.
- The same changes as Kinesis Data Streams for DynamoDB sends them (another shape, repeats and
  reordering): the same mirror, one history row per eventID.
- Debezium's PostgreSQL envelopes written by hand (with and without the schema wrapper):
  snapshot, insert, update, delete, tombstone, key change, TOAST's unavailable value.
- kill -9 in the middle of a feed: nothing lost, nothing twice.
- Bad records land in `<t>_errors`; bad definitions are refused at CREATE; views over a mirror
  are refused; DROP STREAM drops the three tables; version_attribute decides between changes;
  a composite primary key names a row by all its columns.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import conftest
from conftest import rows_as_dicts

wait_for = functools.partial(conftest.wait_for, timeout=90.0)
UTC = dt.timezone.utc
ARROW = "application/vnd.apache.arrow.stream"

# --------------------------------------------------------------------------------------------
# The DynamoDB table and the stream that mirrors it
# --------------------------------------------------------------------------------------------

# Each declared column and what the DynamoDB attribute of its name holds: S (text), N (ints,
# decimals), BOOL, NULL (in any attribute), M and L (JSON), SS and NS (JSON arrays: sets, whose
# order means nothing), an ISO 8601 S (a TIMESTAMPTZ). Items also carry `extra`, which no
# column declares.
ORDER_COLUMNS = {
    "order_id": ("TEXT NOT NULL", "text"),
    "customer": ("TEXT", "text"),
    "status": ("TEXT", "text"),
    "qty": ("BIGINT", "int"),
    "price": ("DOUBLE", "double"),
    "amount": ("DECIMAL(12, 2)", "decimal"),
    "paid": ("BOOLEAN", "bool"),
    "note": ("TEXT", "text"),
    "address": ("JSON", "json"),
    "lines": ("JSON", "json"),
    "tags": ("JSON", "set"),
    "sizes": ("JSON", "set"),
    "updated_at": ("TIMESTAMPTZ", "ts"),
}
COLUMNS = list(ORDER_COLUMNS)
KIND = {name: kind for name, (_, kind) in ORDER_COLUMNS.items()}
SET_ATTRIBUTES = {name for name, kind in KIND.items() if kind == "set"}
DECLARED = ", ".join(f"{name} {sql}" for name, (sql, _) in ORDER_COLUMNS.items())


def orders_ddl(name: str, options: str = "") -> str:
    return (
        f"CREATE STREAM {name} ({DECLARED}) WITH (format = 'dynamodb', primary_key = 'order_id'"
        f"{options})"
    )


OPERATIONS = 10_000
KEYS = [f"order-{i:04d}" for i in range(500)]
HOT_KEYS = KEYS[:20]  # 40% of the operations: ~200 changes each
EVENT_NAMES = {"INSERT": "c", "MODIFY": "u", "REMOVE": "d"}
CUSTOMERS = ["Ann", "Bob", "Zoë", "Łukasz", "山田 太郎", "O'Brien", 'Eve "the" Sly', "Ñandú", ""]
STATUSES = ["new", "paid", "packed", "shipped", "delivered", "returned"]
T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def stamp(i: int) -> str:
    """A distinct ISO 8601 instant per operation (µs digits included)."""
    at = T0 + dt.timedelta(seconds=i * 7, microseconds=(i * 7919) % 1_000_000)
    return at.isoformat().replace("+00:00", "Z")


def number(rng: random.Random, places: int) -> str:
    cents = rng.randint(-50_000, 5_000_000)
    return str(Decimal(cents).scaleb(-places))


def random_attribute(rng: random.Random, name: str) -> dict:
    """A typed attribute value for `name`; 1 in 15 is NULL."""
    if name != "paid" and rng.random() < 1 / 15:
        return {"NULL": True}
    if name == "customer":
        return {"S": rng.choice(CUSTOMERS)}
    if name == "status":
        return {"S": rng.choice(STATUSES)}
    if name == "qty":
        return {"N": str(rng.randint(-5, 100_000))}
    if name == "price":
        return {"N": number(rng, 2)}
    if name == "amount":
        return {"N": number(rng, rng.choice([0, 1, 2]))}
    if name == "paid":
        return {"BOOL": rng.random() < 0.5}
    if name == "note":
        return {"S": rng.choice(["", "leave at the door", "fragile ✓", "line1\nline2", "tab\there"])}
    if name == "address":
        return {"M": {
            "street": {"S": f"{rng.randint(1, 999)} Main St"},
            "zip": {"N": str(rng.randint(10_000, 99_999))},
            "geo": {"M": {"lat": {"N": number(rng, 4)}, "lon": {"N": number(rng, 4)}}},
            "verified": {"BOOL": rng.random() < 0.5},
            "apt": {"NULL": True},
        }}
    if name == "lines":
        return {"L": [
            {"M": {"sku": {"S": f"SKU-{rng.randint(1, 99)}"}, "n": {"N": str(rng.randint(1, 9))}}}
            for _ in range(rng.randint(0, 3))
        ] + [{"S": "gift"}, {"N": "1.5"}, {"NULL": True}][: rng.randint(0, 3)]}
    if name == "tags":
        return {"SS": rng.sample(["a", "b", "gift", "rush", "vip", "ü"], rng.randint(1, 4))}
    if name == "sizes":
        return {"NS": [str(n) for n in rng.sample([1, 2, 3.5, 10, 42, -7], rng.randint(1, 3))]}
    raise AssertionError(name)


def random_item(rng: random.Random, key: str, i: int) -> dict:
    item = {"order_id": {"S": key}, "updated_at": {"S": stamp(i)}}
    for name in COLUMNS[1:-1]:
        if rng.random() < 0.8:
            item[name] = random_attribute(rng, name)
    if rng.random() < 0.5:
        item["extra"] = {"S": "not a column"}
    return item


def random_update(rng: random.Random, i: int, kinds: dict[str, str]) -> dict:
    """UpdateItem arguments that always change the item (updated_at is new each time): SET,
    REMOVE, ADD to a set, a number incremented, a list appended to. `kinds` (an attribute's
    type in the item, e.g. "N" or "NULL") is brought up to date."""
    names = {"#updated_at": "updated_at"}
    values = {":u": {"S": stamp(i)}}
    sets = ["#updated_at = :u"]
    removes, adds = [], []
    for name in rng.sample(COLUMNS[1:-1], rng.randint(1, 4)):
        names[f"#{name}"] = name
        roll = rng.random()
        usable = kinds.get(name) != "NULL"  # no arithmetic on a NULL
        if name == "qty" and roll < 0.5 and usable:
            sets.append("#qty = if_not_exists(#qty, :zero) + :dq")
            values[":zero"], values[":dq"] = {"N": "0"}, {"N": str(rng.randint(1, 10))}
            kinds[name] = "N"
        elif name == "tags" and roll < 0.5 and usable:
            adds.append("#tags :tg")
            values[":tg"] = {"SS": rng.sample(["x", "y", "gift", "ü"], rng.randint(1, 2))}
            kinds[name] = "SS"
        elif name == "lines" and roll < 0.5 and usable:
            sets.append("#lines = list_append(if_not_exists(#lines, :nil), :ln)")
            values[":nil"], values[":ln"] = {"L": []}, {"L": [{"S": f"added-{i}"}]}
            kinds[name] = "L"
        elif roll < 0.2:
            removes.append(f"#{name}")
            kinds.pop(name, None)
        else:
            sets.append(f"#{name} = :{name}")
            values[f":{name}"] = random_attribute(rng, name)
            (kinds[name],) = values[f":{name}"]
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    if adds:
        expression += " ADD " + ", ".join(adds)
    return {"UpdateExpression": expression, "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values}


STAMPS = itertools.count()  # a distinct updated_at per call, whichever thread makes it


def change_dynamodb_table(client, table: str, keys: list[str], operations: int, seed: int) -> Counter:
    """`operations` random PutItem / UpdateItem / DeleteItem calls on items of `keys`; → the
    calls by kind.

    Every call changes the item, and UpdateItem and DeleteItem name items that exist: then each
    call is one stream record, in moto as in DynamoDB. (moto departs from DynamoDB elsewhere: it
    writes a MODIFY record for a write that changes nothing, where DynamoDB writes none, and two
    INSERT records for an UpdateItem of a new item, the first with the key alone.)"""
    rng = random.Random(seed)
    hot = [k for k in keys if k in HOT_KEYS]
    live: dict[str, dict[str, str]] = {}  # key → the type of each attribute of the item
    calls: Counter = Counter()
    for _ in range(operations):
        i = next(STAMPS)
        key = rng.choice(hot) if hot and rng.random() < 0.4 else rng.choice(keys)
        roll = rng.random()
        if key not in live or roll < 0.35:
            item = random_item(rng, key, i)
            client.put_item(TableName=table, Item=item)
            calls["MODIFY" if key in live else "INSERT"] += 1
            live[key] = {name: next(iter(value)) for name, value in item.items()}
        elif roll < 0.8:
            client.update_item(TableName=table, Key={"order_id": {"S": key}}, **random_update(rng, i, live[key]))
            calls["MODIFY"] += 1
        else:
            client.delete_item(TableName=table, Key={"order_id": {"S": key}})
            calls["REMOVE"] += 1
            del live[key]
    return calls


def change_dynamodb_table_in_parallel(moto_dynamodb, table: str, workers: int = 3) -> Counter:
    """OPERATIONS calls by `workers` threads, each with keys of its own (moto answers several
    at once faster than one after the other)."""
    results: list[Counter] = [Counter() for _ in range(workers)]
    failures: list[BaseException] = []

    def work(w: int) -> None:
        try:
            operations = OPERATIONS // workers + (w < OPERATIONS % workers)
            results[w] = change_dynamodb_table(moto_dynamodb.dynamodb(), table, KEYS[w::workers], operations, 17 + w)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return sum(results, Counter())


def read_dynamodb_stream(streams, arn: str) -> list[dict]:
    """Every record of a table's stream, as a forwarder (EventBridge Pipes) reads it: each shard
    from TRIM_HORIZON, GetRecords until a call gives nothing (the shard is drained; a real open
    shard would go on giving iterators)."""
    shards, start = [], {}
    while True:
        description = streams.describe_stream(StreamArn=arn, **start)["StreamDescription"]
        shards += description["Shards"]
        if "LastEvaluatedShardId" not in description:
            break
        start = {"ExclusiveStartShardId": description["LastEvaluatedShardId"]}
    records = []
    for shard in shards:  # parents first: DescribeStream lists them so
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            answer = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not answer["Records"]:
                break
            records += answer["Records"]
            iterator = answer.get("NextShardIterator")
    return records


def scan(client, table: str) -> list[dict]:
    items = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items += page["Items"]
    return items


class DynamoFeed:
    """The changes made to a DynamoDB table, as its stream gave them, and the table after."""

    def __init__(self, table: str, arn: str, calls: Counter, records: list[dict], items: list[dict]):
        self.table = table
        self.arn = arn
        self.calls = calls
        self.records = records  # as GetRecords gave them (ApproximateCreationDateTime in s)
        self.items = items  # the Scan at the end

    def pipes_records(self) -> list[dict]:
        """The records as EventBridge Pipes (or Lambda) delivers them: eventSourceARN added, and
        ApproximateCreationDateTime in whole seconds as DynamoDB gives it (moto's has a
        fraction)."""
        out = []
        for record in self.records:
            record = copy.deepcopy(record)
            record["dynamodb"]["ApproximateCreationDateTime"] = int(record["dynamodb"]["ApproximateCreationDateTime"])
            record["eventSourceARN"] = self.arn
            out.append(record)
        return out

    def kinesis_records(self, base_ms: int) -> list[dict]:
        """The records as Kinesis Data Streams for DynamoDB sends them: tableName, recordFormat
        and userIdentity; no SequenceNumber or StreamViewType; ApproximateCreationDateTime in
        ms, here base_ms + the record's place in the stream (so the order of a key's changes is
        in their times)."""
        out = []
        for n, record in enumerate(self.records):
            image = {k: v for k, v in record["dynamodb"].items() if k not in ("SequenceNumber", "StreamViewType")}
            image["ApproximateCreationDateTime"] = base_ms + n
            image["ApproximateCreationDateTimePrecision"] = "MILLISECOND"
            out.append({
                "awsRegion": "us-east-1",
                "eventID": record["eventID"],
                "eventName": record["eventName"],
                "userIdentity": None,
                "recordFormat": "application/json",
                "tableName": self.table,
                "dynamodb": image,
                "eventSource": "aws:dynamodb",
            })
        return out


@pytest.fixture(scope="module")
def dynamo_feed(moto_dynamodb) -> DynamoFeed:
    """10,000 random changes of a table in moto's DynamoDB (stream NEW_AND_OLD_IMAGES), its
    stream read to the end and its Scan; made once for the tests of this module."""
    client, table = moto_dynamodb.dynamodb(), f"orders-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    arn = client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    calls = change_dynamodb_table_in_parallel(moto_dynamodb, table)
    records = read_dynamodb_stream(moto_dynamodb.streams(), arn)
    feed = DynamoFeed(table, arn, calls, records, scan(client, table))
    # The stream is what the test thinks it is: one record per call, in sequence, and replaying
    # it gives the table.
    assert len(records) == OPERATIONS == sum(calls.values()), (len(records), calls)
    assert Counter(r["eventName"] for r in records) == calls
    assert len({r["eventID"] for r in records}) == len(records)
    sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    replayed = replay(feed.pipes_records(), shape="A")
    assert {k: v for k, (v, _) in replayed.items()} == {i["order_id"]["S"]: i for i in feed.items}
    assert len(feed.items) > 300, "the feed should leave most keys in the table"
    return feed


# --------------------------------------------------------------------------------------------
# What the tables should hold
# --------------------------------------------------------------------------------------------


def plain(value: dict):
    """A DynamoDB attribute value as plain JSON (numbers as Decimal; sets sorted)."""
    ((kind, v),) = value.items()
    if kind in ("S", "B", "BOOL"):
        return v
    if kind == "N":
        return Decimal(v)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: plain(x) for k, x in v.items()}
    if kind == "L":
        return [plain(x) for x in v]
    if kind in ("SS", "BS"):
        return sorted(v)
    if kind == "NS":
        return sorted(Decimal(x) for x in v)
    raise AssertionError(f"unknown attribute type {kind}")


def plain_image(image: dict) -> dict:
    return {k: plain(v) for k, v in image.items()}


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected_value(kind: str, value: dict | None):
    """What a column holds for a typed attribute value (None: the item has no such attribute)."""
    if value is None or "NULL" in value:
        return None
    if kind == "int":
        return int(value["N"])
    if kind == "double":
        return float(value["N"])
    if kind == "decimal":
        return Decimal(value["N"])
    if kind == "ts":
        return instant(value["S"])
    return plain(value)


def expected_columns(image: dict) -> dict:
    return {name: expected_value(KIND[name], image.get(name)) for name in COLUMNS}


def got_json(text, sets: bool):
    if text is None:
        return None
    value = json.loads(text, parse_float=Decimal) if isinstance(text, str) else text
    if sets:
        assert isinstance(value, list), f"a set should be a JSON array: {text!r}"
        return sorted(value)
    return value


def got_columns(row: dict) -> dict:
    out = {}
    for name in COLUMNS:
        value = row[name]
        if KIND[name] in ("json", "set"):
            value = got_json(value, KIND[name] == "set")
        elif KIND[name] == "decimal" and value is not None:
            value = Decimal(value)
        out[name] = value
    return out


def plain_before(text):
    """`_before` as plain JSON, with the set attributes sorted."""
    if text is None:
        return None
    value = json.loads(text, parse_float=Decimal)
    assert isinstance(value, dict), f"_before should be a JSON object: {text!r}"
    return {k: sorted(v) if k in SET_ATTRIBUTES and isinstance(v, list) else v for k, v in value.items()}


def version_of(record: dict, shape: str) -> int:
    image = record["dynamodb"]
    if shape == "A":
        return int(image["SequenceNumber"])
    return int(image["ApproximateCreationDateTime"]) * 1000  # ms → µs


def source_ts(record: dict, shape: str) -> dt.datetime:
    at = record["dynamodb"]["ApproximateCreationDateTime"]
    seconds = Decimal(at) if shape == "A" else Decimal(at) / 1000
    return dt.datetime.fromtimestamp(0, UTC) + dt.timedelta(microseconds=int(seconds * 1_000_000))


def replay(records: list[dict], shape: str) -> dict[str, tuple[dict, dict]]:
    """Applies records as the contract says (newest version per key wins; a change older than a
    delete of its key changes nothing) → {key: (the item's attributes, the winning record)}."""
    newest: dict[str, tuple[int, dict]] = {}
    for record in records:
        key = record["dynamodb"]["Keys"]["order_id"]["S"]
        version = version_of(record, shape)
        if key not in newest or version >= newest[key][0]:
            newest[key] = (version, record)
    return {
        key: (record["dynamodb"]["NewImage"], record)
        for key, (_, record) in newest.items()
        if record["eventName"] != "REMOVE"
    }


def expected_mirror(items: list[dict], winners: dict[str, tuple[dict, dict]], shape: str) -> dict:
    """{key: the mirror's row}: the declared columns from the Scan's items, _version and
    _source_ts from the change that wrote each."""
    out = {}
    for item in items:
        key = item["order_id"]["S"]
        _, record = winners[key]
        out[key] = {**expected_columns(item), "_version": version_of(record, shape),
                    "_source_ts": source_ts(record, shape)}
    return out


def expected_history(records: list[dict], shape: str) -> dict[str, dict]:
    """{eventID: the history's row} (first of each eventID: repeats are dropped)."""
    out = {}
    for record in records:
        if record["eventID"] in out:
            continue
        image = record["dynamodb"]
        op = EVENT_NAMES[record["eventName"]]
        row = {
            "_op": op,
            "_version": version_of(record, shape),
            "_source_pos": image["SequenceNumber"] if shape == "A" else None,
            "_source_ts": source_ts(record, shape),
            "_before": plain_image(image["OldImage"]) if "OldImage" in image else None,
            "_unchanged": None,
        }
        if op == "d":
            # A delete's row holds the old image or the keys: the key is there either way.
            row["order_id"] = image["Keys"]["order_id"]["S"]
        else:
            row.update(expected_columns(image["NewImage"]))
        out[record["eventID"]] = row
    return out


# --------------------------------------------------------------------------------------------
# Reading Sluice's tables
# --------------------------------------------------------------------------------------------


def query(server, statement: str) -> list[dict] | None:
    """The rows of a query, typed (an Arrow answer: DECIMAL as Decimal, TIMESTAMPTZ as an aware
    datetime); None if the query fails (e.g. a table not made yet)."""
    status, _, body = server.request(
        "POST", "/v1/sql", json.dumps({"sql": statement}).encode(),
        {"Content-Type": "application/json", "Accept": ARROW}, raw=True,
    )
    if status != 200:
        return None
    return pa.ipc.open_stream(body).read_all().to_pylist()


def must_query(server, statement: str) -> list[dict]:
    rows = query(server, statement)
    if rows is None:
        status, answer = server.sql_status(statement)
        raise AssertionError(f"{statement!r} → HTTP {status}: {answer!r}")
    return rows


def count(server, table: str) -> int:
    rows = query(server, f"SELECT count(*) AS n FROM {table}")
    return -1 if rows is None else rows[0]["n"]


def mirror(server, table: str) -> dict | None:
    rows = query(server, f"SELECT {', '.join(COLUMNS)}, _version, _source_ts FROM {table}")
    if rows is None:
        return None
    out = {}
    for row in rows:
        key = row["order_id"]
        assert key not in out, f"{table}: key {key!r} is in the mirror twice"
        out[key] = {**got_columns(row), "_version": int(row["_version"]), "_source_ts": row["_source_ts"]}
    return out


HISTORY_COLUMNS = "_op, _version, _source_pos, _source_ts, _event_id, _before, _unchanged, _shard, _seq, _ingested_at"


def history(server, table: str) -> list[dict]:
    return must_query(server, f"SELECT {', '.join(COLUMNS)}, {HISTORY_COLUMNS} FROM {table}")


def differences(got: dict, want: dict, show: int = 5) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = [k for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    lines = [f"{len(missing)} missing {missing[:show]}", f"{len(extra)} not expected {extra[:show]}",
             f"{len(changed)} differ"]
    for k in changed[:show]:
        fields = sorted(set(got[k]) | set(want[k]))
        lines.append(f"  {k}: " + "; ".join(
            f"{f}: got {got[k].get(f)!r}, want {want[k].get(f)!r}" for f in fields if got[k].get(f) != want[k].get(f)
        ))
    return "\n".join(lines)


def settle(read, want: dict, what: str, timeout: float = 90.0):
    """Waits until read() == want; fails with the differences of the last read."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == want:
            return got
        if time.monotonic() > deadline:
            assert got is not None, f"{what}: the table cannot be read"
            raise AssertionError(f"{what} after {timeout:.0f} s:\n{differences(got, want)}")
        time.sleep(0.5)


def check_history(rows: list[dict], want: dict[str, dict], what: str) -> None:
    """The history's rows are `want` (by eventID), each once, each at its own log position."""
    ids = Counter(r["_event_id"] for r in rows)
    twice = [i for i, n in ids.items() if n > 1]
    assert not twice, f"{what}: {len(twice)} changes are in the history more than once: {twice[:5]}"
    positions = [(r["_shard"], r["_seq"]) for r in rows]
    assert len(set(positions)) == len(positions), f"{what}: two rows at one (_shard, _seq)"
    assert all(r["_ingested_at"] is not None for r in rows)
    got = {}
    for r in rows:
        row = {f: r[f] for f in ("_op", "_source_pos", "_source_ts", "_unchanged")}
        row["_version"] = int(r["_version"])
        row["_before"] = plain_before(r["_before"])
        expected = want.get(r["_event_id"])
        if expected is not None and expected["_op"] == "d":
            row["order_id"] = r["order_id"]
        else:
            row.update(got_columns(r))
        got[r["_event_id"]] = row
    assert got == want, f"{what}:\n{differences(got, want)}"


def put_records(kinesis, stream: str, records: list[dict], batch: int = 500) -> None:
    """PutRecords of the records (JSON), PartitionKey = the item's key, retrying what is not
    taken, in batches."""
    for start in range(0, len(records), batch):
        entries = [
            {"Data": json.dumps(r).encode(), "PartitionKey": r["dynamodb"]["Keys"]["order_id"]["S"]}
            for r in records[start:start + batch]
        ]
        deadline = time.monotonic() + 60
        while entries:
            assert time.monotonic() < deadline, f"PutRecords kept refusing {len(entries)} records"
            answer = kinesis.put_records(StreamName=stream, Records=entries)
            entries = [e for e, r in zip(entries, answer["Records"]) if "SequenceNumber" not in r]
            if entries:
                time.sleep(0.2)


def pipeline_errors(server) -> dict:
    """{stream: its pipeline's last error} of the streams whose pipeline has one."""
    _, _, answer = server.get("/v1/streams")
    return {s["name"]: (s.get("pipeline") or {}).get("last_error") for s in answer.get("streams", [])
            if (s.get("pipeline") or {}).get("last_error")}


def wait_count(server, table: str, n: int, what: str, timeout: float = 90.0) -> None:
    """Waits until `table` holds at least n rows, then asserts it holds n."""
    try:
        got = wait_for(lambda: (c := count(server, table)) >= n and c, what, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}: {table} holds {count(server, table)} of {n} rows; "
                             f"pipeline errors: {pipeline_errors(server)}") from None
    assert got == n, f"{table} holds {got} rows, expected {n}"


# --------------------------------------------------------------------------------------------
# DynamoDB
# --------------------------------------------------------------------------------------------


def test_a_dynamodb_table_streamed_through_pipes_is_mirrored_and_every_change_kept_once(
    server, kinesis, dynamo_feed
):
    """10,000 random PutItem/UpdateItem/DeleteItem calls on moto's DynamoDB, read from the
    table's stream and put through the Kinesis door as EventBridge Pipes does (shape A): the
    mirror equals a Scan of the table (with each row's SequenceNumber and time), the history
    holds one row per stream record (op, version, position, eventID, old image), nothing lands
    in orders_errors."""
    server.sql(orders_ddl("orders"))
    records = dynamo_feed.pipes_records()
    put_records(kinesis, "orders", records)

    wait_count(server, "orders_changes", len(records), "one history row per stream record")
    want = expected_mirror(dynamo_feed.items, replay(records, "A"), "A")
    settle(lambda: mirror(server, "orders"), want, "the mirror should equal the DynamoDB table")

    rows = history(server, "orders_changes")
    assert len(rows) == len(records) == OPERATIONS
    ops = Counter(r["_op"] for r in rows)
    assert ops == {EVENT_NAMES[k]: n for k, n in dynamo_feed.calls.items()}, ops
    check_history(rows, expected_history(records, "A"), "orders_changes")
    assert count(server, "orders_errors") in (0, -1), must_query(server, "SELECT * FROM orders_errors")[:5]

    # The mirror's columns: the declared ones, then _version and _source_ts.
    names = [c["name"] for c in server.sql("SELECT * FROM orders LIMIT 1")["columns"]]
    assert names == COLUMNS + ["_version", "_source_ts"], names
    names = [c["name"] for c in server.sql("SELECT * FROM orders_changes LIMIT 1")["columns"]]
    assert names == COLUMNS + [c.strip() for c in HISTORY_COLUMNS.split(",")], names
    # The deltalake package reads the same history, once committed.
    path = str(server.data_dir / "lake" / "orders_changes")

    def committed():
        if not DeltaTable.is_deltatable(path):
            return None
        ids = DeltaTable(path).to_pyarrow_table(columns=["_event_id"]).column("_event_id").to_pylist()
        return ids if len(ids) >= len(records) else None

    assert sorted(wait_for(committed, "the history committed to the lake")) == sorted(r["eventID"] for r in records)


def shuffled_with_repeats(records: list[dict], seed: int) -> tuple[list[dict], int]:
    """~10% of the records twice (the repeat 1 to 200 records after the first), then every
    window of 50 shuffled: → (the records to send, how many repeats)."""
    rng = random.Random(seed)
    placed = []
    for n, record in enumerate(records):
        placed.append((n, 0, record))
        if rng.random() < 0.1:
            placed.append((n + rng.randint(1, 200), 1, copy.deepcopy(record)))
    placed.sort(key=lambda p: p[:2])
    out = [record for _, _, record in placed]
    for start in range(0, len(out), 50):
        window = out[start:start + 50]
        rng.shuffle(window)
        out[start:start + 50] = window
    return out, len(placed) - len(records)


def test_kinesis_data_streams_for_dynamodb_records_repeated_and_reordered_make_the_same_mirror(
    server, kinesis, dynamo_feed
):
    """The same changes as Kinesis Data Streams for DynamoDB sends them (shape B: tableName,
    recordFormat, ApproximateCreationDateTime in ms, no SequenceNumber), ~10% sent twice and
    every 50 shuffled: the mirror still equals the Scan (versions decide, a late change never
    undoes a newer one or brings back a deleted item), and orders_b_changes holds one row per
    distinct eventID."""
    server.sql(orders_ddl("orders_b"))
    base_ms = int(dynamo_feed.records[0]["dynamodb"]["ApproximateCreationDateTime"]) * 1000
    records = dynamo_feed.kinesis_records(base_ms)
    sent, repeats = shuffled_with_repeats(records, seed=5)
    assert repeats > 500 and len(sent) == len(records) + repeats
    # The shuffle really reorders a key's changes, deletes included.
    late = 0
    seen: dict[str, int] = {}
    for r in sent:
        key, at = r["dynamodb"]["Keys"]["order_id"]["S"], r["dynamodb"]["ApproximateCreationDateTime"]
        late += at < seen.get(key, 0)
        seen[key] = max(seen.get(key, 0), at)
    assert late > 100, late
    put_records(kinesis, "orders_b", sent)

    wait_count(server, "orders_b_changes", len(records), "one history row per eventID")
    want = expected_mirror(dynamo_feed.items, replay(records, "B"), "B")
    settle(lambda: mirror(server, "orders_b"), want, "the mirror should equal the DynamoDB table")
    rows = history(server, "orders_b_changes")
    assert Counter(r["_op"] for r in rows) == {EVENT_NAMES[k]: n for k, n in dynamo_feed.calls.items()}
    check_history(rows, expected_history(records, "B"), "orders_b_changes")
    assert count(server, "orders_b_errors") in (0, -1)


def log_event_ids(server, stream: str) -> set[str]:
    """The eventIDs of every record in the stream's log (read back through the Kinesis door)."""
    kinesis = conftest.LiveKinesis(server, bulk=True)
    return {json.loads(r["Data"])["eventID"] for r in conftest.all_records(kinesis, stream)}


def test_kill_9_in_the_middle_of_a_dynamodb_feed_loses_and_doubles_nothing(server, dynamo_feed):
    """3,000 shape-A records put by a producer, the server killed (-9) mid-feed and restarted;
    the producer sends what the log lacks, and the server is killed again while it applies the
    changes: every acknowledged record is in the log, the mirror equals a replay of the
    records, the history holds each once."""
    server.sql(orders_ddl("orders"))
    records = dynamo_feed.pipes_records()[:3000]
    kinesis = conftest.LiveKinesis(server)
    acked: list[str] = []
    halfway = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for start in range(0, len(records), 100):
                batch = records[start:start + 100]
                put_records(kinesis, "orders", batch, batch=100)
                acked.extend(r["eventID"] for r in batch)
                if len(acked) >= len(records) // 2:
                    halfway.set()
                time.sleep(0.03)  # a producer's pace: the kill comes between or during batches
        except Exception as e:  # the kill: the producer stops where it is
            failure.append(e)
        finally:
            halfway.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    assert halfway.wait(60), "the producer did not get halfway"
    server.kill9()
    producer.join(timeout=30)
    assert not producer.is_alive()
    assert failure, "the producer finished before the kill: the test proves nothing"
    server.start(server.data_dir)

    # Every acknowledged record is in the log; the rest is sent again, as a producer retries
    # what was not acknowledged (what reached the log without an answer is not sent twice).
    in_log = log_event_ids(server, "orders")
    assert set(acked) <= in_log, f"{len(set(acked) - in_log)} acknowledged records are not in the log"
    assert len(in_log) < len(records)
    put_records(kinesis, "orders", [r for r in records if r["eventID"] not in in_log])
    server.kill9()  # while the changes are still being applied
    server.start(server.data_dir)
    assert log_event_ids(server, "orders") == {r["eventID"] for r in records}

    wait_count(server, "orders_changes", len(records), "one history row per record", timeout=60)
    winners = replay(records, "A")
    items = [item for item, _ in winners.values()]
    settle(lambda: mirror(server, "orders"), expected_mirror(items, winners, "A"),
           "the mirror should equal a replay of the records", timeout=60)
    check_history(history(server, "orders_changes"), expected_history(records, "A"), "orders_changes")


def shape_b(event_id: str, event_name: str, key: dict, ms: int, new: dict | None = None,
            old: dict | None = None, table: str = "orders") -> dict:
    image = {"ApproximateCreationDateTime": ms, "ApproximateCreationDateTimePrecision": "MILLISECOND",
             "Keys": key, "SizeBytes": 100}
    if new is not None:
        image["NewImage"] = new
    if old is not None:
        image["OldImage"] = old
    return {"awsRegion": "us-east-1", "eventID": event_id, "eventName": event_name, "userIdentity": None,
            "recordFormat": "application/json", "tableName": table, "dynamodb": image,
            "eventSource": "aws:dynamodb"}


def test_version_attribute_decides_between_changes_whatever_their_times(server, kinesis):
    """version_attribute = 'v': of a key's changes, the one with the highest v is the mirror's
    row (its _version is v), whether its ApproximateCreationDateTime ties with another's or is
    older; of equal v, the later in the stream. Every change is in the history."""
    server.sql(
        "CREATE STREAM versioned (id TEXT NOT NULL, v BIGINT, val TEXT) WITH (format = 'dynamodb', "
        "primary_key = 'id', version_attribute = 'v', shards = 1)"
    )

    def item(key, v, val):
        return {"id": {"S": key}, "v": {"N": str(v)}, "val": {"S": val}}

    ms = 1_736_154_000_000
    changes = [
        # a: the same time for all three, v decides; v=2 comes last but is not the newest.
        ("a", "INSERT", 1, "a1", ms), ("a", "MODIFY", 3, "a3", ms), ("a", "MODIFY", 2, "a2", ms),
        # b: the later time has the lower v.
        ("b", "INSERT", 5, "b5", ms + 1000), ("b", "MODIFY", 4, "b4", ms + 2000),
        # c: equal v: the later in the stream wins (although its time is older).
        ("c", "INSERT", 7, "c-first", ms + 10), ("c", "MODIFY", 7, "c-second", ms + 5),
        # d: in order: the last is the newest.
        ("d", "INSERT", 1, "d1", ms), ("d", "MODIFY", 2, "d2", ms + 1), ("d", "MODIFY", 10, "d10", ms + 2),
    ]
    records, previous = [], {}
    for n, (key, name, v, val, at) in enumerate(changes):
        new = item(key, v, val)
        records.append(shape_b(f"ev-{n:02d}", name, {"id": {"S": key}}, at, new, previous.get(key), "versioned"))
        previous[key] = new
    answer = kinesis.put_records(
        StreamName="versioned",
        Records=[{"Data": json.dumps(r).encode(), "PartitionKey": r["dynamodb"]["Keys"]["id"]["S"]} for r in records],
    )
    assert answer["FailedRecordCount"] == 0

    wait_count(server, "versioned_changes", len(records), "every change in the history")
    want = {key: {"val": val, "v": v, "_version": v} for key, val, v in
            [("a", "a3", 3), ("b", "b5", 5), ("c", "c-second", 7), ("d", "d10", 10)]}

    def read():
        rows = query(server, "SELECT id, v, val, _version FROM versioned")
        return None if rows is None else {
            r["id"]: {"val": r["val"], "v": r["v"], "_version": int(r["_version"])} for r in rows
        }

    settle(read, want, "the mirror should keep the highest v of each key")
    rows = must_query(server, "SELECT id, v, val, _op, _version, _event_id FROM versioned_changes ORDER BY _event_id")
    assert [(r["_event_id"], r["id"], r["val"], r["_op"], int(r["_version"])) for r in rows] == [
        (f"ev-{n:02d}", key, val, EVENT_NAMES[name], v) for n, (key, name, v, val, _) in enumerate(changes)
    ]


def test_a_composite_primary_key_names_a_row_by_all_its_columns(server):
    """primary_key = 'tenant, id' (a DynamoDB table with a hash and a range key), records over
    HTTP: items that share one key column are different rows; a change or a delete touches
    only the row of its whole key. The mirror is partitioned by a key column (a folder a
    tenant), so a MERGE rewrites only the partitions of the keys it changes."""
    server.sql(
        "CREATE STREAM items (tenant TEXT NOT NULL, id BIGINT NOT NULL, val TEXT) WITH (format = 'dynamodb', "
        "primary_key = 'tenant, id', partition_by = 'tenant')"
    )

    def record(name, seq, tenant, id, val=None, old=None):
        keys = {"tenant": {"S": tenant}, "id": {"N": str(id)}}
        image = {"ApproximateCreationDateTime": 1_736_154_000, "Keys": keys, "SequenceNumber": str(seq),
                 "SizeBytes": 50, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        if val is not None:
            image["NewImage"] = {**keys, "val": {"S": val}}
        if old is not None:
            image["OldImage"] = {**keys, "val": {"S": old}}
        return {"eventID": f"e{seq}", "eventName": name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1", "dynamodb": image}

    records = [
        record("INSERT", 10, "t1", 1, "a"), record("INSERT", 11, "t2", 1, "b"), record("INSERT", 12, "t1", 2, "c"),
        record("MODIFY", 13, "t1", 1, "a2", old="a"), record("REMOVE", 14, "t2", 1, old="b"),
    ]
    status, _, answer = server.ingest("items", b"".join(json.dumps(r).encode() + b"\n" for r in records))
    assert status == 200, answer
    wait_count(server, "items_changes", len(records), "every change in the history")

    def read():
        rows = query(server, "SELECT tenant, id, val, _version FROM items")
        return None if rows is None else {
            (r["tenant"], r["id"]): {"val": r["val"], "_version": int(r["_version"])} for r in rows
        }

    settle(read, {("t1", 1): {"val": "a2", "_version": 13}, ("t1", 2): {"val": "c", "_version": 12}},
           "the mirror's rows by (tenant, id)")
    rows = must_query(server, "SELECT tenant, id, _op FROM items_changes ORDER BY _version")
    assert [(r["tenant"], r["id"], r["_op"]) for r in rows] == [
        ("t1", 1, "c"), ("t2", 1, "c"), ("t1", 2, "c"), ("t1", 1, "u"), ("t2", 1, "d")]
    folders = {p.name for p in (server.data_dir / "lake" / "items").iterdir() if p.is_dir()}
    # t2's one item was inserted and deleted in the same round: the mirror never held it.
    assert folders == {"_delta_log", "tenant=t1"}, folders


# --------------------------------------------------------------------------------------------
# Debezium
# --------------------------------------------------------------------------------------------

CUSTOMERS_DDL = (
    "CREATE STREAM customers (id BIGINT NOT NULL, name TEXT, email TEXT, bio TEXT, active BOOLEAN, "
    "balance DECIMAL(12, 2), signed_up DATE, last_login TIMESTAMPTZ, updated_at TIMESTAMPTZ) "
    "WITH (format = 'debezium', primary_key = 'id', shards = 2)"
)
CUSTOMER_COLUMNS = ["id", "name", "email", "bio", "active", "balance", "signed_up", "last_login", "updated_at"]
UNAVAILABLE = "__debezium_unavailable_value"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def connect_field(name: str, kind: str, optional: bool = True, logical: str | None = None) -> dict:
    field = {"type": kind, "optional": optional, "field": name}
    if logical:
        field.update(name=logical, version=1)
    return field


ROW_FIELDS = [
    connect_field("id", "int64", optional=False),
    connect_field("name", "string"),
    connect_field("email", "string"),
    connect_field("bio", "string"),
    connect_field("active", "boolean"),
    connect_field("balance", "double"),  # decimal.handling.mode = double
    connect_field("signed_up", "int32", logical="io.debezium.time.Date"),
    connect_field("last_login", "int64", logical="io.debezium.time.Timestamp"),
    connect_field("updated_at", "int64", logical="io.debezium.time.MicroTimestamp"),
]
# The Kafka Connect schema Debezium's JsonConverter writes beside each envelope
# (schemas.enable = true), for table public.customers of server "shop".
ENVELOPE_SCHEMA = {
    "type": "struct",
    "fields": [
        {"type": "struct", "fields": ROW_FIELDS, "optional": True, "name": "shop.public.customers.Value",
         "field": "before"},
        {"type": "struct", "fields": ROW_FIELDS, "optional": True, "name": "shop.public.customers.Value",
         "field": "after"},
        {"type": "struct", "fields": [
            connect_field("version", "string", optional=False),
            connect_field("connector", "string", optional=False),
            connect_field("name", "string", optional=False),
            connect_field("ts_ms", "int64", optional=False),
            {"type": "string", "optional": True, "name": "io.debezium.data.Enum", "version": 1,
             "parameters": {"allowed": "true,last,false,incremental"}, "default": "false", "field": "snapshot"},
            connect_field("db", "string", optional=False),
            connect_field("sequence", "string"),
            connect_field("schema", "string", optional=False),
            connect_field("table", "string", optional=False),
            connect_field("txId", "int64"),
            connect_field("lsn", "int64"),
            connect_field("xmin", "int64"),
        ], "optional": False, "name": "io.debezium.connector.postgresql.Source", "field": "source"},
        connect_field("op", "string", optional=False),
        connect_field("ts_ms", "int64"),
        {"type": "struct", "fields": [
            connect_field("id", "string", optional=False),
            connect_field("total_order", "int64", optional=False),
            connect_field("data_collection_order", "int64", optional=False),
        ], "optional": True, "name": "event.block", "version": 1, "field": "transaction"},
    ],
    "optional": False,
    "name": "shop.public.customers.Envelope",
    "version": 1,
}


def customer(id, name, email, bio, active, balance, signed_up, last_login, updated_at) -> dict:
    return dict(id=id, name=name, email=email, bio=bio, active=active, balance=Decimal(balance),
                signed_up=dt.date.fromisoformat(signed_up), last_login=instant(last_login),
                updated_at=instant(updated_at))


def micros(at: dt.datetime) -> int:
    return (at - EPOCH) // dt.timedelta(microseconds=1)


def connect_row(row: dict | None) -> dict | None:
    """A row as the JsonConverter encodes it with its schema: a Date in days, a Timestamp in ms,
    a MicroTimestamp in µs, a double."""
    if row is None:
        return None
    out = dict(row)
    out["balance"] = float(row["balance"])
    out["signed_up"] = (row["signed_up"] - dt.date(1970, 1, 1)).days
    out["last_login"] = micros(row["last_login"]) // 1000
    out["updated_at"] = micros(row["updated_at"])
    return out


def plain_row(row: dict | None, micro_numbers: bool) -> dict | None:
    """A row without a schema: dates and times as ISO strings, or updated_at in µs."""
    if row is None:
        return None
    out = dict(row)
    out["balance"] = float(row["balance"])
    out["signed_up"] = row["signed_up"].isoformat()
    out["last_login"] = row["last_login"].isoformat().replace("+00:00", "Z")
    out["updated_at"] = micros(row["updated_at"]) if micro_numbers else row["updated_at"].isoformat()
    return out


LSN_SNAPSHOT = 33_556_744
TS0 = 1_709_283_600_000  # 2024-03-01T09:00:00Z, in ms


def envelope(op: str, before: dict | None, after: dict | None, lsn: int, ts_ms: int, wrapped: bool,
             snapshot: str = "false", micro_numbers: bool = False) -> dict:
    """A Debezium PostgreSQL connector change event, with the schema wrapper or without."""
    encode = connect_row if wrapped else functools.partial(plain_row, micro_numbers=micro_numbers)
    payload = {
        "before": encode(before),
        "after": encode(after),
        "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "shop", "ts_ms": ts_ms,
                   "snapshot": snapshot, "db": "shop", "sequence": json.dumps([str(lsn - 8), str(lsn)]),
                   "schema": "public", "table": "customers", "txId": 771 + lsn % 97, "lsn": lsn, "xmin": None},
        "op": op,
        "ts_ms": ts_ms + 37,
        "transaction": None,
    }
    return {"schema": ENVELOPE_SCHEMA, "payload": payload} if wrapped else payload


ANN_BIO = "Ann has been a customer since the beginning. " * 60  # a TOASTed value (> 2 kB)
BOB_BIO = "Bob likes parcels. " * 150
ANN = customer(1, "Ann", "ann@example.com", ANN_BIO, True, "120.50", "2021-05-04", "2024-02-28T08:00:00.250Z",
               "2024-02-28T08:00:00.000001Z")
BOB = customer(2, "Bob", "bob@example.com", BOB_BIO, True, "0.00", "2022-11-30", "2024-02-27T22:15:00Z",
               "2024-02-27T22:15:00.123456Z")
CY = customer(3, "Cy", None, None, False, "-3.25", "2020-01-01", "2023-12-31T23:59:59.999Z",
              "2024-01-01T00:00:00Z")
DEE = customer(4, "Dee", "dee@example.com", "short", True, "9999.99", "2024-02-29", "2024-03-01T08:59:00Z",
               "2024-03-01T08:59:00.5Z")


def changed(row: dict, **values) -> dict:
    out = dict(row)
    for name, value in values.items():
        if name == "balance":
            value = Decimal(value)
        elif name in ("last_login", "updated_at"):
            value = instant(value)
        out[name] = value
    return out


def debezium_script():
    """The changes in order, [(envelope, or None for a tombstone; the row it writes in Python
    types, or None)], and the mirror after them: {id: (row, lsn, source ts_ms)}."""
    ann2 = changed(ANN, name="Ann B.", email="ann.b@example.com", updated_at="2024-03-01T09:01:00.000002Z")
    bob2 = changed(BOB, email=None, balance="42.10", updated_at="2024-03-01T09:02:00Z")
    dee40 = changed(DEE, id=40)
    ann3 = changed(ann2, active=False, bio=UNAVAILABLE, updated_at="2024-03-01T09:05:00Z")
    bob3 = changed(bob2, name="Robert", bio=UNAVAILABLE, updated_at="2024-03-01T09:06:00.654321Z")
    dee40b = changed(dee40, balance="10000.01", last_login="2024-03-01T09:07:00Z", updated_at="2024-03-01T09:07:00Z")
    events = [
        # The snapshot: one LSN for all its rows.
        (envelope("r", None, ANN, LSN_SNAPSHOT, TS0, True, snapshot="first"), ANN),
        (envelope("r", None, BOB, LSN_SNAPSHOT, TS0, False, snapshot="true"), BOB),
        (envelope("r", None, CY, LSN_SNAPSHOT, TS0, True, snapshot="last"), CY),
        # Streaming.
        (envelope("c", None, DEE, 33_557_000, TS0 + 60_000, False, micro_numbers=True), DEE),
        # REPLICA IDENTITY FULL: the update says what was before.
        (envelope("u", ANN, ann2, 33_557_100, TS0 + 61_000, True), ann2),
        # Default identity: no before; email set to null is a value, not "unchanged".
        (envelope("u", None, bob2, 33_557_200, TS0 + 62_000, False), bob2),
        (envelope("d", CY, None, 33_557_300, TS0 + 63_000, False), None),
        (None, None),
        # The key of Dee changes 4 → 40 (one UPDATE in PostgreSQL, one LSN): a delete of the old
        # key, its tombstone, a create of the new one.
        (envelope("d", DEE, None, 33_557_400, TS0 + 64_000, True), None),
        (None, None),
        (envelope("c", None, dee40, 33_557_400, TS0 + 64_000, True), dee40),
        # TOAST: bio did not change, and Debezium does not have it.
        (envelope("u", None, ann3, 33_557_500, TS0 + 65_000, True), ann3),
        (envelope("u", None, bob3, 33_557_600, TS0 + 66_000, False, micro_numbers=True), bob3),
        (envelope("u", dee40, dee40b, 33_557_700, TS0 + 67_000, False), dee40b),
    ]
    mirror_rows = {
        1: (changed(ann3, bio=ANN_BIO), 33_557_500, TS0 + 65_000),
        2: (changed(bob3, bio=BOB_BIO), 33_557_600, TS0 + 66_000),
        40: (dee40b, 33_557_700, TS0 + 67_000),
    }
    return events, mirror_rows


def ndjson(events) -> bytes:
    return b"".join(b"null\n" if e is None else json.dumps(e).encode() + b"\n" for e, _ in events)


def ms_instant(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


def pg_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def test_debezium_envelopes_make_the_mirror_and_the_history(server):
    """Hand-written Debezium PostgreSQL envelopes over HTTP (NDJSON), with and without the
    schema wrapper: snapshot rows, insert, update with and without `before`, delete, tombstones
    (`null` lines), a key change (delete + create), and updates whose TOASTed column is
    __debezium_unavailable_value. The mirror is exact (the unavailable column keeps its value;
    Date, Timestamp and MicroTimestamp read by their names; µs numbers and ISO strings without
    a schema), _version is the LSN and _source_ts source.ts_ms; the history has one row per
    change (its new image, _before, _unchanged) and none for a tombstone."""
    server.sql(CUSTOMERS_DDL)
    events, mirror_rows = debezium_script()
    # In two requests: the key change spans them.
    status, _, answer = server.ingest("customers", ndjson(events[:9]))
    assert status == 200, answer
    status, _, answer = server.ingest("customers", ndjson(events[9:]))
    assert status == 200, answer

    changes = [(e.get("payload", e), row) for e, row in events if e is not None]
    wait_count(server, "customers_changes", len(changes), "one history row per change, none for tombstones")
    want = {
        key: {**row, "_version": lsn, "_source_ts": ms_instant(ts)} for key, (row, lsn, ts) in mirror_rows.items()
    }

    def read_mirror():
        rows = query(server, f"SELECT {', '.join(CUSTOMER_COLUMNS)}, _version, _source_ts FROM customers")
        return None if rows is None else {r["id"]: {**r, "_version": int(r["_version"])} for r in rows}

    settle(read_mirror, want, "the customers mirror")

    rows = must_query(server, f"SELECT {', '.join(CUSTOMER_COLUMNS)}, {HISTORY_COLUMNS} FROM customers_changes")
    assert len(rows) == len(changes)
    assert count(server, "customers_errors") in (0, -1), "a tombstone is no error"
    assert Counter(r["_op"] for r in rows) == {"r": 3, "c": 2, "u": 5, "d": 2}
    by_change = {(int(r["_version"]), r["id"], r["_op"]): r for r in rows}
    assert len(by_change) == len(rows), "two history rows for one change"
    for payload, written in changes:
        source, op = payload["source"], payload["op"]
        key = (payload["after"] or payload["before"])["id"]
        r = by_change.get((source["lsn"], key, op))
        assert r is not None, f"no history row for {op} of id {key} at LSN {source['lsn']}: {sorted(by_change)}"
        assert r["_source_ts"] == ms_instant(source["ts_ms"]), r
        # The LSN as a number or as PostgreSQL writes it (0/2000BFC).
        assert r["_source_pos"] in (str(source["lsn"]), pg_lsn(source["lsn"])) or (
            r["_source_pos"] and str(source["lsn"]) in r["_source_pos"]), r
        # _before is the old image when the envelope has one.
        if payload["before"] is None:
            assert r["_before"] is None, r
        else:
            assert r["_before"] is not None, f"{op} of id {key}: the envelope's before is not in _before: {r}"
            before = json.loads(r["_before"])
            assert {k: before.get(k) for k in ("id", "name", "email", "active")} == {
                k: payload["before"][k] for k in ("id", "name", "email", "active")
            }, r
        if op == "d":
            continue  # a delete's row holds the old image or the key: the key is checked
        # The new image in the declared types, but for what the source did not send.
        unavailable = [c for c in CUSTOMER_COLUMNS if written[c] == UNAVAILABLE]
        assert (json.loads(r["_unchanged"]) if r["_unchanged"] is not None else []) == unavailable, r
        got = {c: r[c] for c in CUSTOMER_COLUMNS if c not in unavailable}
        assert got == {c: written[c] for c in CUSTOMER_COLUMNS if c not in unavailable}, (op, key)


# --------------------------------------------------------------------------------------------
# Bad input, definitions, views, DROP
# --------------------------------------------------------------------------------------------


def pipes_record(event_name: str, key: str, seq: int, new: dict | None = None, old: dict | None = None,
                 view: str = "NEW_AND_OLD_IMAGES") -> dict:
    image = {"ApproximateCreationDateTime": 1_736_154_000 + seq % 1000, "Keys": {"order_id": {"S": key}},
             "SequenceNumber": str(seq), "SizeBytes": 64, "StreamViewType": view}
    if new is not None:
        image["NewImage"] = new
    if old is not None:
        image["OldImage"] = old
    return {"eventID": uuid.uuid4().hex, "eventName": event_name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1", "dynamodb": image,
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2025-01-06T09:00:00.000"}


def test_bad_change_records_land_in_the_errors_table_and_change_nothing_else(server, kinesis):
    """Not JSON, an unknown eventName, an INSERT without Keys or NewImage, a KEYS_ONLY MODIFY
    (DynamoDB), a Debezium envelope without `op`: each is a row of `<t>_errors` with the record
    and a reason, and the mirrors and histories hold only the good records around them."""
    server.sql(orders_ddl("orders", ", shards = 1"))
    server.sql(CUSTOMERS_DDL.replace("shards = 2", "shards = 1"))
    good = {"order_id": {"S": "k1"}, "status": {"S": "new"}, "qty": {"N": "1"}}
    later = {"order_id": {"S": "k1"}, "status": {"S": "paid"}, "qty": {"N": "2"}}
    first = pipes_record("INSERT", "k1", 100, new=good)
    unknown = pipes_record("UPSERT", "k1", 101, new=later, old=good)
    headless = pipes_record("INSERT", "k2", 102)
    del headless["dynamodb"]["Keys"]
    keys_only = pipes_record("MODIFY", "k1", 103, view="KEYS_ONLY")
    last = pipes_record("MODIFY", "k1", 104, new=later, old=good)
    bad = {
        b"this is { not json": ("json",),
        json.dumps(unknown).encode(): ("eventname", "upsert"),
        json.dumps(headless).encode(): ("keys", "newimage", "image"),
        json.dumps(keys_only).encode(): ("keys_only", "image"),
    }
    entries = [json.dumps(first).encode(), *bad, json.dumps(last).encode()]
    answer = kinesis.put_records(StreamName="orders", Records=[{"Data": d, "PartitionKey": "k1"} for d in entries])
    assert answer["FailedRecordCount"] == 0

    no_op = envelope("u", None, changed(BOB, name="Nobody"), 33_557_900, TS0, False)
    del no_op["op"]
    status, _, answer = server.ingest("customers", ndjson([
        (envelope("r", None, BOB, LSN_SNAPSHOT, TS0, False, snapshot="last"), "r"), (no_op, "bad"),
    ]))
    assert status == 200, answer

    wait_count(server, "orders_changes", 2, "the two good DynamoDB records in the history")
    wait_count(server, "orders_errors", len(bad), "the bad DynamoDB records in orders_errors")
    wait_count(server, "customers_errors", 1, "the envelope without op in customers_errors")
    wait_count(server, "customers_changes", 1, "the good envelope in the history")

    errors = must_query(server, "SELECT raw, reason FROM orders_errors")
    assert sorted(e["raw"].encode() for e in errors) == sorted(bad), errors
    for e in errors:
        reason = (e["reason"] or "").lower()
        assert any(word in reason for word in bad[e["raw"].encode()]), e
    (e,) = must_query(server, "SELECT raw, reason FROM customers_errors")
    assert json.loads(e["raw"]) == no_op and "op" in e["reason"].lower(), e

    rows = must_query(server, "SELECT order_id, status, qty, _op, _version FROM orders_changes ORDER BY _version")
    assert [(r["order_id"], r["status"], r["qty"], r["_op"], int(r["_version"])) for r in rows] == [
        ("k1", "new", 1, "c", 100), ("k1", "paid", 2, "u", 104)]
    rows = must_query(server, "SELECT order_id, status, qty, _version FROM orders")
    assert [(r["order_id"], r["status"], r["qty"], int(r["_version"])) for r in rows] == [("k1", "paid", 2, 104)]
    rows = must_query(server, "SELECT id, name FROM customers")
    assert [(r["id"], r["name"]) for r in rows] == [(2, "Bob")]
    assert count(server, "customers_changes") == 1


def test_change_stream_definitions_are_checked_at_create_and_views_over_a_mirror_refused(server):
    """CREATE STREAM refuses, with HTTP 400 and a message naming the option: format 'dynamodb'
    without primary_key, a primary_key naming no declared column, primary_key with format
    'json', a version_attribute on a TEXT column. None of them leaves a stream. A materialized
    view over a mirror is refused with a message that says why."""
    columns = "order_id TEXT NOT NULL, status TEXT, v TEXT"
    for statement, mentions in [
        (f"CREATE STREAM bad ({columns}) WITH (format = 'dynamodb')", ["primary_key"]),
        (f"CREATE STREAM bad ({columns}) WITH (format = 'debezium')", ["primary_key"]),
        (f"CREATE STREAM bad ({columns}) WITH (format = 'dynamodb', primary_key = 'nope')", ["primary_key", "nope"]),
        (f"CREATE STREAM bad ({columns}) WITH (format = 'dynamodb', primary_key = 'order_id, nope')",
         ["primary_key", "nope"]),
        (f"CREATE STREAM bad ({columns}) WITH (format = 'json', primary_key = 'order_id')", ["primary_key"]),
        (f"CREATE STREAM bad ({columns}) WITH (format = 'dynamodb', primary_key = 'order_id', "
         "version_attribute = 'v')", ["version_attribute", "v"]),
    ]:
        status, answer = server.sql_status(statement)
        assert status == 400, f"{statement!r} → {status}: {answer!r}"
        assert isinstance(answer, dict) and answer.get("code"), answer
        for word in mentions:
            assert word in answer["error"], f"{statement!r}: the message should name {word!r}: {answer['error']!r}"
    assert server.get("/v1/streams")[2]["streams"] == [], "a refused CREATE leaves nothing"

    server.sql(orders_ddl("orders"))
    status, answer = server.sql_status("CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM orders")
    assert 400 <= status < 500, f"a view over a mirror → {status}: {answer!r}"
    message = answer["error"].lower()
    assert "mirror" in message or "change stream" in message, answer
    assert [row[0] for row in server.sql("SHOW MATERIALIZED VIEWS")["rows"]] == []


def table_names(server) -> set[str]:
    return {r["table_name"] for r in rows_as_dicts(server.sql("SHOW TABLES"))}


def test_drop_stream_drops_the_mirror_the_history_and_the_errors_table(server, kinesis):
    """DROP STREAM orders drops orders, orders_changes and orders_errors (gone from SHOW TABLES
    and from the lake); a stream of the same name made again starts empty."""
    server.sql(orders_ddl("orders"))
    first = pipes_record("INSERT", "k1", 100, new={"order_id": {"S": "k1"}, "status": {"S": "new"}})
    kinesis.put_records(StreamName="orders", Records=[
        {"Data": json.dumps(first).encode(), "PartitionKey": "k1"}, {"Data": b"not json", "PartitionKey": "k1"}])
    three = {"orders", "orders_changes", "orders_errors"}
    wait_for(lambda: count(server, "orders") == 1 and count(server, "orders_changes") == 1
             and count(server, "orders_errors") == 1, "the three tables to hold their rows")
    assert three <= table_names(server)

    server.sql("DROP STREAM orders")
    wait_for(lambda: not (three & table_names(server)), "the three tables to be gone from SHOW TABLES", timeout=15)
    for name in three:
        assert server.sql_status(f"SELECT * FROM {name}")[0] != 200, f"{name} can still be read"
        assert not DeltaTable.is_deltatable(str(server.data_dir / "lake" / name)), f"{name} is still in the lake"

    server.sql(orders_ddl("orders"))
    second = pipes_record("INSERT", "k2", 200, new={"order_id": {"S": "k2"}, "status": {"S": "packed"}})
    kinesis.put_records(StreamName="orders", Records=[{"Data": json.dumps(second).encode(), "PartitionKey": "k2"}])
    wait_count(server, "orders_changes", 1, "the new stream's change")
    rows = must_query(server, "SELECT order_id, status FROM orders")
    assert [(r["order_id"], r["status"]) for r in rows] == [("k2", "packed")]
    assert [r["order_id"] for r in must_query(server, "SELECT order_id FROM orders_changes")] == ["k2"]
    assert count(server, "orders_errors") in (0, -1)
