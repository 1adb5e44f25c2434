#!/usr/bin/env bash
# W3: the interactive lake queries of shared/bench/WORKLOADS.md on the W2 output, Sluice beside
# DuckDB on the same Parquet files in the same run.
#
#   sluice gen clicks | sluice produce clicks ──► raw table `clicks`, partitioned by
#   date, hour, event_type ──► OPTIMIZE ──► each query: Sluice (POST /v1/sql), DuckDB
#   (read_parquet over the table's current files, hive partitions), alternating A B A B
#
# A fresh release server loads EVENTS W2 events (default 10 M, with their malformed records,
# which go to clicks_errors), compacts the table, then bench/queries.py runs each query RUNS
# times on each engine and prints the medians. DuckDB comes from PyPI into a virtual environment
# under ~/.cache (bench/requirements.txt).
# Usage: bench/queries.sh [RUNS=5] [EVENTS=10000000]
RUNS=${1:-5}
EVENTS=${2:-10000000}
source "$(dirname "$0")/common.sh"
bench_venv

start_server serve
"$SLUICE" sql --server $URL "CREATE STREAM clicks (event_id TEXT NOT NULL, user_id TEXT,
  session_id TEXT, event_type TEXT NOT NULL, page TEXT, device TEXT, country TEXT,
  ts TIMESTAMP NOT NULL) WITH (shards = 4,
  partition_by = 'date(ts) AS date, hour(ts) AS hour, event_type')" >/dev/null
echo "loading $EVENTS W2 events" >&2
"$SLUICE" gen clicks --events "$EVENTS" | "$SLUICE" produce clicks --server $URL --key user_id --quiet

"$VENV/bin/python" bench/queries.py --server $URL --lake "$WORK/data/lake" \
  --events "$EVENTS" --runs "$RUNS"
echo "server peak RSS $(peak_rss) MiB"
