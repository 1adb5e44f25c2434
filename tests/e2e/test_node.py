"""Node.js clients, as shipped, against both doors: the AWS SDK for JavaScript v3's Kinesis
client (which speaks HTTP/2 only: prior knowledge in clear text, ALPN `h2` under TLS) and
node-postgres (`pg`) on the PostgreSQL port.

The scripts live in tests/e2e/node with their pinned packages (installed by tests/run with
`npm ci`); each checks what it gets and exits non-zero at the first check that fails. Both run
against a server on loopback and one with users and TLS.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from conftest import KINDS, Door

NODE_DIR = Path(__file__).parent / "node"


def node(script: str, env: dict[str, str]) -> str:
    """Runs `script` of NODE_DIR with `env` added; its output, or a failure with its stderr."""
    run = subprocess.run(["node", script], cwd=NODE_DIR, env={**os.environ, **env}, text=True,
                         capture_output=True, timeout=120)
    assert run.returncode == 0, f"node {script} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def ca_env(door: Door, name: str) -> dict[str, str]:
    return {name: str(door.cert)} if door.cert else {}


def test_aws_sdk_for_javascript_kinesis_over_http2(door):
    out = node("kinesis.mjs", {
        "SLUICE_URL": door.server.url,
        "SLUICE_KEY_ID": door.user if door.password else "anyone",
        "SLUICE_SECRET": door.password or "anything",
        "STREAM": "js_" + uuid.uuid4().hex[:8],
        "NODE_NO_WARNINGS": "1",
        **ca_env(door, "NODE_EXTRA_CA_CERTS"),
    })
    assert "25 records in and out" in out


def test_node_postgres(door):
    out = node("pg.mjs", {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(door.server.pg_port),
        "PGUSER": door.user,
        "PGPASSWORD": door.password or "",
        "PGDATABASE": "sluice",
        "TZ": "UTC",
        "SLUICE_KINDS": KINDS,
        **ca_env(door, "SLUICE_CA"),
    })
    assert "pg: 3 rows" in out
