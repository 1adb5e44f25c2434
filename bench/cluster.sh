#!/usr/bin/env bash
# Cluster mode through the real binary: W1 in a pre-filled Kafka topic, taken into the raw table
# by 1, 2 and 4 workers (`sluice serve --cluster`), each confined to a CPU quota, so that two
# cores can show what more hosts would do:
#
#   sluice gen ticks > file (not timed) ─► Tansu topic `ticks` (8 partitions, keyed by ticker,
#       plus one flush event a partition), filled once, not timed
#   per run and worker count N: N fresh workers, each in a cgroup v1 of its own capped at QUOTA
#       CPU (cpu.cfs_quota_us), one lake folder; CREATE STREAM on the first ─► until the workers'
#       raw-table pipelines have written every record between them     events/s, CPU-s per
#       million events (all workers), the time until the group had given out every partition;
#       then CREATE MATERIALIZED VIEW ticks_1m ─► until its table holds every window (spread:
#       each worker aggregates the partitions it holds into pieces, the holder of partition 0
#       finishes the windows from them)     events/s, CPU-s per million events (all workers)
#
# The broker (Tansu 0.6.0, memory storage), the pollers and the workers share the machine's 2
# cores: the quota keeps the workers' sum under them (4 × 0.3 = 1.2 cores), so that the broker
# is not starved. The broker's own ceiling, one bare librdkafka consumer reading the whole topic,
# is printed beside, and so is moto's (the tests' S3 stand-in: conditional PUTs and GETs a
# second), for an S3 lake. "events/s after the group settled" is the records taken from the moment the
# workers' documents (GET /v1/cluster, written every 2 s) showed every partition held, over the
# time since; the plain events/s counts from CREATE STREAM, the group's joining (a few seconds)
# included. Prints the medians.
#
# Usage: bench/cluster.sh [RUNS=3]
# Environment: CLUSTER_EVENTS (3000000); DOOR_EVENTS (1000000); QUOTA (0.3 CPU a worker); WORKER_COUNTS ("1 2 4");
# TIMEOUT (1800 s a step may take); common.sh's SLUICE_BENCH_PROFILE=debug to try it out, e.g.
#   SLUICE_BENCH_PROFILE=debug CLUSTER_EVENTS=100000 bench/cluster.sh 1
RUNS=${1:-3}
EVENTS=${CLUSTER_EVENTS:-3000000}
DOOR_EVENTS=${DOOR_EVENTS:-1000000}
QUOTA=${QUOTA:-0.3}
WORKER_COUNTS=${WORKER_COUNTS:-1 2 4}
TIMEOUT=${TIMEOUT:-1800}
PARTITIONS=8
source "$(dirname "$0")/common.sh"
bench_venv
PY="$VENV/bin/python bench/sources_helper.py"
TANSU_PORT=19193
BROKERS=127.0.0.1:$TANSU_PORT
CGROUP=/sys/fs/cgroup/cpu
[ -w "$CGROUP" ] || { echo "needs a writable cgroup v1 cpu controller at $CGROUP (root)" >&2; exit 2; }
TANSU=$($PY tansu $TANSU_PORT "$WORK/tansu.log")
WORKERS=()
stop_workers() {
  for pid in "${WORKERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${WORKERS[@]}"; do wait "$pid" 2>/dev/null || true; done
  WORKERS=()
  for i in 1 2 3 4; do rmdir "$CGROUP/sluice-bench-w$i" 2>/dev/null || true; done
}
trap 'stop_workers; kill $TANSU 2>/dev/null || true; rm -rf "$WORK"' EXIT

# start_worker I: worker wI of cluster `bench` in its own capped cgroup, HTTP on PORT+I.
start_worker() {
  local i=$1 group="$CGROUP/sluice-bench-w$1"
  mkdir -p "$group"
  echo 100000 >"$group/cpu.cfs_period_us"
  # (echo: the file refuses Python's buffered write)
  echo "$(python3 -c "print(int($QUOTA * 100000))")" >"$group/cpu.cfs_quota_us"
  : >"$WORK/w$i.out"
  # The shell moves itself into the cgroup, then becomes the worker: every thread is in it.
  sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$group" \
    "$SLUICE" serve --cluster bench --worker "w$i" --lake "$WORK/lake" --data-dir "$WORK/data-w$i" \
    --kafka $BROKERS \
    --http 127.0.0.1:$((PORT + i)) --pg 127.0.0.1:0 >"$WORK/w$i.out" 2>"$WORK/w$i.err" &
  WORKERS+=($!)
  for _ in $(seq 300); do grep -q 'http listening' "$WORK/w$i.out" 2>/dev/null && break; sleep 0.1; done
}

# cpu_of PID: its CPU seconds so far.
cpu_of() { awk '{printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"'}' "/proc/$1/stat"; }

echo "== W1, $EVENTS events: generating, and filling the topic (not timed)"
"$SLUICE" gen ticks --events "$EVENTS" >"$WORK/events.ndjson"
FILLED=$($PY fill $BROKERS ticks "$WORK/events.ndjson" $PARTITIONS)
echo "$FILLED"
RECORDS=$(echo "$FILLED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
WINDOWS=$(echo "$FILLED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["windows"])')
TICKS_1M=$($PY views_rs TICKS_1M)
COLUMNS="ticker TEXT NOT NULL, price DOUBLE NOT NULL, volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL"
CREATE="CREATE STREAM ticks ($COLUMNS) WITH (connector = 'kafka', brokers = '$BROKERS', topic = 'ticks', event_time = 'ts')"

for run in $(seq "$RUNS"); do
  FETCH=$("$BENCH" kafka-fetch --brokers $BROKERS --topic ticks --records "$RECORDS")
  echo "== run $run of $RUNS; the broker's ceiling (one librdkafka consumer): $FETCH"
  # The workers' lake is a local folder; an S3 lake's stand-in (moto) has its own ceiling.
  $PY s3_ceiling >>"$RESULTS"
  echo "the S3 stand-in's ceiling (moto, 2 KiB objects, 4 threads): $(tail -1 "$RESULTS")"
  for n in $WORKER_COUNTS; do
    rm -rf "$WORK"/lake "$WORK"/data-w*
    for i in $(seq "$n"); do start_worker "$i"; done
    t0=$(date +%s.%N)
    URL=http://127.0.0.1:$((PORT + 1)) sql "$CREATE"
    TIMES=$($PY workers_take "$PORT" "$n" ticks "$RECORDS" "$TIMEOUT" "$PARTITIONS")
    cpu=0
    for pid in "${WORKERS[@]}"; do cpu=$(python3 -c "print($cpu + $(cpu_of "$pid"))"); done
    VIEW_S=$($PY timed_view http://127.0.0.1:$((PORT + 1)) "$TICKS_1M" ticks_1m "$WINDOWS" "$TIMEOUT")
    view_cpu=0
    for pid in "${WORKERS[@]}"; do view_cpu=$(python3 -c "print($view_cpu + $(cpu_of "$pid"))"); done
    stop_workers
    python3 - "$n" "$RECORDS" "$TIMES" "$cpu" "$FETCH" "$VIEW_S" "$view_cpu" >>"$RESULTS" <<'PY'
import json, sys
n, records, times, cpu, fetch, view_s, view_cpu = sys.argv[1:]
n, records, times, cpu = int(n), int(records), json.loads(times), float(cpu)
view_s, view_cpu = float(view_s), float(view_cpu) - cpu
assert times["written"] == records, f"{times['written']} rows written for {records} records"
print(json.dumps({
    f"view_w{n}_per_s": round(records / view_s),
    f"view_w{n}_cpu_s_per_m": round(view_cpu / (records / 1e6), 2),
    f"w{n}_per_s": round(records / times["total_s"]),
    # The records taken once every partition was held, over the time since.
    f"w{n}_per_s_settled": round(times["after_settled"] / max(times["total_s"] - times["settled_s"], 1e-3)),
    f"w{n}_settle_s": round(times["settled_s"], 1),
    f"w{n}_cpu_s_per_m": round(cpu / (records / 1e6), 2),
    "ceiling_per_s": round(json.loads(fetch)["records_per_s"]),
}))
PY
    tail -1 "$RESULTS"
  done

  for n in $WORKER_COUNTS; do
    rm -rf "$WORK"/lake "$WORK"/data-w*
    for i in $(seq "$n"); do start_worker "$i"; done
    # A topic of its own a run (bench.door_ticks_<run>_<n>): a dropped one is deleted later.
    stream=door_ticks_${run}_$n
    URL=http://127.0.0.1:$((PORT + 1)) sql "CREATE STREAM $stream ($COLUMNS) WITH (shards = $PARTITIONS, event_time = 'ts')"
    for i in $(seq "$n"); do
      for _ in $(seq 100); do
        curl -sf http://127.0.0.1:$((PORT + i))/v1/streams | grep -q "\"$stream\"" && break
        sleep 0.1
      done
    done
    head -n "$DOOR_EVENTS" "$WORK/events.ndjson" | split -n "r/$n" - "$WORK/part-"
    t0=$(date +%s.%N)
    PRODUCERS=()
    i=0
    for part in "$WORK"/part-*; do
      i=$((i + 1))
      "$SLUICE" produce "$stream" --server http://127.0.0.1:$((PORT + i)) --key ticker --quiet <"$part" &
      PRODUCERS+=($!)
    done
    for pid in "${PRODUCERS[@]}"; do wait "$pid" || { echo "a producer failed" >&2; exit 1; }; done
    t1=$(date +%s.%N)
    rm -f "$WORK"/part-*
    LANDED=$($PY workers_take "$PORT" "$n" "$stream" "$DOOR_EVENTS" "$TIMEOUT" "$PARTITIONS" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["done_at"])')
    cpu=0
    for pid in "${WORKERS[@]}"; do cpu=$(python3 -c "print($cpu + $(cpu_of "$pid"))"); done
    stop_workers
    python3 - "$n" "$DOOR_EVENTS" "$t0" "$t1" "$LANDED" "$cpu" >>"$RESULTS" <<'PY'
import json, sys
n, records = int(sys.argv[1]), int(sys.argv[2])
t0, t1, landed, cpu = map(float, sys.argv[3:])
print(json.dumps({
    f"doors_w{n}_acked_per_s": round(records / (t1 - t0)),
    f"doors_w{n}_landed_per_s": round(records / (landed - t0)),
    f"doors_w{n}_cpu_s_per_m": round(cpu / (records / 1e6), 2),
}))
PY
    tail -1 "$RESULTS"
  done

  rm -rf "$WORK"/lake "$WORK"/data-w*
  for i in 1 2 3; do start_worker "$i"; done
  stream=failover_ticks_$run
  URL=http://127.0.0.1:$((PORT + 1)) sql "CREATE STREAM $stream ($COLUMNS) WITH (shards = $PARTITIONS, event_time = 'ts')"
  sleep 2
  "$SLUICE" produce "$stream" --server http://127.0.0.1:$((PORT + 3)) --key ticker --rate 20000 --loop \
    --quiet <"$WORK/events.ndjson" &
  PRODUCER=$!
  sleep 10
  KILLED=$(curl -sf http://127.0.0.1:$((PORT + 2))/v1/cluster | python3 -c '
import json, sys
workers = json.load(sys.stdin)["workers"]
print(json.dumps(sorted(int(p) for w in workers if w["worker"] == "w1" for s in w["streams"] for p in s["partition_lag"])))')
  kill_ms=$(date +%s%3N)
  kill -9 "${WORKERS[0]}"
  sleep 25
  join_ms=$(date +%s%3N)
  start_worker 4
  sleep 30
  kill "$PRODUCER"; wait "$PRODUCER" 2>/dev/null || true
  stop_workers
  echo "partitions of the killed worker: $KILLED"
  $PY commit_gaps "$WORK/lake/$stream" "$kill_ms" "$join_ms" "$KILLED" >>"$RESULTS"
  tail -1 "$RESULTS"
done

echo "== medians of $RUNS runs, $RECORDS records, workers capped at $QUOTA CPU each"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
keys = sorted({k for r in runs for k in r})
median = {k: statistics.median(r[k] for r in runs if k in r) for k in keys}
for k in keys:
    print(f"{k:22} {median[k]:>12,.2f}")
base = median.get("w1_per_s_settled")
for n in (2, 4):
    if base and f"w{n}_per_s_settled" in median:
        print(f"scaling 1 → {n} workers (settled): {median[f'w{n}_per_s_settled'] / base:.2f}×")
    view = median.get("view_w1_per_s")
    if view and f"view_w{n}_per_s" in median:
        print(f"scaling 1 → {n} workers (ticks_1m, spread): {median[f'view_w{n}_per_s'] / view:.2f}×")
    doors = median.get("doors_w1_acked_per_s")
    if doors and f"doors_w{n}_acked_per_s" in median:
        print(f"scaling 1 → {n} workers (doors, acknowledged): {median[f'doors_w{n}_acked_per_s'] / doors:.2f}×")
PY
