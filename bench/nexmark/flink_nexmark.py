#!/usr/bin/env python3
"""Nexmark queries on Apache Flink SQL (PyFlink 2.3, local mini-cluster, streaming mode), over the
NDJSON files of `sluice gen nexmark`, so that Sluice's figures can be set beside Flink's in one run.

  python flink_nexmark.py --input DIR --work WORK_DIR --query q0 [--query q5 ...] [--parallelism 2]
                          [--sink file|blackhole] [--state-backend hashmap|rocksdb] [--heap 4g]
                          [--timeout SECONDS] [--explain] [--label TEXT]

DIR holds persons.ndjson, auctions.ndjson and bids.ndjson (`sluice gen nexmark --events N --only
persons|auctions|bids`: in date_time order, 10,000 events/s of event time, kinds 1:3:46). Each of
them is a `filesystem` table (format json) with `date_time` as its rowtime and
WATERMARK FOR date_time AS date_time - INTERVAL '0' SECOND (the events are in order); views
`person`, `auction`, `bid` over them carry Flink's names, so each query reads as in Flink's own
suite (github.com/nexmark/nexmark, nexmark-flink/src/main/resources/queries/qN.sql). Supported:
q0-q5, q7-q11, q13-q22, and asof (not Nexmark's: an event-time temporal join of each bid with
its auction's version at the bid's time) (`--query all`). Each query runs as a job of its own, one after another,
each in a fresh process (its own PyFlink gateway JVM, which runs the mini-cluster), so that the
peak RSS is that query's and nothing of one query's heap or JIT carries over. Prints one JSON line
per query on stdout:
  {"engine": "flink", "query": "q5", "events", "wall_s", "events_per_s", "cores", "peak_rss_mb",
   "rows", ...}
  events       lines of the input files the query reads (bids only for most; q3, q8: persons and
               auctions; q4, q9, q20, asof: auctions and bids); the side input of q13 is not counted.
  wall_s       the job's net runtime as Flink's JobManager reports it: job start to FINISHED
               (all input read, every window fired, sink files committed); events_per_s =
               events / wall_s. SQL planning and the mini-cluster's start are outside it
               (plan_s, mini_cluster_s, submit_s; client_s = submit to result). See
               shared/bench/peers/common.py run_flink_job, as for flink_w1.py.
  cores        CPU seconds of the JVM and this process / client_s (CpuMeter); other_cpu_share:
               CPU other processes took meanwhile, / (client_s x cores of the box).
  peak_rss_mb  VmHWM of the gateway JVM (planner and the whole mini-cluster) at job end.
  rows         lines the sink wrote. Append-only queries write CSV. Queries whose result is
               updated (q4, q9, q15-q19: group aggregations and ROW_NUMBER) cannot go to a CSV
               file: they write the changelog as debezium-json, one line per change, and
               final_rows (inserts minus retractions) is the size of the final result.

What differs from Flink's suite, and why:
  source   files through the filesystem connector instead of the `nexmark` datagen connector in
           the job; one table per kind instead of one table with an event_type column and three
           filtering views. The local file system reports one block a file, so each file is one
           split, read and parsed by one source subtask whatever the parallelism (the other
           subtasks of that source finish at once); the operators after it run in parallel.
           Events are in order and each file is one split, so none arrives behind the watermark.
  time     `date_time` and `expires` are TIMESTAMP_LTZ(3), not TIMESTAMP(3): the files write
           RFC 3339 with a trailing Z, which the json format parses only into TIMESTAMP_LTZ
           (into TIMESTAMP(3) it fails the job). table.local-time-zone is UTC, so HOUR(),
           DATE_FORMAT() and window bounds are the same as over TIMESTAMP(3) UTC values.
           Watermark delay 0 s (the suite: 4 s, for its generator's out-of-order events).
  names    snake_case fields (date_time, item_name, initial_bid, email_address, credit_card);
           q9, q20 alias their duplicate columns as the suite's sink tables name them.
  sink     the suite writes to `blackhole` (q10: partitioned CSV, kept here); here CSV files,
           so that rows can be counted and checked against Sluice's. An updating result goes to
           debezium-json, which takes UPDATE_BEFORE messages too: blackhole is an upsert sink,
           which lets the planner leave them out, so these queries do a little more here.
           `--sink blackhole` runs every query into blackhole, as the suite (rows: null).
  q13      the side input (key BIGINT, value STRING), "i,i" for i in 0..9999 as the suite's
           SideInputGenerator writes it, is WORK_DIR/side_input.csv behind `sluice-csv-lookup`
           (flink/CsvLookupTableFactory.java, built with javac on first use): Flink 2.x has no
           legacy CsvTableSource, the lookup source the suite's q13 relies on, and the
           filesystem connector cannot be looked up. Same query: lookup join FOR SYSTEM_TIME AS
           OF PROCTIME(), in-memory map of the file.
  q14      the suite's UDF count_char(extra, 'c') is CHAR_LENGTH(extra) -
           CHAR_LENGTH(REPLACE(extra, 'c', '')) (the files are ASCII: same count).
  settings as the suite's config.yaml: table.exec.mini-batch (2 s, 50,000 rows) and
           table.optimizer.distinct-agg.split; pipeline.object-reuse (common.build_flink). Not
           as the suite: hashmap state (suite: RocksDB; --state-backend rocksdb) and no
           checkpoints (suite: every 3 min; --checkpoint-interval), as flink_w1.py; no warm-up
           run (the suite warms up on 100 M events first).
  skipped  q6 (the suite marks it unsupported: OVER on an updating input), q12 (processing-time
           windows: its result depends on the wall clock, not the data); q23 (not asked for).
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

PEERS_DIR = Path(os.environ.get("PEERS_DIR")
                 or Path(__file__).resolve().parents[3] / "shared/bench/peers")
sys.path.insert(0, str(PEERS_DIR))
from common import (LOAD_START, CpuMeter, build_flink, emit, flink_jvm_pid,  # noqa: E402
                    fresh_dir, log, peak_rss_mb, run_flink_job)

HERE = Path(__file__).resolve().parent
LOOKUP_SRC = HERE / "flink" / "CsvLookupTableFactory.java"
FLINK_VENV = Path(os.environ.get("FLINK_VENV")
                  or Path.home() / ".cache/sluice-peers/venv-flink")
KINDS = {"persons": "person", "auctions": "auction", "bids": "bid"}
SIDE_INPUT_ROWS = 10000

# Physical columns of each file table; date_time is the rowtime of all three.
SCHEMAS = {
    "persons": "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, "
               "state STRING, date_time TIMESTAMP_LTZ(3), extra STRING",
    "auctions": "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, "
                "reserve BIGINT, date_time TIMESTAMP_LTZ(3), expires TIMESTAMP_LTZ(3), "
                "seller BIGINT, category BIGINT, extra STRING",
    "bids": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, "
            "date_time TIMESTAMP_LTZ(3), extra STRING",
}

# The ranks of q15-q17, as the suite writes them.
RANKS = """
     count(*) filter (where price < 10000) AS rank1_bids,
     count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids,
     count(*) filter (where price >= 1000000) AS rank3_bids,"""
DISTINCT_RANKS = """
     count(distinct bidder) AS total_bidders,
     count(distinct bidder) filter (where price < 10000) AS rank1_bidders,
     count(distinct bidder) filter (where price >= 10000 and price < 1000000) AS rank2_bidders,
     count(distinct bidder) filter (where price >= 1000000) AS rank3_bidders,
     count(distinct auction) AS total_auctions,
     count(distinct auction) filter (where price < 10000) AS rank1_auctions,
     count(distinct auction) filter (where price >= 10000 and price < 1000000) AS rank2_auctions,
     count(distinct auction) filter (where price >= 1000000) AS rank3_auctions"""

# name -> (file tables read, updating result?, SELECT as in the suite's qN.sql)
QUERIES = {
    "q0": (["bids"], False, "SELECT auction, bidder, price, date_time, extra FROM bid"),
    "q1": (["bids"], False, """
SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid"""),
    "q2": (["bids"], False, "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0"),
    "q3": (["persons", "auctions"], False, """
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')"""),
    "q4": (["auctions", "bids"], True, """
SELECT Q.category AS id, AVG(Q.final) AS final
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category"""),
    "q5": (["bids"], False, """
SELECT AuctionBids.auction, AuctionBids.num
 FROM (
   SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
   FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
   GROUP BY auction, window_start, window_end
 ) AS AuctionBids
 JOIN (
   SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
   FROM (
     SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
     FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
     GROUP BY auction, window_start, window_end
   ) AS CountBids
   GROUP BY CountBids.starttime, CountBids.endtime
 ) AS MaxBids
 ON AuctionBids.starttime = MaxBids.starttime AND
    AuctionBids.endtime = MaxBids.endtime AND
    AuctionBids.num >= MaxBids.maxn"""),
    # The suite's select list puts price before bidder (its sink names them the other way).
    "q7": (["bids"], False, """
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end AS date_time
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1
ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time"""),
    "q8": (["persons", "auctions"], False, """
SELECT P.id, P.name, P.starttime AS stime
FROM (
  SELECT id, name, window_start AS starttime, window_end AS endtime
  FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY id, name, window_start, window_end
) P
JOIN (
  SELECT seller, window_start AS starttime, window_end AS endtime
  FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
  GROUP BY seller, window_start, window_end
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime"""),
    "q9": (["auctions", "bids"], True, """
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
       extra, auction, bidder, price, bid_date_time, bid_extra
FROM (
   SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time, B.extra AS bid_extra,
     ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
   FROM auction A, bid B
   WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
)
WHERE rownum <= 1"""),
    "q10": (["bids"], False, """
SELECT auction, bidder, price, date_time, extra,
       DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt, DATE_FORMAT(date_time, 'HH:mm') AS hm
FROM bid"""),
    "q11": (["bids"], False, """
SELECT
    B.bidder,
    count(*) AS bid_count,
    SESSION_START(B.date_time, INTERVAL '10' SECOND) AS starttime,
    SESSION_END(B.date_time, INTERVAL '10' SECOND) AS endtime
FROM bid B
GROUP BY B.bidder, SESSION(B.date_time, INTERVAL '10' SECOND)"""),
    "q13": (["bids"], False, """
SELECT B.auction, B.bidder, B.price, B.date_time, S.`value`
FROM (SELECT *, PROCTIME() AS p_time FROM bid) B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S
ON mod(B.auction, 10000) = S.key"""),
    "q14": (["bids"], False, """
SELECT
    auction,
    bidder,
    0.908 * price AS price,
    CASE
        WHEN HOUR(date_time) >= 8 AND HOUR(date_time) <= 18 THEN 'dayTime'
        WHEN HOUR(date_time) <= 6 OR HOUR(date_time) >= 20 THEN 'nightTime'
        ELSE 'otherTime'
    END AS bid_time_type,
    date_time,
    extra,
    CAST(COALESCE(CHAR_LENGTH(extra) - CHAR_LENGTH(REPLACE(extra, 'c', '')), 0) AS BIGINT)
        AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000"""),
    "q15": (["bids"], True, f"""
SELECT
     DATE_FORMAT(date_time, 'yyyy-MM-dd') AS `day`,
     count(*) AS total_bids,{RANKS}{DISTINCT_RANKS}
FROM bid
GROUP BY DATE_FORMAT(date_time, 'yyyy-MM-dd')"""),
    "q16": (["bids"], True, f"""
SELECT
    channel,
    DATE_FORMAT(date_time, 'yyyy-MM-dd') AS `day`,
    max(DATE_FORMAT(date_time, 'HH:mm')) AS `minute`,
    count(*) AS total_bids,{RANKS}{DISTINCT_RANKS}
FROM bid
GROUP BY channel, DATE_FORMAT(date_time, 'yyyy-MM-dd')"""),
    "q17": (["bids"], True, f"""
SELECT
     auction,
     DATE_FORMAT(date_time, 'yyyy-MM-dd') AS `day`,
     count(*) AS total_bids,{RANKS}
     min(price) AS min_price,
     max(price) AS max_price,
     avg(price) AS avg_price,
     sum(price) AS sum_price
FROM bid
GROUP BY auction, DATE_FORMAT(date_time, 'yyyy-MM-dd')"""),
    "q18": (["bids"], True, """
SELECT auction, bidder, price, channel, url, date_time, extra
 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC)
                 AS rank_number
       FROM bid)
 WHERE rank_number <= 1"""),
    "q19": (["bids"], True, """
SELECT * FROM
(SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
WHERE rank_number <= 10"""),
    "q20": (["auctions", "bids"], False, """
SELECT
    auction, bidder, price, channel, url, B.date_time AS bid_date_time, B.extra AS bid_extra,
    item_name, description, initial_bid, reserve, A.date_time AS auction_date_time, expires,
    seller, category, A.extra AS auction_extra
FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10"""),
    # Not Nexmark's: each bid with its auction as it was at the bid's time (an event-time
    # temporal join; the versions are the view auction_versions, Flink's versioned view of an
    # append-only table: the latest row of each key by its rowtime).
    "asof": (["auctions", "bids"], False, """
SELECT B.auction, B.bidder, B.price, B.date_time, A.seller, A.category
FROM bid B
JOIN auction_versions FOR SYSTEM_TIME AS OF B.date_time AS A ON B.auction = A.id"""),
    "q21": (["bids"], False, """
SELECT
    auction, bidder, price, channel,
    CASE
        WHEN lower(channel) = 'apple' THEN '0'
        WHEN lower(channel) = 'google' THEN '1'
        WHEN lower(channel) = 'facebook' THEN '2'
        WHEN lower(channel) = 'baidu' THEN '3'
        ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)
    END AS channel_id
FROM bid
WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) is not null or
      lower(channel) in ('apple', 'google', 'facebook', 'baidu')"""),
    "q22": (["bids"], False, """
SELECT
    auction, bidder, price, channel,
    SPLIT_INDEX(url, '/', 3) AS dir1,
    SPLIT_INDEX(url, '/', 4) AS dir2,
    SPLIT_INDEX(url, '/', 5) AS dir3
FROM bid"""),
}

# q10's sink as in the suite: CSV partitioned by day and minute, committed by partition time.
Q10_SINK_OPTIONS = """
  'sink.partition-commit.trigger' = 'partition-time',
  'sink.partition-commit.delay' = '1 min',
  'sink.partition-commit.policy.kind' = 'success-file',
  'partition.time-extractor.timestamp-pattern' = '$dt $hm:00',
  'sink.rolling-policy.rollover-interval' = '1min',
  'sink.rolling-policy.check-interval' = '1min',"""


# Views a query reads beyond the tables of the events.
SETUP = {
    "asof": ["""
CREATE VIEW auction_versions AS
SELECT id, seller, category, date_time FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY date_time DESC) AS rownum FROM auction)
WHERE rownum = 1"""],
}


SKIPPED = {
    "q6": "q6 (Flink's suite marks it unsupported)",
    "q12": "q12 (processing-time windows: the result depends on the wall clock)",
}


def query_order(name):
    """Nexmark's by number, then the others (asof)."""
    return (0, int(name[1:])) if name[1:].isdigit() else (1, name)


# ---------------------------------------------------------------------------------------------
# Driver: one child process per query


def count_lines(path, cache):
    """Lines of `path` (the events of a file), cached in `cache` by path, size and mtime."""
    st = os.stat(path)
    key = "%s|%d|%d" % (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in cache:
        n = 0
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                n += block.count(b"\n")
        if st.st_size and not _ends_with_newline(path):
            n += 1
        cache[key] = n
    return cache[key]


def _ends_with_newline(path):
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def flink_python():
    """A Python with PyFlink: this one if it has it, else the peers' Flink venv (created by
    setup_flink.sh when missing)."""
    try:
        import pyflink  # noqa: F401
        return sys.executable
    except ImportError:
        pass
    py = FLINK_VENV / "bin" / "python"
    if not py.exists():
        log("no PyFlink venv at", FLINK_VENV, "- running setup_flink.sh")
        subprocess.run(["bash", str(PEERS_DIR / "setup_flink.sh")], check=True)
    return str(py)


def drive(args):
    names = []
    for q in args.query:
        for part in q.split(","):
            part = part.strip().lower()
            if part == "all":
                names.extend(sorted(QUERIES, key=query_order))
            elif part:
                names.append(part)
    unknown = [n for n in names if n not in QUERIES]
    if unknown:
        raise SystemExit("unsupported queries: %s (supported: %s)" % (
            ", ".join(SKIPPED.get(n, n) for n in unknown),
            ", ".join(sorted(QUERIES, key=query_order))))
    if not names:
        raise SystemExit("no --query given")

    inp = os.path.abspath(args.input)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    cache_path = os.path.join(work, "_event_counts.json")
    try:
        with open(cache_path) as fh:
            cache = json.load(fh)
    except (OSError, ValueError):
        cache = {}
    counts = {}
    for table in KINDS:
        path = os.path.join(inp, table + ".ndjson")
        if not os.path.isfile(path):
            raise SystemExit("missing input file %s" % path)
        counts[table] = count_lines(path, cache)
    with open(cache_path, "w") as fh:
        json.dump(cache, fh)
    log("input events:", counts)

    side = os.path.join(work, "side_input.csv")
    if "q13" in names:
        with open(side, "w") as fh:
            fh.writelines("%d,%d\n" % (i, i) for i in range(SIDE_INPUT_ROWS))

    py = flink_python()
    failed = 0
    for name in names:
        cmd = [py, os.path.abspath(__file__), "--child", name, "--input", inp,
               "--work", os.path.join(work, name), "--parallelism", str(args.parallelism),
               "--sink", args.sink, "--state-backend", args.state_backend, "--heap", args.heap,
               "--checkpoint-interval", str(args.checkpoint_interval), "--label", args.label,
               "--events", json.dumps(counts), "--side-input", side]
        if args.explain:
            cmd.append("--explain")
        log("running", name)
        t0 = time.time()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = child.communicate(timeout=args.timeout or None)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child's own session: its JVM and it
            out, _ = child.communicate()
            emit({"engine": "flink", "query": name, "error": "timeout after %ds" % args.timeout,
                  "label": args.label})
            failed += 1
            continue
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if child.returncode != 0 or not lines:
            emit({"engine": "flink", "query": name,
                  "error": "exit status %s after %.1fs (see stderr and %s/log)" % (
                      child.returncode, time.time() - t0, os.path.join(work, name)),
                  "label": args.label})
            failed += 1
            continue
        print(lines[-1], flush=True)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# Child: one query, one job


def lookup_jar():
    """Jar of the `sluice-csv-lookup` connector (flink/CsvLookupTableFactory.java), compiled
    with javac against PyFlink's jars on first use and kept in the venv, named by the hash of
    its source (as common.ordered_files_jar does for the W1 source)."""
    from common import flink_home
    src = LOOKUP_SRC.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:12]
    out_dir = os.path.join(sys.prefix, "share", "sluice-bench")
    jar = os.path.join(out_dir, "flink-csv-lookup-%s.jar" % digest)
    if os.path.exists(jar):
        return jar
    javac = shutil.which("javac")
    if javac is None:
        raise SystemExit("javac not found: q13's lookup source needs a JDK "
                         "(apt-get install openjdk-17-jdk-headless)")
    os.makedirs(out_dir, exist_ok=True)
    classes = fresh_dir(os.path.join(out_dir, "classes-lookup-%s" % digest))
    cp = os.path.join(flink_home(), "lib", "*")
    subprocess.run([javac, "--release", "17", "-nowarn", "-cp", cp, "-d", classes,
                    str(LOOKUP_SRC)], check=True)
    tmp = jar + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/services/org.apache.flink.table.factories.Factory",
                   "sluice.bench.flink.CsvLookupTableFactory\n")
        for root, _, files in os.walk(classes):
            for f in sorted(files):
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, classes))
    os.replace(tmp, jar)
    shutil.rmtree(classes)
    log("built", jar)
    return jar


def result_columns(t_env, select):
    """[(name, SQL type)] of the query's result, nullable, time attributes as plain types."""
    cols = t_env.sql_query(select)._j_table.getResolvedSchema().getColumns()
    return [(c.getName(), c.getDataType().getLogicalType().copy(True).asSerializableString())
            for c in cols]


def count_output(out_dir, changelog):
    """(lines in the sink's committed files, lines that retract a row). Skips in-progress
    (.part-*) and marker (_SUCCESS) files."""
    needle = b'"op":"d"'  # debezium-json: "c" for INSERT / UPDATE_AFTER, "d" for the others
    rows = retractions = 0
    for root, _, files in os.walk(out_dir):
        for f in files:
            if f.startswith((".", "_")):
                continue
            with open(os.path.join(root, f), "rb") as fh:
                tail = b""  # so that a needle cut by a block boundary still counts
                for block in iter(lambda: fh.read(1 << 24), b""):
                    rows += block.count(b"\n")
                    if changelog:
                        chunk = tail + block
                        retractions += chunk.count(needle)
                        # the last len-1 bytes cannot hold a whole needle: carried, not counted
                        tail = chunk[-(len(needle) - 1):]
    return rows, retractions


def run_one(args):
    name = args.child
    tables, updating, select = QUERIES[name]
    counts = json.loads(args.events)
    events = sum(counts[t] for t in tables)
    work = os.path.abspath(args.work)
    out_dir, ckpt, log_dir = (os.path.join(work, d) for d in ("out", "checkpoints", "log"))
    for d in (out_dir, ckpt, log_dir):
        fresh_dir(d)

    jars = [lookup_jar()] if name == "q13" else []
    t_env, jvm_s = build_flink(args.parallelism, args.heap, log_dir, jars,
                               checkpoint_interval_s=args.checkpoint_interval,
                               checkpoint_dir=ckpt, state_backend=args.state_backend)
    conf = t_env.get_config()
    # As the suite's conf/config.yaml.
    conf.set("table.exec.mini-batch.enabled", "true")
    conf.set("table.exec.mini-batch.allow-latency", "2 s")
    conf.set("table.exec.mini-batch.size", "50000")
    conf.set("table.optimizer.distinct-agg.split.enabled", "true")
    from pyflink.version import __version__ as flink_version
    log("flink", flink_version, "started in %.1fs" % jvm_s)

    for table, view in KINDS.items():
        path = os.path.join(os.path.abspath(args.input), table + ".ndjson")
        t_env.execute_sql(f"""
            CREATE TABLE {table} (
              {SCHEMAS[table]},
              WATERMARK FOR date_time AS date_time - INTERVAL '0' SECOND
            ) WITH (
              'connector' = 'filesystem', 'path' = 'file://{path}',
              'format' = 'json', 'json.timestamp-format.standard' = 'ISO-8601'
            )""")
        t_env.execute_sql(f"CREATE VIEW {view} AS SELECT * FROM {table}")
    for statement in SETUP.get(name, []):
        t_env.execute_sql(statement)
    if name == "q13":
        t_env.execute_sql(f"""
            CREATE TABLE side_input (key BIGINT, `value` STRING)
            WITH ('connector' = 'sluice-csv-lookup', 'path' = '{args.side_input}')""")

    cols = result_columns(t_env, select)
    col_ddl = ", ".join("`%s` %s" % c for c in cols)
    changelog = False
    if args.sink == "blackhole":
        sink_fmt = "blackhole"
        t_env.execute_sql(f"CREATE TABLE sink ({col_ddl}) WITH ('connector' = 'blackhole')")
    elif name == "q10":
        sink_fmt = "csv"
        t_env.execute_sql(f"""
            CREATE TABLE sink ({col_ddl}) PARTITIONED BY (dt, hm) WITH (
              'connector' = 'filesystem', 'path' = 'file://{out_dir}', {Q10_SINK_OPTIONS}
              'format' = 'csv')""")
    else:
        changelog = updating
        sink_fmt = "debezium-json" if updating else "csv"
        t_env.execute_sql(f"""
            CREATE TABLE sink ({col_ddl}) WITH (
              'connector' = 'filesystem', 'path' = 'file://{out_dir}', 'format' = '{sink_fmt}')""")
    insert = "INSERT INTO sink " + select
    if args.explain:
        from pyflink.table.explain_detail import ExplainDetail
        log("plan of %s:\n%s" % (name, t_env.explain_sql(insert, ExplainDetail.CHANGELOG_MODE)))

    jvm = flink_jvm_pid()
    meter = CpuMeter([jvm]).start()
    timing = run_flink_job(lambda: t_env.execute_sql(insert), log_dir)
    cpu = meter.stop()
    rss = peak_rss_mb(jvm)

    rows = retractions = None
    if args.sink != "blackhole":
        rows, retractions = count_output(out_dir, changelog)
    wall = timing["wall_s"]
    rec = {
        "engine": "flink", "query": name, "events": events, "wall_s": wall,
        "events_per_s": round(events / wall, 1) if wall else None,
        "cores": cpu["cores_used"], "peak_rss_mb": rss, "rows": rows,
    }
    if changelog:
        rec["final_rows"] = rows - 2 * retractions  # lines are inserts + retractions
        rec["retractions"] = retractions
    rec.update({
        "inputs": tables, "sink": sink_fmt, "parallelism": args.parallelism,
        "jvm_start_s": round(jvm_s, 3), "submit_s": timing["submit_s"],
        "plan_s": timing.get("plan_s"), "mini_cluster_s": timing.get("mini_cluster_s"),
        "client_s": timing["client_s"], "cpu_own_s": cpu["cpu_own_s"],
        "other_cpu_share": cpu["other_cpu_share"],
        "checkpoint_interval_s": args.checkpoint_interval, "state_backend": args.state_backend,
        "heap": args.heap, "loadavg_1m_start": round(LOAD_START, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2), "flink_version": flink_version,
        "label": args.label,
    })
    emit(rec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True,
                    help="directory of persons.ndjson, auctions.ndjson, bids.ndjson")
    ap.add_argument("--work", required=True, help="scratch dir: <query>/out, log, checkpoints")
    ap.add_argument("--query", action="append", default=[],
                    help="q0..q22 (not q6, q12), repeatable or comma-separated; 'all'")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--sink", choices=["file", "blackhole"], default="file",
                    help="file: CSV (updating results: debezium-json); blackhole: as the suite")
    ap.add_argument("--state-backend", choices=["hashmap", "rocksdb"], default="hashmap")
    ap.add_argument("--checkpoint-interval", type=int, default=0, metavar="SECONDS",
                    help="0 = no checkpoints (default)")
    ap.add_argument("--heap", default="4g", help="-Xmx of the JVM")
    ap.add_argument("--timeout", type=int, default=0, metavar="SECONDS",
                    help="kill a query's process after this long (0 = never)")
    ap.add_argument("--explain", action="store_true",
                    help="log each query's plan with changelog modes (stderr)")
    ap.add_argument("--label", default="", help="free text copied into the result lines")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--side-input", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_one(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
