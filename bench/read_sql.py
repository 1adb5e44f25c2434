"""pandas.read_sql of ROWS rows from Sluice (PostgreSQL protocol; HTTP Arrow) and from PostgreSQL
(run by bench/read_sql.sh, which has started both servers and loaded Sluice's `clicks`), and
beside them the in-process ceiling: the same table's files read by the `deltalake` package.

Waits until Sluice's table holds ROWS rows, copies ROWS of them into PostgreSQL's table `clicks`
(the same columns and types; untimed), then reads them RUNS times from each, alternating, after a
warm-up read of each, and checks that every read gave the same DataFrame shape and the same
sum of a column's lengths.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import urllib.error
import urllib.request

import pandas as pd
import pyarrow as pa
import psycopg
import pyarrow.csv as pa_csv
import pyarrow.ipc as ipc
import sqlalchemy as sa
from deltalake import DeltaTable

COLUMNS = "event_id, user_id, session_id, event_type, page, device, country, ts"
POSTGRES_TABLE = """CREATE TABLE clicks (event_id TEXT NOT NULL, user_id TEXT, session_id TEXT,
    event_type TEXT NOT NULL, page TEXT, device TEXT, country TEXT, ts TIMESTAMP NOT NULL)"""


def sluice_sql(server: str, statement: str, arrow: bool = False):
    request = urllib.request.Request(
        f"{server}/v1/sql",
        data=json.dumps({"sql": statement}).encode(),
        headers={"content-type": "application/json",
                 "accept": "application/vnd.apache.arrow.stream" if arrow else "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return ipc.open_stream(answer).read_all() if arrow else json.load(answer)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{statement}: {e.code} {e.read().decode()}") from None


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--server", required=True)
    args.add_argument("--sluice-pg", type=int, required=True)
    args.add_argument("--postgres", type=int, required=True)
    args.add_argument("--postgres-version", default="PostgreSQL")
    args.add_argument("--lake", required=True)
    args.add_argument("--rows", type=int, required=True)
    args.add_argument("--runs", type=int, default=5)
    args = args.parse_args()

    deadline = time.monotonic() + 900
    while sluice_sql(args.server, "SELECT count(*) FROM clicks")["rows"][0][0] < args.rows:
        if time.monotonic() > deadline:
            raise SystemExit(f"clicks did not reach {args.rows} rows in time")
        time.sleep(1)
    # PostgreSQL's table holds the first ROWS of Sluice's by event_id.
    query = f"SELECT {COLUMNS} FROM clicks ORDER BY event_id LIMIT {args.rows}"
    rows = sluice_sql(args.server, query, arrow=True)
    postgres_url = f"postgresql+psycopg://postgres@127.0.0.1:{args.postgres}/postgres"
    with psycopg.connect(host="127.0.0.1", port=args.postgres, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS clicks")
        conn.execute(POSTGRES_TABLE)
        csv = io.BytesIO()
        # Sluice answers text as string_view, which the CSV writer does not take.
        rows = rows.cast(pa.schema([
            pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type) for f in rows.schema
        ]))
        pa_csv.write_csv(rows, csv, pa_csv.WriteOptions(include_header=False))
        with conn.cursor().copy(f"COPY clicks ({COLUMNS}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(csv.getvalue())
        conn.execute("VACUUM ANALYZE clicks")
    # Each read takes ROWS rows of its table (Sluice's holds a few more: the producer sent more
    # events than ROWS): the same columns and types, and rows alike, not the same rows.
    read = f"SELECT {COLUMNS} FROM clicks LIMIT {args.rows}"
    sluice = sa.create_engine(f"postgresql+psycopg://sluice@127.0.0.1:{args.sluice_pg}/sluice").connect()
    postgres = sa.create_engine(postgres_url).connect()
    readers = {
        "Sluice, PostgreSQL protocol (SQLAlchemy + psycopg)": lambda: pd.read_sql(sa.text(read), sluice),
        "Sluice, HTTP Arrow answer (pyarrow, to_pandas)":
            lambda: sluice_sql(args.server, read, arrow=True).to_pandas(),
        f"{args.postgres_version} (SQLAlchemy + psycopg)": lambda: pd.read_sql(sa.text(read), postgres),
        # No server: the table's Parquet files read in this process (the in-process ceiling).
        "The lake read directly (deltalake, to_pandas)":
            lambda: DeltaTable(f"{args.lake}/clicks").to_pyarrow_table(columns=COLUMNS.split(", "))
            .slice(0, args.rows).to_pandas(),
    }
    seconds = {name: [] for name in readers}
    shapes = set()
    for run in range(args.runs + 1):
        for name, read_frame in readers.items():
            started = time.perf_counter()
            frame = read_frame()
            took = time.perf_counter() - started
            shapes.add((frame.shape, int(frame["event_id"].str.len().sum())))
            if run:
                seconds[name].append(took)
    if len(shapes) != 1:
        raise SystemExit(f"the reads differ: {shapes}")
    print(f"pandas.read_sql of {args.rows:,} rows ({COLUMNS}), medians of {args.runs} runs, each reader in turn")
    for name, took in seconds.items():
        median = statistics.median(took)
        print(f"  {name:58} {args.rows / median:12,.0f} rows/s  ({median:.2f} s)")


if __name__ == "__main__":
    main()
