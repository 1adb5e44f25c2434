# Sourced by the bench/*.sh scripts. One release build of the binary and the load generator
# (together: one feature set, so that neither rebuilds the other's dependencies), a work folder
# that goes away at exit (with the server, if one runs), and what the scripts share.
# To try a script out (its figures then mean nothing): SLUICE_BENCH_PROFILE=debug builds and runs
# the debug binaries instead; SLUICE=PATH and SLUICE_BENCH=PATH run those binaries, and when both
# are given nothing is built.
set -euo pipefail
[ -z "${SLUICE:-}" ] || SLUICE=$(realpath "$SLUICE")
[ -z "${SLUICE_BENCH:-}" ] || SLUICE_BENCH=$(realpath "$SLUICE_BENCH")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
case ${SLUICE_BENCH_PROFILE:-release} in
  release) PROFILE_FLAG=--release PROFILE_DIR=release ;;
  debug) PROFILE_FLAG= PROFILE_DIR=debug ;;
  *) echo "SLUICE_BENCH_PROFILE is release or debug, not ${SLUICE_BENCH_PROFILE}" >&2; exit 2 ;;
esac
if [ -z "${SLUICE:-}" ] || [ -z "${SLUICE_BENCH:-}" ]; then
  cargo build $PROFILE_FLAG -q -p sluice -p sluice-bench
fi
SLUICE=${SLUICE:-$CARGO_TARGET_DIR/$PROFILE_DIR/sluice}
BENCH=${SLUICE_BENCH:-$CARGO_TARGET_DIR/$PROFILE_DIR/sluice-bench}
PORT=7977
URL=http://127.0.0.1:$PORT
WORK=$(mktemp -d)
RESULTS=$WORK/results.jsonl
SERVER=
trap 'if [ -n "$SERVER" ]; then kill $SERVER 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

# start_server serve|demo [ARGS…]: the release binary on a fresh data folder, HTTP on $PORT
# (SERVER holds its pid), with ARGS; returns once it listens.
start_server() {
  rm -rf "$WORK/data"
  resume_server "$@"
}

# resume_server serve|demo [ARGS…]: start_server on the data folder as it was left.
resume_server() {
  : >"$WORK/server.out"  # emptied before the wait below reads it
  "$SLUICE" "$1" --data-dir "$WORK/data" --http 127.0.0.1:$PORT --pg 127.0.0.1:0 "${@:2}" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER=$!
  for _ in $(seq 100); do grep -q 'http listening' "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
}

# peak_rss: the server's peak RSS in MiB.
peak_rss() {
  awk '/VmHWM/ {print int($2 / 1024)}' /proc/$SERVER/status
}

# stop_server: stops the server and waits for it.
stop_server() {
  kill $SERVER; wait $SERVER 2>/dev/null || true
  SERVER=
}

# sql STATEMENT: runs it on the server, failing the script if it fails.
sql() {
  curl -sf "$URL/v1/sql" -d "$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$1")" >/dev/null
}

# cpu_s: the server's CPU seconds so far.
cpu_s() { awk '{printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"'}' /proc/$SERVER/stat; }

# feed_log: the events and flush events a script wrote ($WORK/events.ndjson, flush.ndjson) into
# stream `ticks` of the server, through its HTTP door (`sluice produce`, keyed by ticker).
feed_log() {
  cat "$WORK/events.ndjson" "$WORK/flush.ndjson" |
    "$SLUICE" produce ticks --server $URL --key ticker --quiet --concurrency 1
}

# time_stream CREATE [FEED]: on a fresh server, creates stream `ticks` by CREATE and runs the
# command FEED (which sends it its records), if given; times until the raw-table pipeline has
# written $RECORDS records (from FEED, else from CREATE), then creates ticks_1m ($TICKS_1M) and
# times until it holds $WINDOWS windows. Sets RAW_S, RAW_CPU, RAW_RSS, VIEW_S, VIEW_CPU, VIEW_RSS
# (seconds, the server's CPU seconds, its peak RSS in MiB). Needs PY, bench/sources_helper.py.
time_stream() {
  local cpu0 t0
  start_server serve
  [ -z "${2:-}" ] || sql "$1"
  cpu0=$(cpu_s); t0=$(date +%s.%N)
  if [ -z "${2:-}" ]; then sql "$1"; else "$2"; fi
  $PY wait_raw $URL ticks "$RECORDS" "$TIMEOUT" >/dev/null
  RAW_S=$(python3 -c "print(round($(date +%s.%N) - $t0, 3))")
  RAW_CPU=$(python3 -c "print($(cpu_s) - $cpu0)")
  RAW_RSS=$(peak_rss)
  cpu0=$(cpu_s)
  VIEW_S=$($PY timed_view $URL "$TICKS_1M" ticks_1m "$WINDOWS" "$TIMEOUT")
  VIEW_CPU=$(python3 -c "print($(cpu_s) - $cpu0)")
  VIEW_RSS=$(peak_rss)
  stop_server
}

# print_medians [RATIO_PY]: the median of every figure of the runs in $RESULTS (a JSON object a
# line), a line each; then RATIO_PY, a Python expression of `median` (the figures by name), is
# printed if given.
print_medians() {
  python3 - "$RESULTS" "${1:-}" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
for k, v in median.items():
    print(f"{k:26} {v:>12,.2f}" if isinstance(v, float) and v < 100 else f"{k:26} {v:>12,.0f}")
if sys.argv[2]:
    print(eval("(" + sys.argv[2] + ")"))
PY
}

# bench_venv: VENV, a Python environment holding bench/requirements.txt (DuckDB, Selenium, …).
bench_venv() {
  VENV=${SLUICE_BENCH_VENV:-$HOME/.cache/sluice-bench-venv}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r bench/requirements.txt
}
