"""``status``'s judgment of each run and of the job: what the ledger's rows mean now.

A run's state, on the database's clock (a shared ledger) or this host's (SQLite):

- ``running``: alive (its lease holds; SQLite: it holds the file's lock) and settling records;
- ``stopping``: alive, and ``stop`` asked it to end;
- ``stalled``: alive as far as its lease goes, but no heartbeat for ``SILENT_S`` (killed or
  paused a moment ago: its lease has not run out yet), or records in flight and none settled
  for ``stalled_after`` seconds (a stuck API, a stuck worker);
- ``ended``: it wrote its end (exit code, counts); ``lease lost`` if it ended so;
- ``killed``: no end and no live lease (killed, its host lost; ``paused`` instead when its
  process is on this host and still there: it finds its lease lost if it resumes).

The job is ``complete`` when every record of it is settled (none in flight or unknown) and
its queue holds nothing (no backlog, no pending entry) or, without a queue to read, no run of
it is alive any more; and it has at least one record.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from pipeline.ledger.base import RunInfo
from pipeline.ledger.fleet import FleetRun, FleetView
from pipeline.ledger.lease import HEARTBEAT_S
from pipeline.sources.queue_depth import Depth

#: No heartbeat for this long: the run is not running normally, whatever its lease says.
SILENT_S = 3 * HEARTBEAT_S
#: SQLite: a heartbeat older than this says the run is no longer alive.
ALIVE_WITHIN_S = max(10.0, 5 * HEARTBEAT_S)
ALIVE = ("running", "stopping", "stalled")
SHOWN_COUNTS = ("read", "sent", "skipped", "duplicate", "invalid", "failed", "unknown",
                "released", "in_flight", "retired")  # fmt: skip


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def from_runs(runs: list[RunInfo], holder_pid: int | None, counts: dict[str, int]) -> FleetView:
    """A ledger without a fleet view (SQLite) as one: its runs, the lock holder's pid."""
    now = datetime.now(UTC).timestamp()
    rows = []
    for run in runs:
        seen = run.last_seen if run.last_seen is not None else epoch(run.started_at)
        alive = run.finished_at is None and holder_pid is not None and seen is not None
        alive = alive and now - (seen or 0) <= ALIVE_WITHIN_S
        rows.append(
            FleetRun(run.run_id, run.command, None, holder_pid if alive else None, None, None,
                     None, run.started_at, run.finished_at, seen, None,
                     now + HEARTBEAT_S if alive else None, None, run.summary or {},
                     run.summary, 0)
        )  # fmt: skip
    return FleetView(now, rows, counts)


def judge(run: FleetRun, now: float, stalled_after: float) -> tuple[str, str]:
    """The run's state and, in words, why."""
    summary = run.summary or {}
    if run.finished_at is not None:
        aborted = str(summary.get("aborted") or "")
        if aborted.startswith("lease lost"):
            return "lease lost", aborted
        return "ended", f"exit {summary.get('exit_code')}"
    if run.lease_until is not None and run.lease_until >= now:
        silent = now - run.last_seen if run.last_seen is not None else 0.0
        if silent > SILENT_S:
            return "stalled", (
                f"no heartbeat for {silent:.0f} s (killed or paused?); its lease runs out in "
                f"{run.lease_until - now:.0f} s, then others settle its records"
            )
        if run.stop_requested:
            return "stopping", f"asked to stop ({run.stop_requested})"
        since = now - (run.last_progress or epoch(run.started_at) or now)
        if int(run.counts.get("in_flight", 0)) > 0 and since > stalled_after:
            return "stalled", f"records in flight and none settled for {since:.0f} s"
        return "running", ""
    state = "paused" if _here_and_alive(run) else "killed"
    left = (
        f"{run.open_records} of its records await reconciliation by the other workers or "
        "the next run"
        if run.open_records
        else "none of its records is left uncertain"
    )
    return state, f"ended without a summary; {left}"


def _here_and_alive(run: FleetRun) -> bool:
    if run.pid is None or run.host != socket.gethostname():
        return False
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def complete(view: FleetView, states: list[str], depth: Depth | None) -> bool:
    counts = view.counts
    settled = not counts.get("in_flight") and not counts.get("unknown")
    if not sum(counts.values()) or not settled:
        return False
    if depth is not None:
        return depth.empty
    return not any(state in ALIVE for state in states)


def worker(run: FleetRun, now: float, stalled_after: float) -> dict[str, Any]:
    """One run as ``status --json`` gives it (times in ISO 8601, UTC)."""
    state, why = judge(run, now, stalled_after)
    summary = run.summary or {}
    return {
        "run_id": run.run_id,
        "command": run.command,
        "host": run.host,
        "pid": run.pid,
        "consumer": run.consumer,
        "job": run.job,
        "source": run.source,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "last_seen": iso(run.last_seen),
        "last_progress": iso(run.last_progress),
        "lease_until": iso(run.lease_until),
        "state": state,
        "why": why,
        "alive": state in ALIVE,
        "exit_code": summary.get("exit_code"),
        "counts": {k: run.counts[k] for k in SHOWN_COUNTS if k in run.counts},
        "open_records": run.open_records,
        "aborted": summary.get("aborted"),
    }


def worker_line(row: dict[str, Any], now: float) -> str:
    """One run in a line: who, its state, when it last settled a record, its counts."""
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row["counts"].items())
    who = [row["run_id"]]
    if row["host"]:
        who.append(f"{row['host']}:{row['pid']}" if row["pid"] else row["host"])
    elif row["pid"]:
        who.append(f"pid {row['pid']}")
    if row["consumer"]:
        who.append(f"consumer {row['consumer']}")
    line = f"{' '.join(who)}  {row['command']} {row['state'].upper()}"
    if row["why"]:
        line += f" ({row['why']})"
    progressed = epoch(row["last_progress"])
    if progressed is not None and row["alive"]:
        line += f"; last record settled {max(0.0, now - progressed):.0f} s ago"
    line += f"; started {row['started_at']}"
    if counts and row["state"] in ("killed", "paused"):
        counts = f"at its last heartbeat: {counts}"
    return line + (f"; {counts}" if counts else "")
