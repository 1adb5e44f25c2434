"""Authentication and roles at every door, with the clients users have: HTTP with bearer
tokens, psql and psycopg with passwords (SCRAM-SHA-256), boto3 with access keys (Signature V4
verified), the dashboard in headless Chromium; and the safe default: no address beyond loopback
without users.
"""

from __future__ import annotations

import functools
import datetime
import hashlib
import hmac
import os
import re
import secrets
import subprocess

import boto3
import psycopg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
import conftest
from conftest import Server
from psycopg import errors
from selenium.webdriver.common.by import By

PSQL = "/usr/bin/psql"
ADMIN = "admin-" + secrets.token_hex(16)
READER = "reader-" + secrets.token_hex(16)
TICKS = ("CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL) "
         "WITH (shards = 2)")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "PG"))}


@pytest.fixture
def secured(request, tmp_path, sluice_bin):
    """A server with users admin (ADMIN) and reader (READER, read-only), holding stream ticks."""
    srv = Server(tmp_path / "logs", sluice_bin)
    srv.env = {"SLUICE_ADMIN_SECRET": ADMIN, "SLUICE_READER_SECRET": READER}
    request.node._sluice_servers = [srv]
    srv.start(tmp_path / "data")
    srv.token = ADMIN
    srv.sql(TICKS)
    try:
        yield srv
    finally:
        srv.stop()


wait_for = functools.partial(conftest.wait_for, timeout=30.0, every=0.2)


# --------------------------------------------------------------------------------------------
# The safe default
# --------------------------------------------------------------------------------------------


def test_a_non_loopback_address_needs_users(tmp_path, sluice_bin):
    for http, pg in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")]:
        out = subprocess.run(
            [str(sluice_bin), "serve", "--data-dir", str(tmp_path / "data"), "--http", http, "--pg", pg],
            capture_output=True, text=True, timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
        assert out.returncode != 0
        assert "refusing to listen on 0.0.0.0:0 without authentication" in out.stderr, out.stderr
        assert "SLUICE_ADMIN_SECRET" in out.stderr, "the message says how to configure it"
    # With a user it starts, and asks for the token.
    env = clean_env() | {"SLUICE_ADMIN_SECRET": ADMIN}
    proc = subprocess.Popen(
        [str(sluice_bin), "serve", "--data-dir", str(tmp_path / "data"), "--http", "0.0.0.0:0",
         "--pg", "0.0.0.0:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        port = None
        for line in proc.stdout:
            if m := re.match(r"sluice: http listening on 0\.0\.0\.0:(\d+)", line):
                port = int(m.group(1))
                break
        assert port, "the server started on 0.0.0.0"
        srv = Server(tmp_path / "logs", sluice_bin)
        srv.port = port
        assert srv.get("/v1/streams")[0] == 401
        srv.token = ADMIN
        assert srv.get("/v1/streams")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def test_http_asks_for_a_token(secured):
    secured.token = None
    status, headers, body = secured.get("/v1/streams")
    assert (status, body["code"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"] == 'Bearer realm="sluice"'
    for token in ["wrong-" + secrets.token_hex(16), ADMIN[:-1], ADMIN + "x", ""]:
        status, _, body = secured.get("/v1/streams", {"Authorization": f"Bearer {token}"})
        assert (status, body["code"]) == (401, "unauthorized"), token
    status, _, _ = secured.ingest("ticks", b'{"ticker":"A","price":1,"ts":"2026-01-01T00:00:00Z"}\n')
    assert status == 401
    # The dashboard's page holds no data: it loads, then asks for the token.
    status, _, page = secured.get("/")
    assert status == 200 and "app.js" in page
    secured.token = ADMIN
    status, _, body = secured.get("/v1/streams")
    assert status == 200 and [s["name"] for s in body["streams"]] == ["ticks"]
    status, _, body = secured.ingest("ticks", b'{"ticker":"A","price":1,"ts":"2026-01-01T00:00:00Z"}\n')
    assert status == 200, body
    assert secured.sql("SELECT count(*) AS n FROM ticks")["rows"] == [[1]]


def test_a_read_only_token_may_query_and_watch_but_not_change_or_ingest(secured):
    secured.sql("CREATE TABLE kept AS SELECT 1 AS a")
    secured.token = READER
    for statement in ["SELECT count(*) FROM ticks", "SHOW STREAMS", "DESCRIBE ticks",
                      "SHOW MATERIALIZED VIEWS", "SELECT * FROM kept"]:
        status, body = secured.sql_status(statement)
        assert status == 200, (statement, body)
    for path in ["/v1/streams", "/v1/views", "/v1/tables", "/metrics", "/v1/streams/ticks/recent"]:
        assert secured.get(path)[0] == 200, path
    for statement in ["DROP STREAM ticks", "CREATE STREAM other (a INT)", "DROP TABLE kept",
                      "CREATE TABLE t AS SELECT 1 AS a", "INSERT INTO kept VALUES (2)",
                      "OPTIMIZE ticks", "VACUUM kept",
                      "CREATE MATERIALIZED VIEW v AS SELECT ticker, count(*) AS n FROM ticks GROUP BY ticker"]:
        status, body = secured.sql_status(statement)
        assert (status, body["code"]) == (403, "forbidden"), (statement, body)
        assert "user 'reader' is read-only" in body["error"]
    status, _, body = secured.ingest("ticks", b'{"ticker":"A","price":1,"ts":"2026-01-01T00:00:00Z"}\n')
    assert (status, body["code"]) == (403, "forbidden")
    secured.token = ADMIN
    assert secured.sql("SELECT count(*) FROM ticks")["rows"] == [[0]]
    assert secured.sql("SELECT count(*) FROM kept")["rows"] == [[1]]
    assert [r[0] for r in secured.sql("SHOW STREAMS")["rows"]] == ["ticks"]


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def psql(server, user: str, password: str | None, *args) -> subprocess.CompletedProcess:
    env = clean_env() | {"PGCONNECT_TIMEOUT": "10"}
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [PSQL, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", user, "-d", "sluice", "-X",
           "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)


def test_psql_logs_in_with_the_right_password_only(secured):
    out = psql(secured, "admin", ADMIN, "-c", "SELECT 41 + 1")
    assert (out.returncode, out.stdout.strip()) == (0, "42"), out.stderr
    for user, password in [("admin", READER), ("admin", "wrong"), ("nobody", ADMIN), ("admin", None)]:
        out = psql(secured, user, password, "-c", "SELECT 1")
        assert out.returncode != 0, (user, password)
        assert "password" in out.stderr.lower(), out.stderr
    out = psql(secured, "reader", READER, "-c", "SHOW STREAMS")
    assert out.returncode == 0 and out.stdout.startswith("ticks|"), out.stderr
    out = psql(secured, "reader", READER, "-c", "DROP STREAM ticks")
    assert out.returncode != 0 and "read-only" in out.stderr, out.stderr


def connect(server, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=server.pg_port, user=user, password=password,
                           dbname="sluice", autocommit=True, connect_timeout=10)


def test_psycopg_logs_in_with_the_right_password_and_reader_only_reads(secured):
    with connect(secured, "admin", ADMIN) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 1 AS a")
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
    for user, password in [("admin", "wrong-password-123"), ("nobody", READER), ("reader", ADMIN)]:
        with pytest.raises(psycopg.OperationalError) as refused:
            connect(secured, user, password)
        assert "password authentication failed" in str(refused.value).lower() or "28P01" in str(refused.value), \
            str(refused.value)
    with connect(secured, "reader", READER) as conn:
        assert conn.execute("SELECT a FROM kept").fetchall() == [(1,)]
        assert conn.execute("SELECT a FROM kept WHERE a = %s", (1,)).fetchall() == [(1,)]
        for statement in ["INSERT INTO kept VALUES (2)", "CREATE TABLE t AS SELECT 1 AS a",
                          "DROP TABLE kept", "CREATE STREAM s (a INT)", "DROP STREAM ticks"]:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        # The extended protocol too (parameters make psycopg use it).
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO kept VALUES (%s)", (3,))
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,), "the connection survives"


# --------------------------------------------------------------------------------------------
# Kinesis
# --------------------------------------------------------------------------------------------


def kinesis(server, key: str, secret: str):
    return boto3.session.Session().client(
        "kinesis", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))


def error_code(call) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return refused.value.response["Error"]["Code"]


def test_boto3_with_the_right_keys_works_and_wrong_ones_are_refused(secured):
    admin = kinesis(secured, "admin", ADMIN)
    admin.create_stream(StreamName="k", ShardCount=1)
    put = admin.put_record(StreamName="k", Data=b"one", PartitionKey="p")
    assert put["SequenceNumber"]
    put_two = lambda client: client.put_record(StreamName="k", Data=b"two", PartitionKey="p")  # noqa: E731
    assert error_code(lambda: put_two(kinesis(secured, "admin", "not-" + ADMIN))) == "InvalidSignatureException"
    assert error_code(lambda: put_two(kinesis(secured, "nobody", ADMIN))) == "UnrecognizedClientException"
    reader = kinesis(secured, "reader", READER)
    assert error_code(lambda: put_two(reader)) == "AccessDeniedException"
    assert error_code(lambda: reader.delete_stream(StreamName="k")) == "AccessDeniedException"
    assert "k" in reader.list_streams()["StreamNames"]
    iterator = reader.get_shard_iterator(StreamName="k", ShardId="shardId-000000000000",
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [r["Data"] for r in reader.get_records(ShardIterator=iterator)["Records"]] == [b"one"]


def test_a_tampered_request_is_refused(secured):
    admin = kinesis(secured, "admin", ADMIN)
    admin.create_stream(StreamName="k", ShardCount=1)

    def tamper(request, **_):
        # After signing: one byte of the body changes, its length does not.
        request.body = request.body.replace(b'"PartitionKey": "p"', b'"PartitionKey": "q"')

    admin.meta.events.register("before-send.kinesis.PutRecord", tamper)
    assert error_code(lambda: admin.put_record(StreamName="k", Data=b"x", PartitionKey="p")) == \
        "InvalidSignatureException"
    admin.meta.events.unregister("before-send.kinesis.PutRecord", tamper)
    assert kinesis(secured, "admin", ADMIN).describe_stream_summary(StreamName="k")


def signed_request(server, secret: str, when: datetime.datetime, body: bytes) -> tuple[int, dict]:
    """A ListStreams signed by hand (Signature V4) at `when`."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    host = f"127.0.0.1:{server.port}"
    headers = {"content-type": "application/x-amz-json-1.1", "host": host, "x-amz-date": amz_date,
               "x-amz-target": "Kinesis_20131202.ListStreams"}
    names = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", names,
                           hashlib.sha256(body).hexdigest()])
    scope = f"{amz_date[:8]}/us-east-1/kinesis/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in [amz_date[:8], "us-east-1", "kinesis", "aws4_request"]:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = f"AWS4-HMAC-SHA256 Credential=admin/{scope}, SignedHeaders={names}, Signature={signature}"
    del headers["host"]  # http.client sends it, as signed
    status, _, answer = server.post("/", body, headers)
    return status, answer


def test_a_stale_or_unsigned_request_is_refused(secured):
    secured.token = None
    now = datetime.datetime.now(datetime.timezone.utc)
    assert signed_request(secured, ADMIN, now, b"{}")[0] == 200
    for when, expected in [(now - datetime.timedelta(minutes=20), "Signature expired"),
                           (now + datetime.timedelta(minutes=20), "Signature not yet current")]:
        status, answer = signed_request(secured, ADMIN, when, b"{}")
        assert (status, answer["__type"]) == (400, "InvalidSignatureException")
        assert answer["message"].startswith(expected), answer
    status, answer = secured.kinesis_raw("ListStreams", {})
    assert answer["__type"] == "MissingAuthenticationTokenException"


# --------------------------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------------------------


def test_the_dashboard_asks_for_the_token_once(secured, browser):
    browser.get(secured.url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#login #token"), "the sign-in form")
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys("wrong-" + secrets.token_hex(16))
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_for(lambda: "refused" in browser.find_element(By.CSS_SELECTOR, "main").text, "the refusal")
    browser.find_element(By.CSS_SELECTOR, "#token").send_keys(READER)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    stream_rows = lambda: browser.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('#streams tr[data-stream]')].map((r) => r.dataset.stream)")
    assert wait_for(stream_rows, "the overview's streams") == ["ticks"]
    # Kept for the session: another page and a reload ask nothing.
    browser.get(secured.url + "/#/sql")
    browser.refresh()
    browser.get(secured.url + "/#/")
    assert wait_for(stream_rows, "the overview again") == ["ticks"]
    assert not browser.find_elements(By.CSS_SELECTOR, "#login")
    browser.execute_script("sessionStorage.clear()")
