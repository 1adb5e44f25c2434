#!/usr/bin/env bash
# pandas.read_sql of 1 M rows, as an analyst's notebook reads a table: through SQLAlchemy and
# psycopg from Sluice's PostgreSQL port, through Sluice's HTTP Arrow answer (pyarrow, then
# to_pandas), and through SQLAlchemy and psycopg from PostgreSQL serving the same rows from a
# table — Debian's `postgresql` (installed here when missing), on a throwaway cluster this
# script starts on loopback and stops — and, without a server, the lake's files read by the
# `deltalake` package in the reading process (the in-process ceiling).
#
#   sluice gen clicks | sluice produce clicks ──► raw table `clicks` ──► ROWS rows of its W2
#   columns ──► (exported once as Arrow, COPY'd into PostgreSQL's table `clicks`)
#   timed, each in turn: pandas.read_sql(Sluice PG) · Arrow over HTTP → pandas ·
#   pandas.read_sql(PostgreSQL) · the lake's files → pandas (no server)
#
# Each figure is rows/s = ROWS / the seconds from the call to a complete DataFrame in this
# process (the connection made before the clock starts), median of RUNS runs after a warm-up run
# of each; the server's and PostgreSQL's data sit in the page cache. All three share the
# machine's cores with the Python reading them.
# Usage: bench/read_sql.sh [RUNS=5] [ROWS=1000000]
RUNS=${1:-5}
ROWS=${2:-1000000}
source "$(dirname "$0")/common.sh"
bench_venv

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PG_BIN" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y -q postgresql >/dev/null
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
# PostgreSQL will not run as root: its cluster belongs to the `postgres` user then.
PG_DIR=$(mktemp -d)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -ne 0 ] || chown postgres "$PG_DIR"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 7978 -k $PG_DIR -c shared_buffers=512MB" start >/dev/null
trap 'as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1; rm -rf "$PG_DIR";
  if [ -n "$SERVER" ]; then kill $SERVER 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

# A million rows are more than the default answer limit (256 MiB).
printf '[limits]\nmax_result_bytes = %d\n' $((4 << 30)) > "$WORK/sluice.toml"
start_server serve --config "$WORK/sluice.toml"
SLUICE_PG_PORT=$(sed -n 's/.*pg listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.out")
"$SLUICE" sql --server $URL "CREATE STREAM clicks (event_id TEXT NOT NULL, user_id TEXT,
  session_id TEXT, event_type TEXT NOT NULL, page TEXT, device TEXT, country TEXT,
  ts TIMESTAMP NOT NULL) WITH (shards = 4)" >/dev/null
# W2 has malformed records (to clicks_errors): a few more events than rows.
EVENTS=$((ROWS + ROWS / 20))
echo "loading $EVENTS W2 events" >&2
"$SLUICE" gen clicks --events "$EVENTS" | "$SLUICE" produce clicks --server $URL --key user_id --quiet

"$VENV/bin/python" bench/read_sql.py --server $URL --sluice-pg "$SLUICE_PG_PORT" --lake "$WORK/data/lake" \
  --postgres 7978 --postgres-version "$("$PG_BIN/postgres" --version | sed 's/.*(PostgreSQL) \([0-9.]*\).*/PostgreSQL \1/')" --rows "$ROWS" --runs "$RUNS"
