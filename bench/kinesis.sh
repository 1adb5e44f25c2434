#!/usr/bin/env bash
# A Kinesis stream as a stream, through the real servers: Sluice B reads the Kinesis stream that
# Sluice A serves on its Kinesis door, beside B's own log in the same run:
#
#   sluice gen w1 > file (not timed) ─► Sluice A: stream ticks_in (4 shards) ◄─ sluice produce
#       --key ticker, then one flush event a shard an hour past the data (not timed)
#   Kinesis: Sluice B: CREATE STREAM ticks WITH (connector = 'kinesis', endpoint = A, …)
#            ─► until the raw-table pipeline has written every record      events/s, cores, RSS
#            then CREATE MATERIALIZED VIEW ticks_1m ─► until it holds every window    events/s
#   log:     a fresh Sluice B: CREATE STREAM ticks (shards = 4) ─► sluice produce ─► until the
#            raw-table pipeline has written every record, from the first byte sent  events/s
#
# A and B share the machine's 2 cores: A answers GetRecords (10,000 records, base64 in JSON, a
# call) while B decodes and writes, so the Kinesis figure is the pair's; cores and RSS are B's.
# Each of RUNS runs starts a fresh B and data folder (the Kinesis stream is read from its start
# each time). Prints the medians.
#
# Usage: bench/kinesis.sh [RUNS=3]
# Environment: KINESIS_EVENTS (10000000); TIMEOUT (3600 s a step may take); common.sh's
# SLUICE_BENCH_PROFILE=debug to try the script out, e.g.
#   SLUICE_BENCH_PROFILE=debug KINESIS_EVENTS=100000 bench/kinesis.sh 1
RUNS=${1:-3}
EVENTS=${KINESIS_EVENTS:-10000000}
TIMEOUT=${TIMEOUT:-3600}
source "$(dirname "$0")/common.sh"
bench_venv
PY="$VENV/bin/python bench/sources_helper.py"
SOURCE_PORT=7978
SOURCE_URL=http://127.0.0.1:$SOURCE_PORT
SOURCE=
trap 'for pid in $SOURCE $SERVER; do kill $pid 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

echo "== W1, $EVENTS events: generating, and filling Sluice A's stream (not timed)"
"$SLUICE" gen ticks --events "$EVENTS" >"$WORK/events.ndjson"
SUMMARY=$($PY summary "$WORK/events.ndjson" 4)
echo "$SUMMARY"
RECORDS=$(echo "$SUMMARY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
WINDOWS=$(echo "$SUMMARY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["windows"])')
FLUSH_TS=$(echo "$SUMMARY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["flush_ts"])')
$PY flush_lines "$FLUSH_TS" >"$WORK/flush.ndjson"
"$SLUICE" serve --data-dir "$WORK/source" --http 127.0.0.1:$SOURCE_PORT --pg 127.0.0.1:0 \
  >"$WORK/source.out" 2>"$WORK/source.err" &
SOURCE=$!
for _ in $(seq 100); do grep -q 'http listening' "$WORK/source.out" 2>/dev/null && break; sleep 0.1; done
URL=$SOURCE_URL sql "CREATE STREAM ticks_in WITH (shards = 4)"
cat "$WORK/events.ndjson" "$WORK/flush.ndjson" |
  "$SLUICE" produce ticks_in --server $SOURCE_URL --key ticker --quiet --concurrency 1
# A's own raw pipeline is done before B starts: A only answers GetRecords then.
$PY wait_raw $SOURCE_URL ticks_in "$RECORDS" "$TIMEOUT" >/dev/null
TICKS_1M=$($PY views_rs TICKS_1M)
COLUMNS="ticker TEXT NOT NULL, price DOUBLE NOT NULL, volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL"
export SOURCE_KEY_ID=bench SOURCE_SECRET=bench

for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS"
  time_stream "CREATE STREAM ticks ($COLUMNS) WITH (connector = 'kinesis', stream_name = 'ticks_in', region = 'us-east-1', endpoint = '$SOURCE_URL', access_key_id_env = 'SOURCE_KEY_ID', secret_access_key_env = 'SOURCE_SECRET', event_time = 'ts', watermark = '5 seconds')"
  raw_s=$RAW_S raw_cpu=$RAW_CPU raw_rss=$RAW_RSS view_s=$VIEW_S view_cpu=$VIEW_CPU
  time_stream "CREATE STREAM ticks ($COLUMNS) WITH (shards = 4, event_time = 'ts', watermark = '5 seconds')" feed_log
  log_s=$RAW_S log_cpu=$RAW_CPU

  python3 - "$RECORDS" "$raw_s" "$raw_cpu" "$raw_rss" "$view_s" "$view_cpu" "$log_s" "$log_cpu" \
    >>"$RESULTS" <<'PY'
import json, sys
n, *f = sys.argv[1:]
n = int(n)
raw_s, raw_cpu, raw_rss, view_s, view_cpu, log_s, log_cpu = map(float, f)
print(json.dumps({
    "kinesis_raw_per_s": round(n / raw_s), "kinesis_raw_cores": round(raw_cpu / raw_s, 2),
    "kinesis_raw_rss_mib": raw_rss,
    "kinesis_view_per_s": round(n / view_s), "kinesis_view_cores": round(view_cpu / view_s, 2),
    "log_raw_per_s": round(n / log_s), "log_raw_cores": round(log_cpu / log_s, 2),
}))
PY
  tail -1 "$RESULTS"
done

echo "== medians of $RUNS runs, $RECORDS records (W1 and one flush event a shard)"
print_medians "$(cat <<'PY'
f"Kinesis (another Sluice's door) → raw table: {median['kinesis_raw_per_s'] / median['log_raw_per_s']:.2f}× "
f"Sluice's own log (HTTP ingest included)"
PY
)"
