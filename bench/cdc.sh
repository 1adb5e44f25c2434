#!/usr/bin/env bash
# Change data into a mirror, through the real server: DynamoDB Streams records (as EventBridge
# Pipes forwards them: inserts, updates, deletes of KEYS items) sent over HTTP into a change
# stream, and the time until its history holds every change and its mirror the table they leave.
#
#   sources_helper.py dynamodb_changes > file (not timed)
#   fresh server: CREATE STREAM orders (…) WITH (format = 'dynamodb', primary_key = 'order_id')
#     ─► sluice produce (round-robin over 4 shards) ─► until orders_changes holds every change
#                                                    ─► until orders holds the items alive
#
# Each of RUNS runs starts a fresh server and data folder. Prints the medians: changes/s to the
# history and to the mirror (from the first byte sent), cores busy, peak RSS.
#
# Usage: bench/cdc.sh [RUNS=3]
# Environment: CDC_CHANGES (1000000), CDC_KEYS (100000), TIMEOUT (3600 s a step may take);
# common.sh's SLUICE_BENCH_PROFILE=debug to try the script out.
RUNS=${1:-3}
CHANGES=${CDC_CHANGES:-1000000}
KEYS=${CDC_KEYS:-100000}
TIMEOUT=${TIMEOUT:-3600}
source "$(dirname "$0")/common.sh"
bench_venv
PY="$VENV/bin/python bench/sources_helper.py"

read -r ALIVE QTY < <($PY dynamodb_changes "$WORK/changes.ndjson" "$CHANGES" "$KEYS" |
  python3 -c 'import json,sys; e = json.load(sys.stdin); print(e["alive"], e["qty"])')
echo "$CHANGES changes of $KEYS items; $ALIVE alive at the end" >&2
for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  start_server serve
  sql "CREATE STREAM orders (order_id TEXT NOT NULL, status TEXT, qty BIGINT, price DECIMAL(10, 2))
       WITH (format = 'dynamodb', primary_key = 'order_id')"
  cpu0=$(cpu_s); t0=$(date +%s.%N)
  "$SLUICE" produce orders --server $URL --quiet --concurrency 1 <"$WORK/changes.ndjson"
  $PY wait_count $URL orders_changes "$CHANGES" "$TIMEOUT" >/dev/null
  HISTORY_S=$(python3 -c "print(round($(date +%s.%N) - $t0, 3))")
  $PY wait_mirror $URL orders "$ALIVE" "$QTY" "$TIMEOUT" >/dev/null
  MIRROR_S=$(python3 -c "print(round($(date +%s.%N) - $t0, 3))")
  CPU=$(python3 -c "print($(cpu_s) - $cpu0)")
  python3 -c "import json; print(json.dumps({
    'history_changes_per_s': $CHANGES / $HISTORY_S, 'mirror_changes_per_s': $CHANGES / $MIRROR_S,
    'mirror_s': $MIRROR_S, 'cores': $CPU / $MIRROR_S, 'peak_rss_mib': $(peak_rss)}))" >>"$RESULTS"
  stop_server
done
print_medians
