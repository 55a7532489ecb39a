"""Worker processes for the contract suite: real ``run --drain`` commands on one shared
PostgreSQL ledger, started, killed and waited for (every wait bounded)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer

# Short on purpose: the suite exercises every wait of a drain within seconds.
LEASE = 2.0  # the shared ledger's lease (?lease=)
SETTLE = 0.05  # FEEDBACK_PIPELINE_SETTLE
RECONCILE_EVERY = 0.3  # --reconcile-every
CLAIM_IDLE = 0.5  # --claim-idle
TIMEOUT = 2.0  # --timeout: a dead worker's last request may take this long after its lease
#: The documented bound (docs/explanation/drain-bound.md): a drain ends within this once
#: nothing more is published.
BOUND = LEASE + TIMEOUT + SETTLE + RECONCILE_EVERY + CLAIM_IDLE
#: What a worker process needs on top of the bound: starting Python and connecting (about a
#: second), its own requests, and a loaded two-core machine (other test runs).
SLACK = 6.0
#: The longest any wait of the suite lasts.
DEADLINE = 60.0


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[str]
    out: Path
    started: float

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace")


@dataclass
class Workers:
    """Starts ``run --drain`` workers; ``ended`` maps a name to how long it ran."""

    api: FakeServer
    ledger: str
    tmp: Path
    running: dict[str, Worker] = field(default_factory=dict)

    def env(self, token: str = DEFAULT_AUTH_TOKEN) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "TWILIO_"))}
        env.update(
            TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=token,
            FEEDBACK_PIPELINE_SETTLE=str(SETTLE),
            FEEDBACK_PIPELINE_TIMEOUT=str(TIMEOUT),
            FEEDBACK_PIPELINE_BACKOFF="0.01",
            FEEDBACK_PIPELINE_MAX_BACKOFF="0.05",
            FEEDBACK_PIPELINE_BATCH_SIZE="4",
        )
        return env

    def start(self, name: str, url: str, *extra: str, token: str = DEFAULT_AUTH_TOKEN) -> Worker:
        command = [
            sys.executable, "-m", "pipeline", "run", url, "--base-url", self.api.url,
            "--ledger", self.ledger, "--drain", "--no-progress", "--log-every", "0.2",
            "--concurrency", "2", "--claim-idle", str(CLAIM_IDLE),
            "--reconcile-every", str(RECONCILE_EVERY), "--max-invalid", "1000",
            "--max-failed", "1000", "--report", str(self.tmp / f"{name}.json"), *extra,
        ]  # fmt: skip
        out = self.tmp / f"{name}.out"
        with out.open("w") as sink:
            proc = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, text=True, env=self.env(token)
            )
        worker = Worker(name, proc, out, time.monotonic())
        self.running[name] = worker
        return worker

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.out").read_text(errors="replace")

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        """Poll (never a bare sleep) until ``done()``; fails after :data:`DEADLINE`."""
        deadline = time.monotonic() + DEADLINE
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def kill(self, name: str) -> None:
        worker = self.running.pop(name)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=DEADLINE)

    def finish(self, name: str, since: float, limit: float = BOUND + SLACK) -> tuple[int, float]:
        """Wait for a worker's end: its exit code and the seconds from ``since`` to its end,
        which must be within ``limit`` (the drain bound, by default)."""
        worker = self.running.pop(name)
        try:
            code = worker.proc.wait(timeout=max(0.1, limit + since - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
            raise AssertionError(
                f"{name} still running {limit:.1f} s after it could end:\n{worker.output[-3000:]}"
            ) from None
        return code, time.monotonic() - since

    def stop_all(self) -> None:
        for worker in self.running.values():
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        self.running.clear()
