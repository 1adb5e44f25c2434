"""Crash recovery: kill -9 under load, restart, and every acknowledged event is there once."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter, defaultdict

from conftest import LiveKinesis, read_shard, read_stream, shard_ranges

PRODUCERS = 4
BATCH = 200
CYCLES = 3
STREAM = "crash"


class ProducerState:
    """What one producer sent, across all cycles."""

    def __init__(self, p: int):
        self.p = p
        self.next_n = 0
        self.acked: list[range] = []
        self.acked_last_seq: dict[int, tuple[int, int]] = {}  # last n of batch → (shard, seq)
        self.rejected: list[range] = []
        self.unknown: list[range] = []  # in flight when the server died
        self.problems: list[str] = []
        self.statuses: Counter = Counter()


def produce(state: ProducerState, port: int, stop: threading.Event):
    conn = None
    path = f"/v1/streams/{STREAM}/records?key=producer"
    pad = "p" * 24
    while not stop.is_set():
        ns = range(state.next_n, state.next_n + BATCH)
        state.next_n += BATCH
        body = b"".join(
            json.dumps({"producer": state.p, "n": n, "pad": pad}, separators=(",", ":")).encode()
            + b"\n"
            for n in ns
        )
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", path, body=body, headers={"Content-Type": "application/x-ndjson"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            state.unknown.append(ns)
            if conn is not None:
                conn.close()
                conn = None
            if stop.is_set():
                break
            time.sleep(0.005)
            continue
        state.statuses[resp.status] += 1
        if resp.status == 200:
            try:
                answer = json.loads(data)
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or answer.get("accepted") != BATCH:
                state.problems.append(f"200 with unexpected body {data[:200]!r}")
            else:
                seqs = answer.get("shard_sequences") or {}
                if len(seqs) != 1:
                    state.problems.append(
                        f"one key per batch, but shard_sequences has {len(seqs)} shards: {seqs}"
                    )
                else:
                    (shard, seq), = seqs.items()
                    state.acked_last_seq[ns[-1]] = (int(shard), int(seq))
            state.acked.append(ns)
        else:
            state.rejected.append(ns)
            if resp.status == 503:
                if resp.getheader("Retry-After") is None:
                    state.problems.append("503 without a Retry-After header")
                time.sleep(0.05)
            else:
                state.problems.append(f"unexpected HTTP {resp.status}: {data[:300]!r}")
    if conn is not None:
        conn.close()


def run_producers(states, port):
    stop = threading.Event()
    threads = [
        threading.Thread(target=produce, args=(s, port, stop), daemon=True, name=f"producer-{s.p}")
        for s in states
    ]
    for t in threads:
        t.start()
    return stop, threads


def verify(kinesis, states, probes, cycle):
    """Reads the whole stream back and checks it against what was acknowledged."""
    per_shard = read_stream(kinesis, STREAM)  # also checks per-shard sequence order
    seen = Counter()
    where = defaultdict(set)  # producer → shards
    keys = defaultdict(set)  # producer → partition keys
    order = defaultdict(list)  # producer → [(seq, n)] in shard order
    seq_of = {}
    total = 0
    for sid, recs in per_shard.items():
        for r in recs:
            total += 1
            try:
                e = json.loads(r["Data"])
            except ValueError:
                raise AssertionError(f"cycle {cycle}: undecodable record in {sid}: {r['Data'][:100]!r}")
            p, n = e["producer"], e["n"]
            seen[(p, n)] += 1
            where[p].add(sid)
            keys[p].add(r["PartitionKey"])
            order[p].append((int(r["SequenceNumber"]), n))
            seq_of[(p, n)] = (int(sid.split("-")[1]), int(r["SequenceNumber"]))

    dups = [k for k, c in seen.items() if c > 1]
    assert not dups, f"cycle {cycle}: {len(dups)} events appear more than once, e.g. {dups[:5]}"

    acked = {(s.p, n) for s in states for b in s.acked for n in b}
    acked |= {(p, n) for p, ns in probes.items() for n in ns}
    rejected = {(s.p, n) for s in states for b in s.rejected for n in b}
    unknown = {(s.p, n) for s in states for b in s.unknown for n in b}
    missing = sorted(acked - set(seen))
    assert not missing, (
        f"cycle {cycle}: {len(missing)} of {len(acked)} acknowledged events lost, "
        f"e.g. {missing[:5]}"
    )
    stray = sorted(set(seen) - acked - unknown)
    assert not stray, (
        f"cycle {cycle}: {len(stray)} events stored that were refused or never sent, "
        f"e.g. {stray[:5]} (refused: {len(set(stray) & rejected)})"
    )

    for p in list(where):
        assert len(where[p]) == 1, f"cycle {cycle}: producer {p} (one key) spread over {where[p]}"
        assert len(keys[p]) == 1, f"cycle {cycle}: producer {p} has partition keys {keys[p]}"
    for s in states:
        ns = [n for _, n in order[s.p] if (s.p, n) in acked]
        bad = [(a, b) for a, b in zip(ns, ns[1:]) if b <= a]
        assert not bad, (
            f"cycle {cycle}: producer {s.p}: acknowledged n not increasing by sequence number, "
            f"e.g. {bad[:5]}"
        )

    # Batches in flight at the kill: all or nothing is not promised; report it.
    partial = []
    for s in states:
        for b in s.unknown:
            present = sum(1 for n in b if (s.p, n) in seen)
            if 0 < present < len(b):
                partial.append((s.p, b.start, present))
    seq_mismatch = []
    for s in states:
        for last_n, (shard, seq) in s.acked_last_seq.items():
            if seq_of.get((s.p, last_n)) != (shard, seq):
                seq_mismatch.append((s.p, last_n, (shard, seq), seq_of.get((s.p, last_n))))
    in_flight_kept = sum(1 for k in unknown if k in seen)
    print(
        f"cycle {cycle}: {total} records, {len(acked)} acknowledged, "
        f"{in_flight_kept}/{len(unknown)} unacknowledged in-flight events kept, "
        f"{len(rejected)} refused, partial in-flight batches: {partial[:5]}"
    )
    last_seq = {sid: (int(recs[-1]["SequenceNumber"]) if recs else None) for sid, recs in per_shard.items()}
    return total, seq_mismatch, last_seq


def test_kill9_recovery_cycles(server):
    kinesis = LiveKinesis(server, bulk=True)  # boto3, with cheap timestamp parsing
    server.sql(f"CREATE STREAM {STREAM} WITH (shards = 4, format = 'json')")
    states = [ProducerState(p) for p in range(PRODUCERS)]
    probes: dict[str, list[int]] = {}
    rng = random.Random()
    seq_mismatches = []
    t0 = time.monotonic()

    for cycle in range(1, CYCLES + 1):
        stop, threads = run_producers(states, server.port)
        time.sleep(rng.uniform(2.0, 2.5))
        acked_before_kill = sum(len(s.acked) for s in states)
        server.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), f"{t.name} hung after the kill"
        assert acked_before_kill > 0, f"cycle {cycle}: no batch acknowledged in 2 s"

        server.start(server.data_dir)
        assert [sid for sid, _, _ in shard_ranges(kinesis, STREAM)] == [
            f"shardId-{i:012d}" for i in range(4)
        ], "the stream's shards changed across recovery"
        total, mism, last_seq = verify(kinesis, states, probes, cycle)
        seq_mismatches += mism

        # The recovered server takes new writes, and they are readable after the old ones.
        probe = f"probe-{cycle}"
        ns = list(range(50))
        body = b"".join(
            json.dumps({"producer": probe, "n": n}).encode() + b"\n" for n in ns
        )
        status, _, answer = server.ingest(STREAM, body, key="producer")
        assert status == 200 and answer.get("accepted") == 50, (
            f"cycle {cycle}: write after recovery → {status}: {answer!r}"
        )
        probes[probe] = ns
        (shard, seq), = ((int(k), int(v)) for k, v in answer["shard_sequences"].items())
        sid = f"shardId-{shard:012d}"
        last_old = last_seq[sid]
        if last_old is None:
            new = read_shard(kinesis, STREAM, sid)
        else:
            new = read_shard(
                kinesis, STREAM, sid, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(last_old)
            )
        got = [json.loads(r["Data"]) for r in new]
        assert [(e["producer"], e["n"]) for e in got] == [(probe, n) for n in ns], (
            f"cycle {cycle}: after recovery, {sid} past sequence {last_old} holds "
            f"{got[:3]}... instead of exactly the 50 new events"
        )

    problems = [f"producer {s.p}: {m}" for s in states for m in s.problems]
    assert not problems, f"protocol problems while producing: {problems[:10]}"
    assert not seq_mismatches, (
        f"{len(seq_mismatches)} acknowledged batches whose answered shard_sequences differ from "
        f"where the batch's last event was read (producer, n, answered, read): {seq_mismatches[:5]}"
    )
    print(
        f"{CYCLES} kill -9 cycles in {time.monotonic() - t0:.1f} s; statuses: "
        f"{sum((s.statuses for s in states), Counter())}"
    )
