#!/usr/bin/env bash
# Materialized views: W1 through ticks_1m and W2 through the clickstream ETL view, in-process
# (10 M events loaded into a fresh log, then timed into the view's table, decoding included,
# then a restart after a simulated crash), and W4's windows: a producer at 20,000 events/s
# against a release server, closed 1-second windows until visible in their view.
# Runs RUNS times and prints the medians, with peak RSS. Usage: bench/views.sh [RUNS=3]
RUNS=${1:-3}
source "$(dirname "$0")/common.sh"

for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  for workload in ticks clicks; do
    "$BENCH" view --workload $workload --dir "$WORK" >>"$RESULTS"
  done

  start_server serve
  sql "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE NOT NULL, volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL) WITH (shards = 4, event_time = 'ts', watermark = '0 seconds')"
  sql "CREATE MATERIALIZED VIEW ticks_1s AS SELECT ticker, window_start, window_end, count(*) AS trades FROM TUMBLE(ticks, ts, INTERVAL '1 second') GROUP BY ticker, window_start, window_end"
  line=$("$BENCH" --server $URL window-freshness --rate 20000 --seconds 60 --batch 200)
  rss=$(peak_rss)
  stop_server
  echo "${line%\}}, \"peak_rss_mib\": $rss}" >>"$RESULTS"
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r.get("view") or r["bench"], []).append(r)
print(f"medians of {len(by['window-freshness'])} runs (2 cores)")
for name, rs in by.items():
    keys = [k for k in ("events_per_s", "cores_busy", "restart_seconds", "p50_ms", "p99_ms", "max_ms", "peak_rss_mib") if k in rs[0]]
    figures = ", ".join(f"{k} {statistics.median(r[k] for r in rs):,.2f}" for k in keys)
    print(f"  {name:16} {figures}")
    if "summary" in rs[0]:
        print(f"  {'':16} {rs[0]['summary']}")
PY
