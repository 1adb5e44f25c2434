"""Faults of the machine: a full disk (a small tmpfs that tests/run mounts, $SLUICE_SMALL_DISK) and
an S3 lake that goes away (moto's server, stopped and started again). Ingest refuses clearly or
keeps accepting into the log; nothing acknowledged is lost or counted twice; everything resumes
by itself when the cause is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path

import pytest
from conftest import Server, wait_for


def send(server, ids) -> int:
    body = b"".join(json.dumps({"id": i}).encode() + b"\n" for i in ids)
    status, _, _ = server.ingest("s", body)
    return status


def counted(server) -> list[int]:
    rows = server.sql("SELECT id FROM s ORDER BY id")["rows"]
    return [r[0] for r in rows]


def pipeline_error(server) -> str | None:
    _, _, answer = server.get("/v1/streams")
    return next(s["pipeline_error"] for s in answer["streams"] if s["name"] == "s")


@pytest.fixture
def small_disk(tmp_path):
    root = os.environ.get("SLUICE_SMALL_DISK")
    if not root:
        pytest.fail("SLUICE_SMALL_DISK is not set: tests/run mounts a small tmpfs there", pytrace=False)
    folder = Path(root) / uuid.uuid4().hex[:8]
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Fills the file system holding `folder`, leaving nothing free."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_ingest_and_everything_resumes_when_space_returns(request, tmp_path, small_disk,
                                                                              sluice_bin):
    srv = Server(tmp_path / "logs", sluice_bin)  # the log of the server where there is room
    request.node._sluice_servers = [srv]
    srv.start(small_disk / "data")
    try:
        srv.sql("CREATE STREAM s (id BIGINT NOT NULL) WITH (shards = 2)")
        acknowledged, refused = [], 0
        next_id = 0
        for _ in range(20):
            ids = list(range(next_id, next_id + 100))
            next_id += 100
            assert send(srv, ids) == 200
            acknowledged += ids
        wait_for(lambda: len(counted(srv)) == len(acknowledged), "the first records")
        filler = fill(small_disk)
        # The disk is full: ingest is refused (503) — or, for what still fits, acknowledged.
        statuses = []
        for _ in range(30):
            ids = list(range(next_id, next_id + 100))
            next_id += 100
            status = send(srv, ids)
            statuses.append(status)
            if status == 200:
                acknowledged += ids
            else:
                assert status == 503, status
                refused += 1
        assert refused > 0, f"a full disk refused nothing: {statuses}"
        # The pipeline cannot write Parquet either: it says so, and the server answers.
        assert srv.get("/v1/streams")[0] == 200
        # Space returns: everything resumes by itself.
        filler.unlink()

        answers = []

        def accepted():
            ids = list(range(next_id + 1000 * len(answers), next_id + 1000 * len(answers) + 100))
            body = b"".join(json.dumps({"id": i}).encode() + b"\n" for i in ids)
            status, _, answer = srv.ingest("s", body)
            answers.append(answer)
            if status == 200:
                acknowledged.extend(ids)
                return True
            return False

        try:
            wait_for(accepted, "ingest to resume", timeout=30)
        except AssertionError:
            raise AssertionError(f"ingest did not resume: {answers[-3:]}; {shutil.disk_usage(small_disk)}; "
                                 f"{sorted((str(p), p.stat().st_size) for p in small_disk.rglob('*') if p.is_file())[-8:]}")
        wait_for(lambda: pipeline_error(srv) is None and len(counted(srv)) == len(acknowledged),
                 "the raw table to catch up", timeout=90)
        got = counted(srv)
        assert got == sorted(acknowledged), "every acknowledged record once, no refused one"
        assert srv.sql("SELECT count(*) FROM s_errors")["rows"] == [[0]]
        # A restart recovers the same log and tables: nothing was corrupted.
        srv.restart(kill=True)
        assert counted(srv) == sorted(acknowledged)
        assert send(srv, [10**9]) == 200
    finally:
        srv.stop()


class Cable:
    """A TCP proxy in front of moto that can be cut: moto keeps its buckets in memory, so the
    outage is made between Sluice and it (connections refused by closing, open ones cut)."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, upstream]
            for a, b in [(client, upstream), (upstream, client)]:
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        self.up = False
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open = []

    def mend(self):
        self.up = True

    def close(self):
        self.listener.close()


def view_error(server, name: str) -> str | None:
    """The last error of view `name`'s pipeline."""
    _, _, answer = server.get("/v1/views")
    return next(v["last_error"] for v in answer["views"] if v["name"] == name)


def test_an_unreachable_s3_lake_is_retried_and_reported_while_ingest_goes_on(request, tmp_path, sluice_bin,
                                                                              s3_lake):
    """S3 cut, then mended: the raw pipeline and a view back off and both say so (status and
    metric), queries of the lake answer 503 with Retry-After (57P03 over PostgreSQL) — never
    the user's mistake — ingest goes on into the log, and everything catches up by itself."""
    import psycopg

    cable = Cable(s3_lake.s3.port)
    srv = Server(tmp_path / "logs", sluice_bin)
    srv.extra_args = ["--lake", s3_lake.url]
    srv.env = s3_lake.s3.env() | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{cable.port}"}
    request.node._sluice_servers = [srv]
    srv.start(tmp_path / "data")
    try:
        srv.sql("CREATE STREAM s (id BIGINT NOT NULL) WITH (shards = 2)")
        srv.sql("CREATE MATERIALIZED VIEW s_ids AS SELECT id FROM s")
        acknowledged = list(range(100))
        assert send(srv, acknowledged) == 200
        wait_for(lambda: srv.sql("SELECT count(*) FROM s")["rows"] == [[100]], "the first commit")
        wait_for(lambda: srv.sql("SELECT count(*) FROM s_ids")["rows"] == [[100]], "the view's first commit")
        cable.cut()
        # Ingest keeps accepting into the log.
        for start in range(100, 1100, 100):
            ids = list(range(start, start + 100))
            assert send(srv, ids) == 200
            acknowledged += ids
        wait_for(lambda: pipeline_error(srv), "the raw pipeline to report the outage", timeout=90)
        wait_for(lambda: view_error(srv, "s_ids"), "the view to report the outage", timeout=90)
        _, _, metrics = srv.get("/metrics")
        for pipeline in ["s", "s_ids"]:
            assert f'sluice_pipeline_failures_total{{pipeline="{pipeline}"}}' in metrics, pipeline
        _, _, streams = srv.get("/v1/streams")
        raw = next(s["pipeline"] for s in streams["streams"] if s["name"] == "s")
        assert raw["failures"] >= 1 and raw["state"] in ("retrying", "starting"), raw
        # A query of the lake is the environment's failure: 503, retry later; 57P03 over psql.
        status, headers, body = srv.post("/v1/sql", json.dumps({"sql": "SELECT count(*) FROM s_ids"}),
                                         {"Content-Type": "application/json"})
        assert (status, body["code"]) == (503, "lake_unavailable"), body
        assert headers["Retry-After"] == "5"
        with psycopg.connect(host="127.0.0.1", port=srv.pg_port, user="sluice", dbname="sluice",
                             autocommit=True) as pg:
            try:
                pg.execute("SELECT count(*) FROM s_ids")
                raise AssertionError("a query of an unreachable lake answered")
            except psycopg.Error as e:
                assert e.sqlstate == "57P03", e
        cable.mend()
        wait_for(lambda: pipeline_error(srv) is None, "the pipeline to recover", timeout=120)
        wait_for(lambda: view_error(srv, "s_ids") is None, "the view to recover", timeout=120)
        wait_for(lambda: counted(srv) == acknowledged, "every record in the table", timeout=60)
        wait_for(lambda: srv.sql("SELECT count(*) FROM s_ids")["rows"] == [[len(acknowledged)]],
                 "every record in the view", timeout=60)
        assert s3_lake.s3.client().list_objects_v2(Bucket=s3_lake.bucket, Prefix=s3_lake.prefix)["KeyCount"] > 0
    finally:
        srv.stop()
        cable.close()
