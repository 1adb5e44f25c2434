#!/usr/bin/env bash
# The dashboard and the demo: the overview's load time in headless Chromium, the browser's
# memory over MINUTES of a live view page, and the demo's CPU at its default rates.
#
# A fresh release `sluice demo` (its own data directory) settles for 30 s after its history
# backfill; bench/dashboard.py then measures, with Chromium and chromedriver from Debian
# (installed by tests/run) driven by Selenium (bench/requirements.txt, into ~/.cache).
# Usage: bench/dashboard.sh [MINUTES=10]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
cargo build --release -q -p sluice -p sluice-bench  # as bench/ingest.sh: one feature set, one build
SLUICE=$CARGO_TARGET_DIR/release/sluice
VENV=${SLUICE_BENCH_VENV:-$HOME/.cache/sluice-bench-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r bench/requirements.txt

PORT=7977
WORK=$(mktemp -d)
trap 'kill $DEMO 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$SLUICE" demo --data-dir "$WORK/data" --http 127.0.0.1:$PORT --pg 127.0.0.1:0 \
  >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO=$!
for _ in $(seq 100); do grep -q 'http listening' "$WORK/demo.out" 2>/dev/null && break; sleep 0.1; done
"$VENV/bin/python" bench/dashboard.py --url http://127.0.0.1:$PORT --pid $DEMO --minutes "$MINUTES"
