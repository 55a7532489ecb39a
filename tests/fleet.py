"""Drain workers as real processes on one queue and one PostgreSQL ledger, for the stories
that combine faults: pause, kill, a stalled or cut link to the ledger.

Every wait polls a condition with a deadline (never a bare sleep), and a story's events are
kept so that a failing test prints what happened when.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from pg_helpers import PgSchema

from pipeline.fake import FakeServer

#: Fast settings for the stories: a 2 s lease (the URL's ``lease=2``), requests bounded at
#: 2 s, reconciliation of others' leftovers every 0.3 s, takeover after 0.5 s idle.
STORY_ENV = {
    "FEEDBACK_PIPELINE_SETTLE": "0.05",
    "FEEDBACK_PIPELINE_BATCH_SIZE": "10",
    "FEEDBACK_PIPELINE_RECONCILE_EVERY": "0.3",
    "FEEDBACK_PIPELINE_TIMEOUT": "2",
    "FEEDBACK_PIPELINE_GRACE": "2",
}
LEASE = "2"


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[str]
    out: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def run_id(self) -> str | None:
        found = re.findall(r"run started: run (\w+)", self.output())
        return found[0] if found else None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass(repr=False)
class Fleet:
    api: FakeServer
    tmp: Path
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:7.2f}s {what}")

    def start(self, name: str, source: str, ledger: str, *extra: str) -> Worker:
        command = [sys.executable, "-m", "pipeline", "run", source, "--base-url", self.api.url,
                   "--ledger", ledger, "--no-progress", "--drain", "--concurrency", "4",
                   "--claim-idle", "0.5", *extra]  # fmt: skip
        out = self.tmp / f"{name}.out"
        env = {**os.environ, **STORY_ENV}
        with out.open("w") as sink:
            proc = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env
            )
        worker = Worker(name, proc, out)
        self.workers.append(worker)
        self.note(f"start {name} (pid {proc.pid})")
        return worker

    def signal(self, worker: Worker, sig: signal.Signals) -> None:
        if worker.alive:
            worker.proc.send_signal(sig)
            self.note(f"{sig.name} {worker.name}")

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{self}")
            time.sleep(0.01)

    def end(self, worker: Worker, timeout: float) -> int:
        """The worker's exit code, once it ended by itself within ``timeout`` seconds."""
        try:
            worker.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{worker.name} still running after {timeout:g} s\n{self}"
            ) from None
        self.note(f"{worker.name} exited {worker.proc.returncode}")
        return worker.proc.returncode

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive:
                with_cont = worker.proc.pid
                os.kill(with_cont, signal.SIGCONT)
                worker.proc.kill()
            worker.proc.wait(10)

    def __repr__(self) -> str:
        outputs = "\n".join(
            f"--- {w.name} (exit {w.proc.poll()}):\n{w.output()[-3000:]}" for w in self.workers
        )
        return "events:\n" + "\n".join(self.events) + "\n" + outputs


def count(schema: PgSchema, sql: str, *args: object) -> int:
    try:
        return int(asyncio.run(schema.fetch(sql, *args))[0][0])
    except asyncpg.UndefinedTableError:  # no worker has created the tables yet
        return 0


def in_flight_of(schema: PgSchema, run_id: str | None) -> int:
    if run_id is None:
        return 0
    return count(
        schema, "SELECT count(*) FROM {s}.records WHERE state = 'in_flight' AND run_id = $1", run_id
    )


def lease_expired(schema: PgSchema, run_id: str | None) -> bool:
    """Whether the run's lease ran out at the ledger (on the database's clock)."""
    return run_id is not None and bool(
        count(
            schema,
            "SELECT count(*) FROM {s}.runs WHERE run_id = $1 "
            "AND lease_until < extract(epoch FROM clock_timestamp())",
            run_id,
        )
    )


def states(schema: PgSchema) -> dict[str, int]:
    rows = asyncio.run(schema.fetch("SELECT state, count(*) FROM {s}.records GROUP BY state"))
    return {r[0]: r[1] for r in rows}


def bodiless(schema: PgSchema) -> int:
    """Rows that need their body (failed, in flight, unknown) but have none: what a write
    over another run's sent row leaves."""
    return count(
        schema,
        "SELECT count(*) FROM {s}.records WHERE state IN ('failed', 'in_flight', 'unknown') "
        "AND body IS NULL",
    )


def summary_of(worker: Worker) -> dict[str, Any]:
    """The counts the worker's summary printed (``run: read N, sent N, ...``)."""
    text = worker.output()
    found = re.findall(r"run: read (\d+), sent (\d+)", text)
    return {"read": int(found[-1][0]), "sent": int(found[-1][1])} if found else {}


def duplicates(api: FakeServer) -> int:
    return sum(api.state.duplicates().values())


def lines_with(worker: Worker, needle: str) -> Sequence[str]:
    return [line for line in worker.output().splitlines() if needle in line]
