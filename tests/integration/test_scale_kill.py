"""Three drain workers on one queue and one PostgreSQL ledger; one is killed with ``kill -9``
mid-run and not restarted. The two survivors finish the job by themselves: judged by the fake
API's own counts (each valid entry stored once, no duplicate) and by the broker (every entry
acked or dead-lettered, nothing left pending)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from amqp_helpers import Msg, Queue, unique_queue
from conftest import assert_exactly_once, make_rows, wait_for
from pg_helpers import PgSchema, pg_schema
from redis_helpers import Stream, stream

from pipeline.fake import FakeServer, FakeState, Faults

__all__ = ["pg_schema", "stream"]  # fixtures, used by name
OK = "aia_asst_test"
ROWS, BAD = 300, 5
NAMES = ["w0", "w1", "w2"]
VICTIM = "w1"


@pytest.fixture
def api(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")
    monkeypatch.setenv("FEEDBACK_PIPELINE_BATCH_SIZE", "10")  # small reads: all workers get some
    # The survivors look for a dead worker's records this often (the default is 15 s).
    monkeypatch.setenv("FEEDBACK_PIPELINE_RECONCILE_EVERY", "0.3")
    # A dead worker's records are settled once its lease and its requests' time bound passed.
    monkeypatch.setenv("FEEDBACK_PIPELINE_TIMEOUT", "2")
    with FakeServer(FakeState(faults=Faults(seed=7), known_assistants=[OK])) as server:
        # Slow enough that the victim always has requests on the wire when it is killed.
        server.state.update_faults({"latency_ms": 40})
        yield server


@pytest.fixture
def queue() -> Iterator[Queue]:
    yield from unique_queue()


def _workers(
    api: FakeServer, source: Callable[[str], str], ledger: str, tmp_path: Path
) -> dict[str, subprocess.Popen[str]]:
    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", "run", source(name), "--base-url", api.url,
                "--ledger", ledger, "--no-progress", "--drain", "--concurrency", "4",
                "--claim-idle", "0.5", "--max-invalid", str(BAD),
                "--report", str(tmp_path / f"{name}.json")]  # fmt: skip

    procs = {}
    for name in NAMES:
        # Output to a file: the victim's run id is read from it while it runs.
        with (tmp_path / f"{name}.out").open("w") as out:
            procs[name] = subprocess.Popen(
                command(name), stdout=out, stderr=subprocess.STDOUT, text=True
            )
    return procs


def _count(schema: PgSchema, sql: str, *args: object) -> int:
    try:
        return int(asyncio.run(schema.fetch(sql, *args))[0][0])
    except asyncpg.UndefinedTableError:  # the first worker has not created the tables yet
        return 0


def _kill_mid_run(
    api: FakeServer, procs: dict[str, subprocess.Popen[str]], schema: PgSchema, tmp_path: Path
) -> int:
    """Kill the victim while all three work and it holds records in flight (polled, never
    slept); returns how many it left in flight."""
    victim, output = procs[VICTIM], tmp_path / f"{VICTIM}.out"
    found: list[str] = []

    def started() -> bool:
        found[:] = re.findall(r"run started: run (\w+)", output.read_text())
        return bool(found)

    wait_for(started, victim, "the victim's run id")
    run_id = found[0]
    in_flight = "SELECT count(*) FROM {s}.records WHERE state = 'in_flight' AND run_id = $1"
    working = "SELECT count(DISTINCT run_id) FROM {s}.records WHERE state <> 'invalid'"

    def mid_run() -> bool:
        return (
            api.state.posts_received >= ROWS // 5
            and _count(schema, working) == len(NAMES)
            and _count(schema, in_flight, run_id) > 0
        )

    wait_for(mid_run, victim, "all three workers sending")
    assert victim.poll() is None, "the victim ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    # Dead now, and its lease still runs: nothing changes its records yet.
    return _count(schema, in_flight, run_id)


def _survivors(procs: dict[str, subprocess.Popen[str]], tmp_path: Path) -> list[dict[str, Any]]:
    reports = []
    for name, proc in procs.items():
        if name == VICTIM:
            continue
        proc.communicate(timeout=90)
        assert proc.returncode == 0, (tmp_path / f"{name}.out").read_text()
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    return reports


def _stop(procs: dict[str, subprocess.Popen[str]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _check_settled(
    api: FakeServer, rows: list[dict[str, Any]], reports: list[dict[str, Any]]
) -> None:
    assert_exactly_once(api, rows)
    assert api.state.stored_count == len(rows)
    assert sum(api.state.duplicates().values()) == 0
    # The victim left records in flight; the survivors settled them (found stored, or not
    # stored and then sent) once its lease expired, without a restart.
    assert sum(r["reconciled_found"] + r["reconciled_missing"] for r in reports) > 0
    assert all(r["unknown"] == 0 and r["in_flight"] == 0 for r in reports)
    assert sum(r["invalid"] for r in reports) == BAD


def _print(kind: str, api: FakeServer, reports: list[dict[str, Any]], left: int) -> None:
    found = sum(r["reconciled_found"] for r in reports)
    missing = sum(r["reconciled_missing"] for r in reports)
    print(
        f"{kind} kill -9: records {ROWS} (+{BAD} invalid), kills 1, left in flight {left}, "
        f"settled by survivors {found} found stored + {missing} not stored, POSTs received "
        f"{api.state.posts_received}, stored {api.state.stored_count}, duplicates "
        f"{sum(api.state.duplicates().values())}"
    )


def test_redis_stream_three_workers_one_killed_the_survivors_finish(
    api: FakeServer, stream: Stream, pg_schema: PgSchema, tmp_path: Path
) -> None:
    rows = make_rows(ROWS, assistant=OK)
    stream.add(*rows)
    stream.add(*({"session_id": f"bad{i}", "score": "high"} for i in range(BAD)))
    procs = _workers(api, stream.url, pg_schema.url(lease="2"), tmp_path)
    try:
        left = _kill_mid_run(api, procs, pg_schema, tmp_path)
        held = stream.redis.xpending_range(stream.name, stream.group, "-", "+", 1000, VICTIM)
        assert left > 0, "the victim held no records at the kill"
        assert held, "the victim held no records at the kill"
        reports = _survivors(procs, tmp_path)
    finally:
        _stop(procs)
    _check_settled(api, rows, reports)
    # Every entry was delivered to the group and acked (or dead-lettered, then acked).
    group = next(g for g in stream.redis.xinfo_groups(stream.name) if g["name"] == b"workers")
    assert group["last-delivered-id"] == stream.entries()[-1][0]
    assert stream.pending() == 0
    assert len(stream.dead_letters()) == BAD
    _print("redis", api, reports, left)


def test_rabbitmq_queue_three_workers_one_killed_the_survivors_finish(
    api: FakeServer, queue: Queue, pg_schema: PgSchema, tmp_path: Path
) -> None:
    rows = make_rows(ROWS, assistant=OK)
    bodies = [Msg(json.dumps(row).encode(), message_id=uuid.uuid4().hex) for row in rows]
    bad = [Msg(b"not json", message_id=f"bad{i}") for i in range(BAD)]
    queue.publish([*bodies, *bad])
    procs = _workers(api, lambda _: queue.url(), pg_schema.url(lease="2"), tmp_path)
    try:
        left = _kill_mid_run(api, procs, pg_schema, tmp_path)
        assert left > 0, "the victim held no records at the kill"
        reports = _survivors(procs, tmp_path)
    finally:
        _stop(procs)
    _check_settled(api, rows, reports)
    # Every consumer is gone, so a message still unacked would be ready again: none is.
    assert queue.ready() == 0
    assert len(queue.take_all(queue.dead)) == BAD
    _print("rabbitmq", api, reports, left)
