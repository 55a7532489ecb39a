"""Faults together, over real sockets: a server that sheds load at once beyond 8 in flight,
the client paused longer than its ``--timeout``, then the server paused as long, in one run
of 64 workers. Each pause left requests the server still held while the client sent more:
read at misleading levels, their errors came as a storm (a request a millisecond per slot),
209 errors and 4 records failed in one run of 1,163 records where 11 were usual.

Judged by the fake API's own counts: every record stored once (or left failed in the ledger
for ``replay``, never both), and the errors a small share of the requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import child_env
from bench.server import ServerProcess

RECORDS = 800
#: Errors per request at most: the first requests' 8, a probe now and then, and what each
#: pause costs (the server holds 8 the client gave up on: about as many shed, and held back).
#: 16-18 of about 820 here (2.0-2.2%); the flow control before these rules, 70-72 of 870.
ERROR_SHARE = 0.05


def _csv(path: Path, n: int) -> Path:
    rows = ["session_id,message_id,score,text"]
    rows += [f"sess_{i},aia_msg_{i},0.5,pause story {i}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _pause(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the fault itself: how long the process does not run
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_shedding_server_and_two_pauses_leave_no_storm(tmp_path: Path) -> None:
    args = ["--latency-ms", "100", "--latency-jitter-ms", "20", "--shed-above", "8"]
    with ServerProcess(tmp_path, extra=args) as server:
        report = tmp_path / "report.json"
        argv = [sys.executable, "-m", "pipeline", "run", str(_csv(tmp_path / "in.csv", RECORDS))]
        argv += ["--assistant-id", "aia_asst_pauses", "--ledger", str(tmp_path / "l.sqlite3")]
        argv += ["--base-url", server.url, "--concurrency", "64", "--rate", "0", "--quiet"]
        argv += ["--timeout", "0.5", "--settle", "0", "--report", str(report)]
        run = subprocess.Popen(argv, env=child_env(), stdout=subprocess.DEVNULL)
        try:
            # Each pause once the run is under way: by the server's own progress, not time.
            for stored, victim in ((200, run.pid), (450, server.pid)):
                while run.poll() is None and server.stats()["stored"] < stored:
                    time.sleep(0.05)
                if run.poll() is None:
                    _pause(victim, 0.8)
            assert run.wait(timeout=120) in (0, 1)
        finally:
            run.kill()
        stats = server.stats()
    summary = json.loads(report.read_text(encoding="utf-8"))
    assert stats["duplicates"] == 0
    # Stored once, or failed in the ledger (a request the client gave up on while paused,
    # found missing by reconciliation: replay sends it); never both, never neither.
    assert stats["stored"] + summary["failed"] == RECORDS
    assert summary["sent"] == stats["stored"]
    errors = stats["responses"].get("503", 0)
    assert errors <= ERROR_SHARE * stats["posts_received"], (errors, stats, summary)


def test_an_overdue_request_gives_its_slot_to_another_worker(tmp_path: Path) -> None:
    # A request judged overdue gives its slot back, but its worker still waits for the
    # answer: with no other worker to take the slot, it stood idle (the limit of 4 sent 3).
    # Answers 0.6 s late (the timeout is 2 s): overdue after 0.1 s, so a fifth request is at
    # the server meanwhile, never a sixth (a quarter of the limit at most is given back).
    args = ["--latency-ms", "20", "--slow-rate", "0.05", "--slow-ms", "600"]
    with ServerProcess(tmp_path, extra=args) as server:
        report = tmp_path / "report.json"
        argv = [sys.executable, "-m", "pipeline", "run", str(_csv(tmp_path / "in.csv", 300))]
        argv += ["--assistant-id", "aia_asst_freed", "--ledger", str(tmp_path / "l.sqlite3")]
        argv += ["--base-url", server.url, "--concurrency", "4", "--rate", "0", "--quiet"]
        argv += ["--timeout", "2", "--settle", "0", "--report", str(report)]
        assert subprocess.run(argv, env=child_env(), timeout=120).returncode == 0
        stats = server.stats()
    summary = json.loads(report.read_text(encoding="utf-8"))
    assert stats["late"] > 0
    assert stats["duplicates"] == 0
    assert summary["sent"] == stats["stored"] == 300
    assert stats["peak_at_work"] == 5, stats
