#!/usr/bin/env bash
# A PostgreSQL source in a cluster, through the real binary: Debian's PostgreSQL 15 (commits not
# flushed), pgbench's tables at scale PG_SCALE, Tansu (memory storage) and two workers
# (`sluice serve --cluster`, one lake folder), and
#
#   snapshot  CREATE SOURCE … TABLES (pgbench_accounts, pgbench_branches) on w1, until the
#             mirror holds every account (read through w2)
#   failover  `pgbench -N -c 4` for PG_LIVE_SECONDS, commit → visible probes read through the
#             worker standing by; a third of the way in, the worker reading the slot is killed
#             with -9: the seconds until the other reads it, and until the first probe committed
#             after the kill is visible; then until the mirror is caught up
#
# PostgreSQL, pgbench, Tansu and both workers share the 2 cores. Each of RUNS runs starts afresh
# (a cluster of its own). Prints the medians.
#
# Usage: bench/postgres_cluster.sh [RUNS=3]
# Environment: PG_SCALE (1: 100,000 accounts), PG_LIVE_SECONDS (30), TIMEOUT (600 s a step may
# take); common.sh's SLUICE_BENCH_PROFILE=debug to try the script out.
RUNS=${1:-3}
SCALE=${PG_SCALE:-1}
LIVE=${PG_LIVE_SECONDS:-30}
TIMEOUT=${TIMEOUT:-600}
source "$(dirname "$0")/common.sh"
bench_venv
PY="$VENV/bin/python bench/postgres_helper.py"
chmod 711 "$WORK"  # PostgreSQL's folder is in it, and PostgreSQL runs as the postgres user
PG_PORT=7988
PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
TANSU_PORT=19194
BROKERS=127.0.0.1:$TANSU_PORT
TANSU=$("$VENV/bin/python" bench/sources_helper.py tansu $TANSU_PORT "$WORK/tansu.log")
WORKERS=()
stop_workers() {
  for pid in "${WORKERS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${WORKERS[@]}"; do wait "$pid" 2>/dev/null || true; done
  WORKERS=()
}
trap 'stop_workers; kill $TANSU 2>/dev/null || true; $PY stop "$WORK/pg" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# start_worker RUN I: worker wI of cluster benchRUN, HTTP on PORT+I.
start_worker() {
  "$SLUICE" serve --cluster "bench$1" --worker "w$2" --lake "$WORK/lake" --data-dir "$WORK/data-w$2" \
    --kafka $BROKERS --http 127.0.0.1:$((PORT + $2)) --pg 127.0.0.1:0 >"$WORK/w$2.out" 2>"$WORK/w$2.err" &
  WORKERS+=($!)
  for _ in $(seq 300); do grep -q 'http listening' "$WORK/w$2.out" 2>/dev/null && break; sleep 0.1; done
}

W1=http://127.0.0.1:$((PORT + 1))
W2=http://127.0.0.1:$((PORT + 2))
for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  rm -rf "$WORK/pg" "$WORK/lake" "$WORK"/data-w*
  $PY start "$WORK/pg" $PG_PORT
  $PY init $PG_URL "$SCALE"
  start_worker "$run" 1
  start_worker "$run" 2
  URL=$W1 sql "CREATE SOURCE bench FROM POSTGRES '$PG_URL' PUBLICATION 'sluice' TABLES (pgbench_accounts, pgbench_branches)"
  SNAPSHOT_S=$($PY wait_mirror $W2 $PG_URL "$TIMEOUT")
  FAILOVER=$($PY failover "$W1,$W2" "${WORKERS[0]},${WORKERS[1]}" $PG_URL "$LIVE" "$TIMEOUT")
  python3 -c "import json; print(json.dumps({'snapshot_rows_per_s': $SCALE * 100000 / $SNAPSHOT_S,
    **json.loads('$FAILOVER')}))" >>"$RESULTS"
  stop_workers
  $PY stop "$WORK/pg"
done
print_medians
