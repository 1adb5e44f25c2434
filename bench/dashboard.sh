#!/usr/bin/env bash
# The dashboard and the demo: the overview's load time in headless Chromium, the browser's
# memory over MINUTES of a live view page, the demo's CPU at its default rates, and a saved
# dashboard (market): its load time, the CPU it costs while open, and its panels' queries
# through the server beside DuckDB's on the same lake tables.
#
# A fresh release `sluice demo` (its own data directory) settles for 30 s after its history
# backfill; bench/dashboard.py then measures, with Chromium and chromedriver from Debian
# (installed by tests/run) driven by Selenium (bench/requirements.txt, into ~/.cache).
# Usage: bench/dashboard.sh [MINUTES=10]
MINUTES=${1:-10}
source "$(dirname "$0")/common.sh"
bench_venv
start_server demo
"$VENV/bin/python" bench/dashboard.py --url $URL --pid $SERVER --minutes "$MINUTES" --lake "$WORK/data/lake"
