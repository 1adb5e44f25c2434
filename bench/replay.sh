#!/usr/bin/env bash
# `sluice replay` pacing, through the real server: W1 events (10,000 a second of event time)
# replayed from an NDJSON file at 100× event-time speed into stream `ticks`, keyed by ticker.
# The replay says how long it took beside how long the pace asked, from its first request to
# its last acknowledgement (reading and sorting the file come before and are not counted); the
# pacing error is the difference over what was asked. At 100×, W1 asks 1 M events a second of
# the server, which shares the 2 cores with the replay.
#
# Usage: bench/replay.sh [RUNS=3]
# Environment: REPLAY_EVENTS (10000000), SPEED (100x); common.sh's SLUICE_BENCH_PROFILE=debug to
# try the script out.
RUNS=${1:-3}
EVENTS=${REPLAY_EVENTS:-10000000}
SPEED=${SPEED:-100x}
source "$(dirname "$0")/common.sh"

echo "== W1, $EVENTS events (not timed)"
"$SLUICE" gen ticks --events "$EVENTS" >"$WORK/events.ndjson"
for run in $(seq "$RUNS"); do
  start_server serve
  sql "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE NOT NULL, volume BIGINT NOT NULL, ts TIMESTAMP NOT NULL) WITH (shards = 4, event_time = 'ts', watermark = '5 seconds')"
  "$SLUICE" replay "$WORK/events.ndjson" --stream ticks --server $URL --event-time ts \
    --speed "$SPEED" --key ticker 2>"$WORK/replay.err"
  stop_server
  line=$(grep '^replayed in' "$WORK/replay.err" | tail -1)
  echo "run $run: $line"
  echo "$line" >>"$RESULTS"
done
python3 - "$RESULTS" "$EVENTS" "$SPEED" <<'PY'
import re, statistics, sys
runs = [tuple(map(float, re.findall(r"[-+]?\d+\.\d+", line)[:3])) for line in open(sys.argv[1])]
took, asked, error = (statistics.median(r[i] for r in runs) for i in range(3))
print(f"== medians of {len(runs)} runs: {sys.argv[2]} events at {sys.argv[3]}: {took:.3f} s for the "
      f"{asked:.3f} s asked, pacing error {error:+.2f} %")
PY
