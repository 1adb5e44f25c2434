"""Limits, TLS and HTTP/2: each limit answered with a clear error when exceeded, the server going
on; TLS on both ports with a certificate made by openssl, psql and Python's ssl as clients;
HTTP/2 beside HTTP/1.1 on the HTTP port, with curl.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import time

import psycopg
import pytest
from conftest import Server
from psycopg import errors

PSQL = "/usr/bin/psql"


def start(request, tmp_path, sluice_bin, config: str, *args: str) -> Server:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sluice.toml"
    path.write_text(config)
    srv = Server(tmp_path / "logs", sluice_bin)
    srv.extra_args = ["--config", str(path), *args]
    request.node._sluice_servers = [srv]
    return srv.start(tmp_path / "data")


@pytest.fixture
def limited(request, tmp_path, sluice_bin):
    srv = start(request, tmp_path, sluice_bin, """
[limits]
max_connections = 8
query_timeout = "1s"
max_result_bytes = 100000
max_request_bytes = 1000
max_records_per_request = 5
""")
    try:
        yield srv
    finally:
        srv.stop()


def test_connections_past_the_limit_are_refused_clearly(limited):
    held = [socket.create_connection(("127.0.0.1", limited.port), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.3)
        status, _, body = limited.get("/v1/streams")
        assert (status, body["code"]) == (503, "too_many_connections"), body
        assert "limits.max_connections" in body["error"]
        # A client that writes its request after the answer has been sent still reads the
        # answer: the server reads what it sends before closing, rather than resetting it.
        with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as late:
            time.sleep(0.3)
            late.sendall(b"POST /v1/streams/s/records HTTP/1.1\r\nHost: x\r\ncontent-length: 400\r\n\r\n")
            time.sleep(0.3)
            late.sendall(b"x" * 400)
            answer = b""
            while chunk := late.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer, answer
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert limited.get("/v1/streams")[0] == 200, "served again once they close"

    pg_held = [psycopg.connect(host="127.0.0.1", port=limited.pg_port, user="sluice", dbname="sluice",
                               autocommit=True, connect_timeout=10) for _ in range(8)]
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(host="127.0.0.1", port=limited.pg_port, user="sluice", dbname="sluice",
                            connect_timeout=10)
        assert "too many clients" in str(refused.value)
        assert pg_held[0].execute("SELECT 1").fetchone() == (1,), "those in keep working"
    finally:
        for c in pg_held:
            c.close()
    # The server sees the closes a moment later: served again once it has.
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=limited.pg_port, user="sluice", dbname="sluice",
                                 autocommit=True, connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_queries_past_the_timeout_or_the_result_size_are_stopped(limited):
    status, body = limited.sql_status("SELECT count(*) FROM range(100000000000)")
    assert (status, body["code"]) == (503, "query_timeout"), body
    assert "limits.query_timeout" in body["error"]
    status, body = limited.sql_status("SELECT * FROM range(1000000)")
    assert (status, body["code"]) == (400, "result_too_large"), body
    assert "LIMIT" in body["error"]
    assert limited.sql("SELECT * FROM range(10)")["rows"][-1] == [9]
    with psycopg.connect(host="127.0.0.1", port=limited.pg_port, user="sluice", dbname="sluice",
                         autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] in ("1000ms", "1s", "1000")


def test_ingest_requests_past_their_limits_are_refused_whole(limited):
    limited.sql("CREATE STREAM s")
    status, _, body = limited.ingest("s", b"".join(b'{"n":%d}\n' % i for i in range(6)))
    assert status == 413 or (status == 400 and "records" in body["error"]), body
    status, _, body = limited.ingest("s", b'{"pad":"' + b"x" * 2000 + b'"}\n')
    assert status == 413, body
    status, _, body = limited.ingest("s", b"".join(b'{"n":%d}\n' % i for i in range(5)))
    assert status == 200, body
    assert limited.sql("SELECT count(*) FROM s")["rows"] == [[5]]


def test_tls_on_both_ports(request, tmp_path, sluice_bin, certificate):
    cert, key = certificate
    srv = start(request, tmp_path, sluice_bin, "", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=10)
        conn.request("POST", "/v1/sql", body=json.dumps({"sql": "SELECT 1 AS one"}),
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["rows"] == [[1]]
        conn.close()
        # Plain HTTP on the TLS port gets nothing it could read as an answer.
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            srv.get("/v1/streams")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        base = [PSQL, "-X", "-A", "-t", "-w", "-c", "SELECT 41 + 1"]
        out = subprocess.run([*base, f"host=127.0.0.1 port={srv.pg_port} user=sluice dbname=sluice "
                              f"sslmode=verify-full sslrootcert={cert}"],
                             capture_output=True, text=True, timeout=30, env=env)
        assert (out.returncode, out.stdout.strip()) == (0, "42"), out.stderr
        out = subprocess.run([*base, f"host=127.0.0.1 port={srv.pg_port} user=sluice dbname=sluice sslmode=disable"],
                             capture_output=True, text=True, timeout=30, env=env)
        assert out.returncode != 0 and "TLS" in out.stderr, out.stderr
        with psycopg.connect(host="127.0.0.1", port=srv.pg_port, user="sluice", dbname="sluice",
                             sslmode="verify-full", sslrootcert=str(cert), autocommit=True) as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
            assert conn.pgconn.ssl_in_use
    finally:
        srv.stop()


def test_a_bad_certificate_stops_start_up(tmp_path, sluice_bin):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    out = subprocess.run([str(sluice_bin), "serve", "--data-dir", str(tmp_path / "d"), "--http", "127.0.0.1:0",
                          "--pg", "127.0.0.1:0", "--tls-cert", str(bogus), "--tls-key", str(bogus)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0 and "cannot use the TLS certificate" in out.stderr, out.stderr


def test_query_errors_over_pg_name_the_limit(limited):
    with psycopg.connect(host="127.0.0.1", port=limited.pg_port, user="sluice", dbname="sluice",
                         autocommit=True, connect_timeout=10) as conn:
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT count(*) FROM range(100000000000)")
        assert conn.execute("SELECT 3").fetchone() == (3,)


def curl(*args: str) -> tuple[str, str]:
    """curl's body and the HTTP version it spoke (`2`, `1.1`)."""
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_version}", *args],
                         capture_output=True, text=True, timeout=30)
    body, _, version = out.stdout.rpartition("\n")
    return body, version


def test_http2_in_clear_text_and_under_tls(request, tmp_path, sluice_bin, certificate):
    """HTTP/2 on the HTTP port for every route: with prior knowledge in clear text, agreed
    through ALPN under TLS; HTTP/1.1 still answered beside it; a live feed streams over HTTP/2."""
    srv = start(request, tmp_path / "clear", sluice_bin, "")
    try:
        srv.sql("CREATE STREAM s (n BIGINT)")
        body, version = curl("--http2-prior-knowledge", "-H", "Content-Type: application/x-ndjson",
                             "--data-binary", '{"n": 1}\n', f"{srv.url}/v1/streams/s/records")
        assert version == "2" and json.loads(body)["accepted"] == 1, body
        body, version = curl("--http2-prior-knowledge", "--data", '{"sql": "SELECT 1 AS one"}',
                             f"{srv.url}/v1/sql")
        assert (version, json.loads(body)["rows"]) == ("2", [[1]])
        body, version = curl(f"{srv.url}/v1/streams")
        assert version == "1.1" and json.loads(body)["streams"][0]["name"] == "s"
        # A live feed (server-sent events) until curl's time is up: its first event came.
        body, version = curl("--http2-prior-knowledge", "--max-time", "3", f"{srv.url}/v1/live/overview")
        assert version == "2" and body.startswith("event: overview\ndata: {"), body[:200]
    finally:
        srv.stop()

    cert, key = certificate
    srv = start(request, tmp_path / "tls", sluice_bin, "", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        body, version = curl("--http2", "--cacert", str(cert), f"https://127.0.0.1:{srv.port}/")
        assert version == "2" and "<html" in body.lower()
        body, version = curl("--http1.1", "--cacert", str(cert), f"https://127.0.0.1:{srv.port}/v1/streams")
        assert version == "1.1" and json.loads(body) == {"streams": []}
    finally:
        srv.stop()
