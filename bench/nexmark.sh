#!/usr/bin/env bash
# Nexmark through the real server, beside Flink SQL on the same events in the same run.
#
#   bench/nexmark.sh [RUNS=3]        NEXMARK_EVENTS=1000000  QUERIES="q0 q1 …"  FLINK=1
#
# `sluice gen nexmark` writes NEXMARK_EVENTS events (one file a kind); a release server takes
# them into its streams through `sluice produce` and writes its raw tables (not timed); then each
# query's views are created and timed until they have taken every event (bench/nexmark/bench.py:
# events/s, cores busy, peak RSS), and dropped. With FLINK=1 (the default) Flink SQL runs each
# query on the same files (bench/nexmark/flink_nexmark.py, PyFlink's local mini-cluster, from
# ../shared/bench/peers). Beside them, in-process (`sluice-bench view-files`, no server): the
# query's first view over streams loaded from the same files (not q13: its side input is a lake
# table). Prints the medians of RUNS runs, a query a line, with the ratio to Flink's.
RUNS=${1:-3}
source "$(dirname "$0")/common.sh"
bench_venv
EVENTS=${NEXMARK_EVENTS:-1000000}
QUERIES=${QUERIES:-$(cd bench/nexmark && python3 -c 'import queries; print(" ".join(queries.VIEWS))')}
FLINK=${FLINK:-1}
PEERS=${PEERS_DIR:-$(realpath ../shared/bench/peers)}
FLINK_PY=${FLINK_VENV:-$HOME/.cache/sluice-peers/venv-flink}/bin/python
QUERY_ARGS=$(for q in $QUERIES; do printf -- '--query %s ' "$q"; done)
# Flink SQL has no windows over the time records reached the system (q12's).
FLINK_ARGS=$(for q in $QUERIES; do [ "$q" = q12 ] || printf -- '--query %s ' "$q"; done)
DATA=$WORK/nexmark
mkdir -p "$DATA"
for kind in persons auctions bids; do
  "$SLUICE" gen nexmark --events "$EVENTS" --only $kind >"$DATA/$kind.ndjson"
done
stream_sql() { (cd bench/nexmark && python3 -c "import queries, sys; print(getattr(queries, sys.argv[1])[sys.argv[2]] if len(sys.argv) > 2 else getattr(queries, sys.argv[1]))" "$@"); }
if [ "$FLINK" = 1 ] && [ ! -x "$FLINK_PY" ]; then "$PEERS/setup_flink.sh"; fi
# inprocess_args QUERY: the arguments of `sluice-bench view-files` for QUERY, NUL-separated.
inprocess_args() {
  (cd bench/nexmark && python3 -c '
import queries, sys
query, data = sys.argv[1], sys.argv[2]
args = []
for stream in queries.READS[query]:
    args += ["--stream", queries.STREAMS[stream], f"{data}/{stream}.ndjson"]
name, sql = queries.views(query)[0]
args += ["--view", f"CREATE MATERIALIZED VIEW {name} AS {sql}"]
sys.stdout.write("\0".join(args))' "$1" "$DATA")
}

for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  start_server serve
  for kind in persons auctions bids; do
    sql "$(stream_sql STREAMS $kind)"
    "$SLUICE" produce $kind --server $URL --quiet <"$DATA/$kind.ndjson"
  done
  sql "$(stream_sql SIDE_INPUT)"
  for kind in persons auctions bids; do
    "$VENV/bin/python" bench/sources_helper.py wait_raw $URL $kind "$(wc -l <"$DATA/$kind.ndjson")" 600 >/dev/null
  done
  (cd bench/nexmark && "$VENV/bin/python" bench.py --url $URL --pid $SERVER --data "$DATA" $QUERY_ARGS) >>"$RESULTS"
  stop_server
  for q in $QUERIES; do
    [ "$q" != q13 ] || continue
    mapfile -d '' args < <(inprocess_args $q)
    "$BENCH" view-files "${args[@]}" --dir "$WORK" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print(json.dumps({"engine": "in-process", "query": sys.argv[1], "events": r["events"],
                  "events_per_s": round(r["events_per_s"]), "cores": r["cores_busy"],
                  "peak_rss_mb": r["peak_rss_mib"]}))' $q >>"$RESULTS"
  done
  if [ "$FLINK" = 1 ]; then
    PEERS_DIR=$PEERS "$FLINK_PY" bench/nexmark/flink_nexmark.py --input "$DATA" --work "$WORK/flink" \
      $FLINK_ARGS 2>>"$WORK/flink.log" | grep '^{' >>"$RESULTS"
  fi
done

python3 - "$RESULTS" "$EVENTS" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for r in runs:
    by.setdefault((r["query"], r["engine"]), []).append(r)
med = lambda rs, k: statistics.median(r[k] for r in rs if r.get(k) is not None) if any(r.get(k) is not None for r in rs) else None
print(f"Nexmark, {int(sys.argv[2]):,} events, medians of {max(len(v) for v in by.values())} runs (2 cores)")
print(f"{'query':6} {'server ev/s':>12} {'cores':>6} {'RSS MiB':>8} {'in-proc ev/s':>13} "
      f"{'flink ev/s':>11} {'cores':>6} {'RSS MiB':>8} {'ratio':>6}")
for q in dict.fromkeys(k[0] for k in by):
    s, i, f = (by.get((q, e), []) for e in ("sluice", "in-process", "flink"))
    se, fe = med(s, "events_per_s"), med(f, "events_per_s")
    cell = lambda v, w, fmt: f"{v:{w}{fmt}}" if v is not None else f"{'—':>{w}}"
    print(f"{q:6} {cell(se, 12, ',.0f')} {cell(med(s, 'cores'), 6, '.2f')} {cell(med(s, 'peak_rss_mb'), 8, ',.0f')} "
          f"{cell(med(i, 'events_per_s'), 13, ',.0f')} "
          f"{cell(fe, 11, ',.0f')} {cell(med(f, 'cores'), 6, '.2f')} {cell(med(f, 'peak_rss_mb'), 8, ',.0f')} "
          f"{cell(se / fe if se and fe else None, 6, '.1f')}")
PY
