"""Operating a fleet: three drain workers on one Redis stream and one PostgreSQL ledger, seen
through `status` during the run, after a kill and at completion, and ended by `stop`.

Judged by the fake API's stored records and by what the queue and the ledger hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp_helpers import Msg, Queue, unique_queue
from conftest import assert_exactly_once, make_rows
from fleet import Fleet, Worker, in_flight_of, lease_expired
from pg_helpers import PgSchema, pg_schema
from redis_helpers import Stream, stream

from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.ledger import SqliteLedger

__all__ = ["pg_schema", "stream"]  # fixtures, used by name
OK = "aia_asst_test"
JOB = "backfill-1"


@pytest.fixture
def api(clean_env: None) -> Iterator[FakeServer]:
    with FakeServer(FakeState(faults=Faults(seed=3), known_assistants=[OK])) as server:
        yield server


@pytest.fixture
def fleet(api: FakeServer, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(api, tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120
    )


def _status(ledger: str, *extra: str) -> dict[str, Any]:
    done = _cli("status", "--ledger", ledger, "--job", JOB, "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _row(status: dict[str, Any], worker: Worker) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [r for r in status["runs"] if r["run_id"] == worker.run_id()]
    assert len(rows) == 1, status
    return rows[0]


def _start(
    fleet: Fleet, stream: Stream, ledger: str, names: list[str], *extra: str
) -> list[Worker]:
    return [
        fleet.start(name, stream.url(name), ledger, "--job", JOB, "--rate", "40", "--quiet",
                    "--log-every", "0.5", *extra)
        for name in names
    ]  # fmt: skip


def test_status_shows_each_worker_during_a_run_after_a_kill_and_at_completion(
    api: FakeServer, fleet: Fleet, stream: Stream, pg_schema: PgSchema, tmp_path: Path
) -> None:
    rows = make_rows(2400, assistant=OK)  # at 3 x 40/s: about 20 s, time to look at them
    stream.add(*rows)
    ledger = pg_schema.url(lease="2")
    textfile = tmp_path / "w0.prom"
    workers = _start(fleet, stream, ledger, ["w0"], "--metrics-textfile", str(textfile))
    workers += _start(fleet, stream, ledger, ["w1", "w2"])

    fleet.wait(lambda: all(w.run_id() for w in workers), "every worker to start")

    def all_settled_some() -> bool:
        found = _status(ledger)
        mine = {r["run_id"]: r for r in found["runs"]}
        return all(
            w.run_id() in mine and mine[w.run_id()]["counts"].get("sent", 0) > 0 for w in workers
        )

    fleet.wait(all_settled_some, "every worker to settle records")
    during = _status(ledger)
    text = _cli("status", "--ledger", ledger, "--job", JOB).stdout
    fleet.note("status during the run:\n" + text)
    for worker in workers:
        row = _row(during, worker)
        assert row["state"] == "running", row
        assert row["alive"], row
        assert row["consumer"] == worker.name, row
        assert row["pid"] == worker.proc.pid, row
        assert row["host"], row
        assert row["job"] == JOB, row
        assert row["last_progress"], row
        assert row["counts"]["read"] > 0  # live counts, not {}
        assert "T" in row["last_seen"]  # an ISO time, like the others
    assert sorted(h["pid"] for h in during["holder"]) == sorted(w.proc.pid for w in workers)
    assert during["queue"] is not None
    assert during["queue"]["pending"] is not None
    assert not during["complete"]
    assert "consumer w1" in text
    assert "RUNNING" in text
    assert "not complete" in text

    victim = workers[1]
    fleet.signal(victim, signal.SIGKILL)
    victim.proc.wait(10)
    left_in_flight = in_flight_of(pg_schema, victim.run_id())
    fleet.wait(lambda: lease_expired(pg_schema, victim.run_id()), "the victim's lease to expire")
    after_kill = _status(ledger)
    fleet.note("status after the kill:\n" + _cli("status", "--ledger", ledger, "--job", JOB).stdout)
    killed = _row(after_kill, victim)
    assert (killed["state"], killed["alive"]) == ("killed", False), killed
    assert killed["counts"]["read"] > 0  # its counts as of its last heartbeat, not lost
    assert victim.proc.pid not in [h["pid"] for h in after_kill["holder"]]

    for worker in (workers[0], workers[2]):
        assert fleet.end(worker, 120) == 0, fleet
    done = _cli("status", "--ledger", ledger, "--job", JOB, "--wait", "60")
    fleet.note("status at completion:\n" + done.stdout)
    assert done.returncode == 0, fleet
    assert "complete: every record settled" in done.stdout
    final = _status(ledger)
    assert final["complete"]
    assert final["queue"] == {
        "source": f"{stream.server}?stream={stream.name}&group=workers",
        "backlog": 0,
        "pending": 0,
    }
    assert final["sent"] == len(rows)
    assert final["in_flight"] == final["unknown"] == 0
    killed = _row(final, victim)
    assert killed["open_records"] == 0
    assert "none of its records" in killed["why"]
    assert_exactly_once(api, rows)
    print(fleet.events and "\n".join(fleet.events))  # the three views, for the record

    # What the logs said as it happened.
    survivors = workers[0].output() + workers[2].output()
    assert f"pid {workers[0].proc.pid}, consumer w0, job {JOB}" in workers[0].output()
    assert "takeover: " in survivors
    assert ("notice: reconciled " in survivors) == (left_in_flight > 0), left_in_flight
    assert "is this worker's own budget" in workers[0].output()
    assert ", duplicate " in workers[0].output()  # the progress line
    metrics = textfile.read_text()
    run0 = workers[0].run_id()
    assert f'feedback_run_info{{consumer="w0",run="{run0}"}} 1.0' in metrics, metrics
    assert "feedback_heartbeat_timestamp_seconds{" in metrics
    assert "feedback_last_progress_timestamp_seconds{" in metrics
    assert "feedback_queue_pending{" in metrics


def test_stop_ends_every_worker_gracefully_and_loses_nothing(
    api: FakeServer, fleet: Fleet, stream: Stream, pg_schema: PgSchema
) -> None:
    rows = make_rows(1500, assistant=OK)
    stream.add(*rows)
    ledger = pg_schema.url(lease="2")
    # No takeover while they stop (one may hear the request a second after another): each
    # consumer keeps exactly what its worker left.
    workers = _start(fleet, stream, ledger, ["w0", "w1", "w2"], "--claim-idle", "60")
    fleet.wait(lambda: api.state.stored_count >= 60, "records stored")
    stopped = _cli("stop", "--ledger", ledger, "--job", JOB, "--wait", "30")
    fleet.note("stop:\n" + stopped.stdout + stopped.stderr)
    assert stopped.returncode == 0, fleet
    assert stopped.stdout.count("asked to stop: run ") == 3, fleet
    assert "all 3 workers ended" in stopped.stdout
    for worker in workers:
        assert fleet.end(worker, 30) == 0, fleet  # a graceful end: exit 0, not an abort
        assert "stop requested" in worker.output()
        assert "stopped by request" in worker.output()
    assert api.state.stored_count < len(rows)  # it did stop early
    assert api.state.duplicates() == {}
    # What each stopped worker did not send stays pending on its consumer, counted by its
    # summary: released (claimed, not sent) and read ahead (read, not claimed).
    consumers = {
        c["name"].decode(): int(c["pending"])
        for c in stream.redis.xinfo_consumers(stream.name, stream.group)
    }
    for worker in workers:
        left = worker.output()
        released = _number(left, "taken but not sent before the stop")
        ahead = _number(left, "more read ahead and not claimed")
        assert consumers[worker.name] == released + ahead, (worker.name, consumers, left)
    # The next start finishes the job: every record stored once.
    rest = fleet.start("w3", stream.url("w3"), ledger, "--job", JOB, "--claim-idle", "0.1")
    assert fleet.end(rest, 120) == 0, fleet
    assert_exactly_once(api, rows)
    assert stream.pending() == 0
    assert _status(ledger)["complete"]


def test_stop_on_rabbitmq_requeues_what_was_not_sent(
    api: FakeServer, fleet: Fleet, pg_schema: PgSchema
) -> None:
    rows = make_rows(1500, assistant=OK)
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(contextlib.closing(_QueueCloser(unique_queue())))
        q = queue.queue
        q.publish([Msg(json.dumps(r).encode(), message_id=uuid.uuid4().hex) for r in rows])
        ledger = pg_schema.url(lease="2")
        workers = [
            fleet.start(name, q.url(), ledger, "--job", JOB, "--rate", "40", "--quiet")
            for name in ("w0", "w1", "w2")
        ]
        fleet.wait(lambda: api.state.stored_count >= 60, "records stored")
        stopped = _cli("stop", "--ledger", ledger, "--wait", "30")
        assert stopped.returncode == 0, fleet
        assert "all 3 workers ended" in stopped.stdout, fleet
        for worker in workers:
            assert fleet.end(worker, 30) == 0, fleet
        stored = api.state.stored_count
        assert stored < len(rows)
        assert api.state.duplicates() == {}
        # Every consumer is gone: what they did not settle is ready on the queue again.
        assert q.ready() == len(rows) - stored, fleet
        rest = fleet.start("w3", q.url(), ledger, "--job", JOB)
        assert fleet.end(rest, 120) == 0, fleet
        assert_exactly_once(api, rows)
        assert q.ready() == 0


class _QueueCloser:
    """A unique queue (a generator fixture's body) for one test, deleted at close."""

    def __init__(self, made: Iterator[Queue]) -> None:
        self._made = made
        self.queue = next(made)

    def close(self) -> None:
        next(self._made, None)


def _number(output: str, phrase: str) -> int:
    found = [line for line in output.splitlines() if phrase in line]
    return int(found[-1].split()[0]) if found else 0


def test_stop_with_no_worker_alive_and_on_an_sqlite_ledger(
    clean_env: None, pg_schema: PgSchema, tmp_path: Path
) -> None:
    nobody = _cli("stop", "--ledger", pg_schema.url())
    assert nobody.returncode == 2
    assert "no ledger at" in nobody.stderr
    sqlite = tmp_path / "l.sqlite3"
    asyncio.run(_sqlite_ledger(sqlite))
    refused = _cli("stop", "--ledger", str(sqlite))
    assert refused.returncode == 2
    assert "SQLite ledger has one run at a time" in refused.stderr


async def _sqlite_ledger(path: Path) -> None:
    ledger = await SqliteLedger.open(str(path), "r1", command="run")
    await ledger.close()
