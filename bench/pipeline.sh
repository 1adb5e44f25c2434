#!/usr/bin/env bash
# The raw-table pipeline on W2 (clicks), in-process: 10 M events appended to a fresh log (not
# timed), then the time until the pipeline has committed all of them to clicks + clicks_errors.
# Runs RUNS times (each in a fresh temporary folder) and prints the medians, with the process's
# peak RSS. Further arguments go to `sluice-bench pipeline`, e.g. --events 1000000 or
# --partition-by 'date(ts), hour(ts), event_type'.
# Usage: bench/pipeline.sh [RUNS=3] [pipeline options…]
RUNS=${1:-3}
shift || true
source "$(dirname "$0")/common.sh"

for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  "$BENCH" pipeline --dir "$WORK" "$@" >>"$RESULTS"
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = rows[0]
print(f"medians of {len(rows)} runs (2 cores): W2 raw-table pipeline, {first['events']:,} events, "
      f"{first['shards']} shards, partition_by {first['partition_by'] or 'none'}")
for k in ("events_per_s", "seconds", "peak_rss_mib"):
    print(f"  {k:12} {statistics.median(r[k] for r in rows):,.2f}")
print(f"  rows {first['rows']:,} + error rows {first['error_rows']:,}")
PY
