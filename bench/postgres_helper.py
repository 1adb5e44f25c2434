"""bench/postgres.sh's and bench/postgres_cluster.sh's helper: a PostgreSQL server of its own
(Debian's, as the postgres user), pgbench's tables, the mirror compared with the source, pgbench
at full speed with commit → visible probes and the slot's retained WAL sampled beside it, and a
cluster's reading worker killed in the middle."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from sources_helper import sql, until

BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres(*args, **kwargs):
    return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, **kwargs)


def start(folder, port):
    """Starts a PostgreSQL server on 127.0.0.1:PORT with its data in FOLDER (made by initdb if it
    is not there), wal_level = logical; commits are not flushed (fsync and synchronous_commit
    off), so that pgbench runs as fast as the CPU lets it."""
    folder = Path(folder)
    if not (folder / "data").exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres", "postgres")
        as_postgres(BIN / "initdb", "-D", folder / "data", "-U", "postgres", "-A", "trust", "--no-sync",
                    stdout=subprocess.DEVNULL)
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c wal_level=logical -c fsync=off "
               "-c synchronous_commit=off -c max_replication_slots=4 -c max_wal_senders=4 -c shared_buffers=512MB")
    as_postgres(BIN / "pg_ctl", "-D", folder / "data", "-l", folder / "log", "-w", "-o", options, "start",
                stdout=subprocess.DEVNULL)


def stop(folder):
    """Stops the server whose data is in FOLDER."""
    as_postgres(BIN / "pg_ctl", "-D", Path(folder) / "data", "-m", "immediate", "-w", "stop", stdout=subprocess.DEVNULL)


def init(url, scale):
    """pgbench's tables at SCALE (100,000 accounts a unit) and publication `sluice` of the two with
    a primary key that change: pgbench_accounts (every transaction of `pgbench -N`) and
    pgbench_branches (the probes)."""
    subprocess.run([BIN / "pgbench", "-i", "-q", "-s", str(scale), url], check=True, stderr=subprocess.DEVNULL)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE PUBLICATION sluice FOR TABLE pgbench_accounts, pgbench_branches")


def state(url):
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("SELECT count(*), sum(abalance) FROM pgbench_accounts").fetchone()


def mirrored(sluice, url):
    """Whether Sluice's mirror of pgbench_accounts holds the source's rows (count, balances)."""
    want = [list(state(url))]
    try:
        return sql(sluice, "SELECT count(*), sum(abalance) FROM pgbench_accounts")["rows"] == want
    except Exception:  # the table appears with the snapshot's first commit
        return False


def wait_mirror(sluice, url, timeout):
    """Waits until the mirror holds the source's rows; prints the seconds."""
    print(until("pgbench_accounts to hold the source's rows", lambda: mirrored(sluice, url), timeout, every=0.1))


def retained(url):
    """The WAL the slot holds back (from its restart_lsn, which PostgreSQL moves at its own pace
    behind the acknowledgements) and the WAL not yet acknowledged (from confirmed_flush_lsn) to
    the current position, in bytes."""
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
                         "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                         "FROM pg_replication_slots").fetchone()


def pgbench(url, seconds):
    """`pgbench -N` (an account updated and a history row inserted a transaction) at full speed
    for SECONDS with 4 clients; returns the transactions it made."""
    out = subprocess.run([BIN / "pgbench", "-N", "-n", "-c", "4", "-j", "2", "-T", str(seconds), url],
                         check=True, capture_output=True, text=True).stdout
    return int(next(line for line in out.splitlines() if "actually processed" in line).split()[-1].split("/")[0])


def backlog(url, seconds):
    """pgbench for SECONDS while Sluice is down; prints the transactions."""
    print(pgbench(url, seconds))


def probe(url, sluice, timeout, done, probes):
    """Until DONE is set, one probe after another: pgbench_branches row 1 updated, then read
    through SLUICE until its mirror shows it; (commit, visible) instants appended to PROBES."""
    with psycopg.connect(url, autocommit=True) as c:
        n = 0
        while not done.is_set():
            n += 1
            mark = f"probe-{n}"
            c.execute("UPDATE pgbench_branches SET filler = %s WHERE bid = 1", (mark,))
            committed = time.monotonic()
            while sql(sluice, "SELECT trim(filler) FROM pgbench_branches WHERE bid = 1")["rows"] != [[mark]]:
                if time.monotonic() - committed > float(timeout):
                    sys.exit(f"probe {mark} not visible after {timeout} s")
                time.sleep(0.02)
            probes.append((committed, time.monotonic()))
            time.sleep(0.2)


def live(sluice, url, seconds, timeout):
    """pgbench for SECONDS while Sluice follows. Beside it, one probe after another: pgbench_branches
    row 1 updated, and the time from its commit until the mirror shows it; and the slot's retained
    WAL each second. Then waits until the mirror holds the source's rows. Prints JSON: pgbench's
    transactions a second, the seconds the mirror was behind at its end, the probes' p50/p99, the
    retained WAL's median and peak and the unacknowledged WAL's median in MiB."""
    done = threading.Event()
    probes, wal = [], []

    def sample():
        while not done.wait(1.0):
            wal.append([b / 2**20 for b in retained(url)])

    threads = [threading.Thread(target=probe, args=(url, sluice, timeout, done, probes)),
               threading.Thread(target=sample)]
    for t in threads:
        t.start()
    started = time.monotonic()
    transactions = pgbench(url, seconds)
    elapsed = time.monotonic() - started
    done.set()
    for t in threads:
        t.join()
    behind = until("pgbench_accounts to hold the source's rows", lambda: mirrored(sluice, url), timeout, every=0.1)
    latencies = sorted(visible - committed for committed, visible in probes)
    print(json.dumps({
        "live_tps": transactions / elapsed,
        "caught_up_after_s": behind,
        "visible_p50_s": statistics.median(latencies),
        "visible_p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "probes": len(latencies),
        "wal_retained_median_mib": statistics.median(w[0] for w in wal),
        "wal_retained_peak_mib": max(w[0] for w in wal),
        "unacknowledged_median_mib": statistics.median(w[1] for w in wal),
    }))


def idle_retained(url, seconds):
    """Waits SECONDS with the database idle; prints the retained and the unacknowledged WAL
    then, in KiB, as JSON."""
    time.sleep(float(seconds))
    held, unacknowledged = retained(url)
    print(json.dumps({"idle_wal_retained_kib": held / 1024, "idle_unacknowledged_kib": unacknowledged / 1024}))


def reading(sluice):
    """Whether the worker at SLUICE reads the source's slot (SHOW SOURCES: `reading`)."""
    try:
        rows = sql(sluice, "SHOW SOURCES")["rows"]
    except Exception:  # a worker killed, or starting
        return False
    return bool(rows) and all(r[4] == "reading" for r in rows)


def failover(urls, pids, url, seconds, timeout):
    """Workers of a cluster at URLS (comma-separated, their pids PIDS): `pgbench -N` for SECONDS
    with commit → visible probes (as in `live`) read through a worker standing by, and a third of
    the way in, the worker reading the slot killed with -9. Prints JSON: the probes' p50 before
    the kill; the seconds from the kill until another worker reads the slot, and until the first
    probe committed after the kill is visible; then until the mirror holds the source's rows."""
    urls, pids = urls.split(","), [int(p) for p in pids.split(",")]
    until("a worker reading the slot", lambda: any(reading(u) for u in urls), timeout)
    killed = next(i for i, u in enumerate(urls) if reading(u))
    through = urls[(killed + 1) % len(urls)]
    done, probes, kill = threading.Event(), [], {}

    def killer():
        time.sleep(float(seconds) / 3)
        os.kill(pids[killed], signal.SIGKILL)
        kill["at"] = time.monotonic()
        others = [u for i, u in enumerate(urls) if i != killed]
        kill["read_s"] = until("another worker reading the slot", lambda: any(reading(u) for u in others), timeout)

    threads = [threading.Thread(target=probe, args=(url, through, timeout, done, probes)),
               threading.Thread(target=killer)]
    for t in threads:
        t.start()
    pgbench(url, seconds)
    # The probes go on until one committed after the kill is visible.
    until("a probe committed after the kill to be visible",
          lambda: any(committed >= kill.get("at", float("inf")) for committed, _ in probes), timeout)
    done.set()
    for t in threads:
        t.join()
    caught_up = until("pgbench_accounts to hold the source's rows", lambda: mirrored(through, url), timeout, every=0.1)
    before = [visible - committed for committed, visible in probes if visible < kill["at"]]
    after = min(visible for committed, visible in probes if committed >= kill["at"])
    print(json.dumps({
        "visible_p50_s": statistics.median(before),
        "failover_read_s": kill["read_s"],
        "failover_visible_s": after - kill["at"],
        "caught_up_after_s": caught_up,
    }))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
