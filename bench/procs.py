"""Child processes: run one, wait for it with ``os.wait4``, keep its time, CPU and peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data import ASSISTANT_ID
from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

CREDENTIALS = (DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
CHILD_TIMEOUT = 900.0


class BenchError(RuntimeError):
    """A benchmark could not measure what it meant to (a child failed, a server died...)."""


@dataclass(frozen=True, slots=True)
class Child:
    """What one finished child process cost, and what it printed."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str
    stderr: str
    report: dict[str, Any] = field(default_factory=dict)

    def tail(self) -> str:
        return (self.stderr or self.stdout).strip()[-600:]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_PIPELINE_")}
    env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"] = CREDENTIALS
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    # Children import bench.* wherever the suite was started from.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_child(argv: Sequence[str], *, ok_codes: Sequence[int] = (0,)) -> Child:
    """Run ``argv`` to the end; stdout/stderr go through temporary files (no pipe deadlock)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=child_env())
        status, usage = _wait4(proc)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        result = Child(
            tuple(argv),
            status,
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024.0,  # Linux reports kilobytes
            out.read(),
            err.read(),
        )
    if status not in ok_codes:
        raise BenchError(f"{' '.join(argv[:4])}... exited {status}: {result.tail()}")
    return result


def _wait4(proc: subprocess.Popen[bytes]) -> tuple[int, Any]:
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            proc.returncode = code  # reaped here: tell Popen so it does not wait again
            return code, usage
        if time.monotonic() > deadline:
            proc.kill()
            raise BenchError(f"child {proc.args!r} still running after {CHILD_TIMEOUT:.0f} s")
        time.sleep(0.005)


def pipeline_run(
    csv_path: Path,
    ledger: Path,
    *,
    base_url: str | None,
    concurrency: int = 16,
    rate: float = 0.0,
    extra: Sequence[str] = (),
) -> Child:
    """``python -m pipeline run`` on one file; its JSON report is parsed into ``report``."""
    report = ledger.with_suffix(".report.json")
    argv = [sys.executable, "-m", "pipeline", "run", str(csv_path), "--no-progress"]
    argv += ["--assistant-id", ASSISTANT_ID, "--ledger", str(ledger), "--report", str(report)]
    argv += ["--concurrency", str(concurrency), "--rate", str(rate), *extra]
    if base_url is None:
        argv.append("--dry-run")
    else:
        argv += ["--base-url", base_url]
    # Exit 1 means "some records failed/were not sent": still a measurement, judged by counts.
    child = run_child(argv, ok_codes=(0, 1))
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"pipeline wrote no readable report: {exc}: {child.tail()}") from exc
    return _with_report(child, data)


def module_run(module: str, args: Sequence[str]) -> Child:
    """``python -m bench.<module> ARGS``; the module prints one JSON object on stdout."""
    child = run_child([sys.executable, "-m", module, *args])
    try:
        data = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"{module} printed no JSON result: {child.tail()}") from exc
    return _with_report(child, data)


def _with_report(child: Child, data: Any) -> Child:
    if not isinstance(data, dict):
        raise BenchError(f"{child.argv[:4]}: report is not a JSON object")
    return Child(
        child.argv,
        child.returncode,
        child.wall_s,
        child.cpu_s,
        child.maxrss_mb,
        child.stdout,
        child.stderr,
        data,
    )


def duration(child: Child) -> float:
    """The client's own measure of its work (startup excluded), else the wall time."""
    value = child.report.get("duration_s")
    return float(value) if isinstance(value, int | float) and value > 0 else child.wall_s


def count(child: Child, name: str) -> int:
    value = child.report.get(name, 0)
    return int(value) if isinstance(value, int) else 0
