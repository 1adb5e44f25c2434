#!/usr/bin/env bash
# Ingest benchmarks: HTTP NDJSON (and how fast it reaches the stream's raw table in the lake),
# Kinesis PutRecords and GetRecords, append latency. The server runs its raw-table pipelines as
# it always does, so ingest figures include their cost.
# Each scenario runs RUNS times against a fresh release server; the medians are printed, with the
# server's peak RSS. Usage: bench/ingest.sh [RUNS=3]
RUNS=${1:-3}
source "$(dirname "$0")/common.sh"

fresh_server() {  # [columns]: the stream's columns; schemaless JSON without
  start_server serve
  sql "CREATE STREAM ticks ${1:-} WITH (shards = 4)"
}

rss_and_stop() {  # prints the server's peak RSS in MiB, then stops it
  peak_rss
  stop_server
}

for run in $(seq "$RUNS"); do
  echo "run $run of $RUNS" >&2
  fresh_server
  line=$("$BENCH" --server $URL http --producers 4 --events 4000000 --lake)
  echo "${line%\}}, \"peak_rss_mib\": $(rss_and_stop)}" >>"$RESULTS"

  fresh_server
  line=$("$BENCH" --server $URL kinesis-put --producers 4 --events 1000000)
  echo "$line" >>"$RESULTS"
  line=$("$BENCH" --server $URL kinesis-get)
  echo "${line%\}}, \"peak_rss_mib\": $(rss_and_stop)}" >>"$RESULTS"

  fresh_server
  line=$("$BENCH" --server $URL latency --rate 50000 --seconds 20 --batch 100)
  echo "${line%\}}, \"peak_rss_mib\": $(rss_and_stop)}" >>"$RESULTS"

  fresh_server "(ticker TEXT NOT NULL, price DOUBLE NOT NULL, volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL)"
  line=$("$BENCH" --server $URL freshness --rate 20000 --seconds 60 --batch 200)
  echo "${line%\}}, \"peak_rss_mib\": $(rss_and_stop)}" >>"$RESULTS"
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["bench"], []).append(r)
print(f"medians of {len(by['http'])} runs (2 cores, server and load generator on one machine)")
for bench, rs in by.items():
    keys = [k for k in ("events_per_s", "lake_events_per_s", "p50_ms", "p99_ms", "max_ms", "peak_rss_mib") if k in rs[0]]
    figures = ", ".join(f"{k} {statistics.median(r[k] for r in rs):,.2f}" for k in keys)
    print(f"  {bench:12} {figures}")
PY
