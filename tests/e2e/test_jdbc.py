"""pgJDBC (Debian's `libpostgresql-jdbc-java`), the driver of DBeaver, Metabase and Tableau's
PostgreSQL connector, through a small Java program (tests/e2e/jdbc/Catalog.java, run from source
by `java`) making the DatabaseMetaData calls those tools make, a prepared statement, typed
results (the rest of PostgreSQL's types too: conftest's KINDS), an error and a transaction. Against a server on loopback and one with users and TLS
(the driver verifying the server's certificate).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import KINDS, Door

PROGRAM = Path(__file__).parent / "jdbc" / "Catalog.java"
DRIVER = Path("/usr/share/java/postgresql.jar")


def test_pgjdbc_metadata_prepared_statements_and_transactions(door: Door):
    assert DRIVER.exists(), "pgJDBC is missing: tests/run installs libpostgresql-jdbc-java"
    url = f"jdbc:postgresql://127.0.0.1:{door.server.pg_port}/sluice"
    if door.cert:
        url += f"?sslmode=verify-full&sslrootcert={door.cert}"
    run = subprocess.run(["java", "-cp", str(DRIVER), str(PROGRAM), url, door.user, door.password or "",
                          KINDS],
                         text=True, capture_output=True, timeout=180)
    assert run.returncode == 0 and "jdbc: ok" in run.stdout, f"{run.stdout}\n{run.stderr}"
