#!/usr/bin/env bash
# The path a user takes, through the real server: events sent to `sluice serve` over HTTP, a
# materialized view created, and the time until the view's table holds the whole answer. The
# in-process figure (bench/views.sh) leaves out HTTP, the server and its raw-table pipeline;
# this one has them all, on the same workloads, views and event counts.
#
#   sluice gen W > file (not timed) ─► sluice produce STREAM --key K < file ─► sluice serve
#       (the stream's raw-table pipeline runs meanwhile, as always)   timed: ingest events/s
#   [W1: one flush event per shard, an hour past the data, so that every window can close]
#   POST /v1/sql CREATE MATERIALIZED VIEW ─► poll SELECT count(*) FROM view every 50 ms until
#       the view's table holds every result                           timed: view events/s
#
# Each workload's events are generated once (seed 42) and what its view must hold is counted
# from that file, in Python, before anything is timed. Then each of RUNS runs, per workload, on
# a fresh server and data folder:
# - W1: stream `ticks` and view `ticks_1m`, read from bench/src/views.rs (TICKS, TICKS_1M: 4
#   shards, event time ts, watermark 5 s, 1-minute tumbling windows per ticker). The producer
#   keys by ticker, with `--concurrency 1`: the README's advice when order across requests
#   matters, and with a 5-second watermark it does: at its default of 4 requests in flight
#   (about 1.3 s of event time each) a later request can land first, and in a debug-build try of
#   10 M events 31 of them arrived more than 5 s behind their shard and went to ticks_1m_errors
#   as late. Done when count(*) of ticks_1m equals the distinct (ticker, minute) pairs of the
#   input (8,500 at 10 M); then sum(trades) must equal N and no event be late. Every window
#   closes because after the N events come 4 flush events (ticker __FLUSH__<i>, chosen so that
#   the MD5 of the key puts one on each shard; event time an hour past the last event, so each
#   shard's watermark passes every real window; their own windows stay open and are not counted).
# - W2: stream `clicks` and the ETL view `clicks_clean` (null users dropped, date and hour
#   derived), from bench/src/views.rs (CLICKS, CLICKS_CLEAN). The producer keys by user_id, with
#   its defaults (4 requests in flight: order does not matter to a stateless view): the shard
#   layout of the in-process figure (bench/src/preload.rs) and of bench/queries.sh, and what a
#   clickstream producer does to keep each user's events in order. Its cost is in the figure:
#   the server reads every record's key, and the Zipf-skewed users (with the null and unparsable
#   records, which all take the empty key) load the shards unevenly. No flush: nothing waits for
#   a watermark. Done when count(*) of clicks_clean equals the lines that are valid JSON with an
#   RFC 3339 `ts` and a non-null user_id.
# Figures of each run (one JSON line in $RESULTS):
# - ingest: events/s = N / the producer's wall time (start to exit, which follows the last
#   acknowledgement); the server's and the producer's cores busy over it.
# - server_cpu_s_at_create: the server's CPU seconds so far. The raw-table pipeline is not waited
#   for: it may still be committing when the view starts, as it would be for a user, and its
#   work then shares the cores with the view's.
# - view: events/s = N / seconds from sending CREATE to the end of the poll that first sees the
#   complete answer; cores busy = the server's utime + stime (/proc/PID/stat) over that interval
#   / its seconds; peak RSS = the server's VmHWM at the end (ingest included). The answer is
#   checked again 1.5 s later (still the same), outside the clock.
# - other_cpu_share: what other processes took of the machine over each interval (/proc/stat,
#   rough): a flag for a busy box (the machine is shared), not a figure.
# Beside each, A B A B in the same session: the in-process figure (`sluice-bench view`, same
# workload and N; its log is loaded before the clock starts and it has no flush, so its W1 table
# lacks each ticker's last window, which stays in state) and DuckDB's batch figure on the same
# file (shared/bench/peers/duck_w1.py, duck_w2.py; a ceiling, not a streaming peer) when a
# Python with duckdb exists: the peers' venv, else the bench venv. Nothing is installed here: it
# is skipped with a note otherwise. Prints the medians; the producer, the poller and the server
# share the machine's 2 cores.
#
# Usage: bench/serve.sh [RUNS=3]
# Environment: W1_EVENTS (10000000), W2_EVENTS (2000000); W1_PRODUCE_ARGS ("--concurrency 1"),
# W2_PRODUCE_ARGS (""): flags for sluice produce; VIEW_TIMEOUT (3600: seconds a view may take
# before the run fails); DUCK_PY (a Python with duckdb; default ~/.cache/sluice-peers/venv, else
# ~/.cache/sluice-bench-venv); PEERS (../shared/bench/peers); SERVE_RESULTS (a file the JSON
# lines are appended to, kept after the run); and common.sh's SLUICE_BENCH_PROFILE=debug, or
# SLUICE=PATH and SLUICE_BENCH=PATH, to try the script out on a debug build, e.g.
#   SLUICE_BENCH_PROFILE=debug W1_EVENTS=200000 W2_EVENTS=100000 bench/serve.sh 1
RUNS=${1:-3}
W1_EVENTS=${W1_EVENTS:-10000000}
W2_EVENTS=${W2_EVENTS:-2000000}
VIEW_TIMEOUT=${VIEW_TIMEOUT:-3600}
W1_PRODUCE_ARGS=${W1_PRODUCE_ARGS-"--concurrency 1"}
W2_PRODUCE_ARGS=${W2_PRODUCE_ARGS-}
source "$(dirname "$0")/common.sh"
PEERS=$(realpath -m "${PEERS:-../shared/bench/peers}")

HELPER=$WORK/serve_helper.py
cat >"$HELPER" <<'PY'
"""bench/serve.sh's helper: what a workload's view must hold, the flush events, the timed view."""
import datetime, hashlib, http.client, json, os, re, sys, time, urllib.parse

HZ = os.sysconf("SC_CLK_TCK")


def views_rs(name, path="bench/src/views.rs"):
    """A SQL constant of bench/src/views.rs, its Rust line continuations undone."""
    m = re.search(r'\bconst ' + name + r': &str = "((?:[^"\\]|\\.)*)";', open(path).read(), re.S)
    text = re.sub(r"\\\n\s*", "", m.group(1)) if m else "\\"
    if "\\" in text:
        sys.exit(f"cannot read the constant {name} of {path}")
    return text


def parse_ts(text):
    """An RFC 3339 timestamp, or None."""
    if not isinstance(text, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def shard_of(key, shards):
    """Kinesis' mapping: MD5 of the key, a 128-bit big-endian number, in even ranges."""
    h = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
    return min(h // (2**128 // shards), shards - 1)


def expect_ticks(path, flush_path, shards=4):
    """Distinct (ticker, minute) pairs of the events, and one flush event per shard an hour past
    the last event."""
    pairs, events, last = set(), 0, None
    with open(path, "rb") as f:
        for line in f:
            events += 1
            # Fast path for the generator's own layout; anything else is parsed.
            i = line.find(b'"ts":"')
            ts = line[i + 6:i + 30] if i >= 0 else b""
            if line.startswith(b'{"ticker":"') and line[16:17] == b'"' and ts[-1:] == b"Z" and ts[16:17] == b":":
                pairs.add(line[11:16] + ts[:16])
                if last is None or ts > last:
                    last = ts
            else:
                record = json.loads(line)
                t = parse_ts(record["ts"]).astimezone(datetime.timezone.utc)
                pairs.add((record["ticker"], t.replace(second=0, microsecond=0)))
                stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23].encode() + b"Z"
                if last is None or stamp > last:
                    last = stamp
    flush_at = parse_ts(last.decode()) + datetime.timedelta(hours=1)
    stamp = flush_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
    keys = {}
    for i in range(100000):
        key = f"__FLUSH__{i}"
        keys.setdefault(shard_of(key, shards), key)
        if len(keys) == shards:
            break
    with open(flush_path, "w") as f:
        for shard in sorted(keys):
            f.write(json.dumps({"ticker": keys[shard], "price": 0.0, "volume": 0, "ts": stamp},
                               separators=(",", ":")) + "\n")
    return {"events": events, "rows": len(pairs), "last_ts": last.decode(), "flush_ts": stamp,
            "flush_keys": [keys[s] for s in sorted(keys)]}


def expect_clicks(path):
    """Events that are valid JSON, with a timestamp ts and a non-null user_id."""
    events = rows = 0
    with open(path, "rb") as f:
        for line in f:
            events += 1
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("user_id") is not None \
                    and parse_ts(record.get("ts")) is not None:
                rows += 1
    return {"events": events, "rows": rows}


class Server:
    """POSTs to the server on one kept-alive connection."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.conn = u.hostname, u.port, None

    def post(self, path, body, content_type="application/json"):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
                self.conn.request("POST", path, body, {"content-type": content_type})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, json.loads(data) if data else None
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def get(self, path):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")

    def sql(self, sql):
        return self.post("/v1/sql", json.dumps({"sql": sql}))

    def scalar(self, sql):
        """The first column of the first row, or None if the query failed (no table yet)."""
        status, answer = self.sql(sql)
        if status != 200 or not answer.get("rows"):
            return None
        return answer["rows"][0][0]


def machine_busy_seconds():
    """CPU seconds the whole machine was busy (every core), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / HZ  # minus idle and iowait


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime, every thread


def own_cpu():
    t = os.times()
    return t.user + t.system


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def send_flush(url, path, shards=4):
    """Posts the flush events keyed by ticker; checks that each shard got one."""
    with open(path, "rb") as f:
        body = f.read()
    status, answer = Server(url).post("/v1/streams/ticks/records?key=ticker", body,
                                      "application/x-ndjson")
    got = sorted(int(s) for s in (answer or {}).get("shard_sequences", {}))
    if status != 200 or got != list(range(shards)):
        sys.exit(f"the flush events did not land one on each shard: {status} {answer}")


def watch(a):
    """Creates the view and polls its table until it holds every result: one JSON line."""
    server, pid = Server(a["url"]), int(a["pid"])
    # Ingest: the producer's wall and CPU seconds (bash's `time`), the server's and the
    # machine's CPU seconds before and after it.
    ingest_seconds, producer_user, producer_sys = map(float, a["producer_time"].split())
    (server0, machine0), (server1, machine1) = (map(float, a[k].split(":"))
                                                for k in ("ingest_before", "ingest_after"))
    ingest_cpu = server1 - server0
    ingest_other = (machine1 - machine0) - ingest_cpu - producer_user - producer_sys
    # What other processes took of the machine's cores: rough (tick accounting), a flag for a
    # busy box rather than a figure.
    share = lambda cpu, wall: round(min(1.0, max(0.0, cpu / (wall * os.cpu_count()))), 2)
    expected, events = int(a["expected"]), int(a["events"])
    count = f"SELECT count(*) FROM {a['view']}"
    cpu_before, machine_before, own_before = cpu_seconds(pid), machine_busy_seconds(), own_cpu()
    started = time.monotonic()
    status, answer = server.sql(a["create"])
    if status != 200:
        sys.exit(f"CREATE failed: {status} {answer}")
    polls, rows, deadline = 0, None, started + float(a["timeout"])
    while True:
        rows = server.scalar(count)
        polls += 1
        if rows is not None and rows >= expected:
            break
        if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
            views = server.get("/v1/views")[1] if os.path.exists(f"/proc/{pid}") else "(server gone)"
            sys.exit(f"{a['view']} holds {rows} rows of {expected} after {a['timeout']} s; "
                     f"/v1/views: {views}")
        time.sleep(0.05)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    other = machine_busy_seconds() - machine_before - cpu - (own_cpu() - own_before)
    rss = peak_rss_mib(pid)
    # Not timed: the answer checked, and still the same a few view rounds later.
    time.sleep(1.5)
    out = {
        "bench": "serve", "workload": a["workload"], "view": a["view"], "events": events,
        "producer_args": a["producer_args"],
        "ingest_seconds": ingest_seconds, "ingest_events_per_s": events / ingest_seconds,
        "ingest_cores_busy": ingest_cpu / ingest_seconds,
        "producer_cores_busy": (producer_user + producer_sys) / ingest_seconds,
        "ingest_other_cpu_share": share(ingest_other, ingest_seconds),
        "server_cpu_s_at_create": cpu_before,
        "seconds": seconds, "events_per_s": events / seconds, "cores_busy": cpu / seconds,
        "other_cpu_share": share(other, seconds),
        "peak_rss_mib": rss, "polls": polls, "expected_rows": expected, "rows": rows,
    }
    final = server.scalar(count)
    out["rows_after"] = final
    ok = rows == expected and final == expected
    if a["workload"] == "W1":
        trades = server.scalar(f"SELECT sum(trades) FROM {a['view']}")
        out["sum_trades"] = trades
        out["late"] = server.scalar(f"SELECT count(*) FROM {a['view']}_errors") or 0
        ok = ok and trades == events and out["late"] == 0
    out["checks_ok"] = ok
    if not ok:
        print(f"warning: {a['view']}: the answer is not as expected: {json.dumps(out)}",
              file=sys.stderr)
    print(json.dumps(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "expect-ticks":
        print(json.dumps(expect_ticks(args[0], args[1])))
    elif cmd == "expect-clicks":
        print(json.dumps(expect_clicks(args[0])))
    elif cmd == "views-rs":
        print(views_rs(args[0]))
    elif cmd == "field":
        print(json.load(open(args[0]))[args[1]])
    elif cmd == "cpu":
        print(f"{cpu_seconds(int(args[0]))}:{machine_busy_seconds()}")
    elif cmd == "flush":
        send_flush(args[0], args[1])
    elif cmd == "watch":
        watch(dict(a.split("=", 1) for a in args))
    else:
        sys.exit(f"unknown command {cmd}")


main()
PY

# The stream and view definitions, exactly as bench/src/views.rs has them.
TICKS=$(python3 "$HELPER" views-rs TICKS)
TICKS_1M=$(python3 "$HELPER" views-rs TICKS_1M)
CLICKS=$(python3 "$HELPER" views-rs CLICKS)
CLICKS_CLEAN=$(python3 "$HELPER" views-rs CLICKS_CLEAN)

# A Python with DuckDB for the batch reference, if one exists (nothing is installed here).
if [ -z "${DUCK_PY:-}" ]; then
  for venv in "$HOME/.cache/sluice-peers/venv" "$HOME/.cache/sluice-bench-venv"; do
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
      DUCK_PY=$venv/bin/python
      break
    fi
  done
fi
if [ -n "${DUCK_PY:-}" ] && [ ! -f "$PEERS/duck_w1.py" ]; then
  echo "note: no $PEERS/duck_w1.py: DuckDB's batch figures are skipped" >&2
  DUCK_PY=
elif [ -z "${DUCK_PY:-}" ]; then
  echo "note: no Python with duckdb (~/.cache/sluice-peers/venv: shared/bench/peers/setup.sh):" \
    "DuckDB's batch figures are skipped" >&2
fi

# The inputs, generated once (not timed), and what each view must hold.
for w in ticks clicks; do
  n=$W1_EVENTS; [ $w = clicks ] && n=$W2_EVENTS
  mkdir -p "$WORK/input-$w"
  echo "generating $n $w events" >&2
  "$SLUICE" gen $w --events "$n" >"$WORK/input-$w/events.ndjson"
  if [ $w = ticks ]; then
    python3 "$HELPER" expect-ticks "$WORK/input-$w/events.ndjson" "$WORK/flush-ticks.ndjson" \
      >"$WORK/expect-$w.json"
  else
    python3 "$HELPER" expect-clicks "$WORK/input-$w/events.ndjson" >"$WORK/expect-$w.json"
  fi
  echo "  expected: $(cat "$WORK/expect-$w.json")" >&2
done

# serve_run W1|W2: one run through a fresh server; appends its JSON line to $RESULTS.
serve_run() {
  local workload=$1 w stream key create_stream view create_view n produce_args
  case $workload in
    W1) w=ticks stream=ticks key=ticker create_stream=$TICKS view=ticks_1m create_view=$TICKS_1M
        produce_args=$W1_PRODUCE_ARGS ;;
    W2) w=clicks stream=clicks key=user_id create_stream=$CLICKS view=clicks_clean
        create_view=$CLICKS_CLEAN produce_args=$W2_PRODUCE_ARGS ;;
  esac
  n=$(python3 "$HELPER" field "$WORK/expect-$w.json" events)
  start_server serve
  sql "$create_stream"
  local before after TIMEFORMAT='%R %U %S'  # the producer's wall, user and system seconds
  before=$(python3 "$HELPER" cpu "$SERVER")
  # shellcheck disable=SC2086
  if ! { time "$SLUICE" produce $stream --server $URL --key $key --quiet $produce_args \
      <"$WORK/input-$w/events.ndjson"; } 2>"$WORK/produce.err"; then
    cat "$WORK/produce.err" >&2
    exit 1
  fi
  after=$(python3 "$HELPER" cpu "$SERVER")
  if [ $workload = W1 ]; then
    python3 "$HELPER" flush $URL "$WORK/flush-ticks.ndjson"
  fi
  if ! python3 "$HELPER" watch url=$URL pid=$SERVER workload=$workload view=$view \
      create="$create_view" events="$n" expected="$(python3 "$HELPER" field "$WORK/expect-$w.json" rows)" \
      producer_time="$(tail -n 1 "$WORK/produce.err")" producer_args="$produce_args" ingest_before=$before ingest_after=$after \
      timeout="$VIEW_TIMEOUT" >>"$RESULTS"; then
    echo "the server's stderr, last lines:" >&2
    tail -n 20 "$WORK/server.err" >&2
    exit 1
  fi
  stop_server
}

for run in $(seq "$RUNS"); do
  for workload in W1 W2; do
    w=ticks n=$W1_EVENTS; [ $workload = W2 ] && w=clicks n=$W2_EVENTS
    echo "run $run of $RUNS: $workload through sluice serve" >&2
    serve_run $workload
    echo "run $run of $RUNS: $workload in-process" >&2
    line=$("$BENCH" view --workload $w --dir "$WORK" --events "$n" --restart-events 0)
    echo "${line%\}}, \"workload\": \"$workload\"}" >>"$RESULTS"
    if [ -n "${DUCK_PY:-}" ]; then
      echo "run $run of $RUNS: $workload DuckDB batch" >&2
      script=duck_w1.py; [ $workload = W2 ] && script=duck_w2.py
      "$DUCK_PY" "$PEERS/$script" --input "$WORK/input-$w" --work "$WORK/duck" 2>"$WORK/duck.err" \
        | grep '^{' | sed 's/^{/{"bench": "duckdb", /' >>"$RESULTS" \
        || { echo "DuckDB failed:" >&2; tail -n 5 "$WORK/duck.err" >&2; }
    fi
  done
done

[ -z "${SERVE_RESULTS:-}" ] || cat "$RESULTS" >>"$SERVE_RESULTS"

python3 - "$RESULTS" "$RUNS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["workload"], r["bench"]), []).append(r)
med = lambda rs, k: statistics.median(r[k] for r in rs if r.get(k) is not None)
print(f"medians of {sys.argv[2]} runs (2 cores; server, producer and poller on one machine)")
for workload, name in (("W1", "ticks -> ticks_1m"), ("W2", "clicks -> clicks_clean")):
    serve = by.get((workload, "serve"), [])
    if not serve:
        continue
    print(f"  {workload} {name}, {serve[0]['events']:,} events, "
          f"sluice produce {serve[0]['producer_args'] or '(defaults)'}")
    ingest = ", ".join(f"{k} {med(serve, k):,.2f}" for k in (
        "ingest_events_per_s", "ingest_cores_busy", "producer_cores_busy", "ingest_other_cpu_share",
        "server_cpu_s_at_create"))
    print(f"    {'serve ingest':18} {ingest}")
    view = ", ".join(f"{k} {med(serve, k):,.2f}" for k in ("events_per_s", "seconds", "cores_busy", "peak_rss_mib", "other_cpu_share"))
    print(f"    {'serve view':18} {view}")
    inproc = by.get((workload, "view"), [])
    if inproc:
        figures = ", ".join(f"{k} {med(inproc, k):,.2f}" for k in ("events_per_s", "seconds", "cores_busy", "peak_rss_mib"))
        print(f"    {'in-process view':18} {figures}")
        print(f"    {'':18} serve / in-process: {med(serve, 'events_per_s') / med(inproc, 'events_per_s'):.2f}")
    duck = by.get((workload, "duckdb"), [])
    if duck:
        figures = ", ".join(f"{k} {med(duck, k):,.2f}" for k in ("events_per_s", "wall_s", "peak_rss_mb"))
        print(f"    {'DuckDB batch':18} {figures}")
    else:
        print(f"    {'DuckDB batch':18} skipped (no Python with duckdb)")
    checks = [r["checks_ok"] for r in serve]
    detail = f"{serve[-1]['rows']:,} rows of {serve[-1]['expected_rows']:,} expected"
    if workload == "W1":
        detail += f", sum(trades) {serve[-1]['sum_trades']:,}, late {serve[-1]['late']:,}"
    print(f"    {'checks':18} {sum(checks)} of {len(checks)} runs right (last: {detail})")
PY
