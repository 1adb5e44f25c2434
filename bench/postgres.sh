#!/usr/bin/env bash
# A PostgreSQL source, through the real server: Debian's PostgreSQL 15 (a server of the
# benchmark's own, commits not flushed), pgbench's tables at scale PG_SCALE, and
#
#   snapshot  CREATE SOURCE … TABLES (pgbench_accounts, pgbench_branches) on a fresh server,
#             until the mirror holds every account (count and balances checked)
#   live      `pgbench -N -c 4` at full speed for PG_LIVE_SECONDS while Sluice follows: one probe
#             after another (a branch row updated) timed from its commit until the mirror shows
#             it, and the slot's retained WAL sampled each second; then until the mirror is
#             caught up
#   idle      the retained and the unacknowledged WAL 40 s after the last change (heartbeats
#             and acknowledgements; PostgreSQL moves a slot's restart_lsn on its own schedule)
#   backlog   Sluice stopped, pgbench for PG_BACKLOG_SECONDS, Sluice started again: until the
#             mirror holds the source's rows — the changes a second Sluice takes from a slot
#             when it has the machine to itself
#
# PostgreSQL, pgbench and Sluice share the 2 cores in `live`, as they would on a laptop. Each of
# RUNS runs starts afresh. Prints the medians.
#
# Usage: bench/postgres.sh [RUNS=3]
# Environment: PG_SCALE (10: 1,000,000 accounts), PG_LIVE_SECONDS (60), PG_BACKLOG_SECONDS (30),
# TIMEOUT (600 s a step may take); common.sh's SLUICE_BENCH_PROFILE=debug to try the script out.
RUNS=${1:-3}
SCALE=${PG_SCALE:-10}
LIVE=${PG_LIVE_SECONDS:-60}
BACKLOG=${PG_BACKLOG_SECONDS:-30}
TIMEOUT=${TIMEOUT:-600}
source "$(dirname "$0")/common.sh"
bench_venv
PY="$VENV/bin/python bench/postgres_helper.py"
chmod 711 "$WORK"  # PostgreSQL's folder is in it, and PostgreSQL runs as the postgres user
PG_PORT=7978
PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
trap '$PY stop "$WORK/pg" 2>/dev/null || true; if [ -n "$SERVER" ]; then kill $SERVER 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  rm -rf "$WORK/pg"
  $PY start "$WORK/pg" $PG_PORT
  $PY init $PG_URL "$SCALE"
  start_server serve
  sql "CREATE SOURCE bench FROM POSTGRES '$PG_URL' PUBLICATION 'sluice' TABLES (pgbench_accounts, pgbench_branches)"
  SNAPSHOT_S=$($PY wait_mirror $URL $PG_URL "$TIMEOUT")
  SNAPSHOT_CPU=$(cpu_s); t0=$(date +%s.%N)
  LIVE_JSON=$($PY live $URL $PG_URL "$LIVE" "$TIMEOUT")
  LIVE_CPU=$(python3 -c "print(round(($(cpu_s) - $SNAPSHOT_CPU) / ($(date +%s.%N) - $t0), 2))")
  IDLE_JSON=$($PY idle_retained $PG_URL 40)
  LIVE_RSS=$(peak_rss)
  stop_server
  TRANSACTIONS=$($PY backlog $PG_URL "$BACKLOG")
  t0=$(date +%s.%N)
  resume_server serve
  $PY wait_mirror $URL $PG_URL "$TIMEOUT" >/dev/null
  DRAIN_S=$(python3 -c "print(round($(date +%s.%N) - $t0, 3))")
  python3 -c "import json; live, idle = json.loads('$LIVE_JSON'), json.loads('$IDLE_JSON'); print(json.dumps({
    'snapshot_rows_per_s': $SCALE * 100000 / $SNAPSHOT_S, 'snapshot_cores': $SNAPSHOT_CPU / $SNAPSHOT_S,
    **live, 'live_sluice_cores': $LIVE_CPU, **idle,
    'backlog_changes_per_s': $TRANSACTIONS / $DRAIN_S, 'backlog_cores': $(cpu_s) / $DRAIN_S,
    'peak_rss_mib': max($LIVE_RSS, $(peak_rss))}))" >>"$RESULTS"
  stop_server
  $PY stop "$WORK/pg"
done
print_medians
