"""Fixtures shared by the integration tests: a real fake API on a socket, the real CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState, Faults

Content = tuple[str, str, str | None, float | None, str | None]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings or credentials leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("FEEDBACK_PIPELINE_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", DEFAULT_ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEFAULT_AUTH_TOKEN)
    # Fast backoff and no rate cap: tests check behaviour, not speed.
    monkeypatch.setenv("FEEDBACK_PIPELINE_BACKOFF", "0.01")
    monkeypatch.setenv("FEEDBACK_PIPELINE_MAX_BACKOFF", "0.05")
    monkeypatch.setenv("FEEDBACK_PIPELINE_RATE", "100000")


@pytest.fixture
def fake_api() -> Iterator[FakeServer]:
    with FakeServer(FakeState(faults=Faults(seed=1234))) as server:
        yield server


@dataclass
class Cli:
    """Runs the real command line in-process against the fake API."""

    server: FakeServer
    tmp: Path

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.sqlite3"

    def __call__(self, *args: str, stdin: bytes | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)

    def run(self, *args: str, stdin: bytes | None = None) -> Result:
        return self(
            "run",
            *args,
            "--base-url",
            self.server.url,
            "--ledger",
            str(self.ledger),
            "--no-progress",
            stdin=stdin,
        )

    def replay(self, *args: str) -> Result:
        return self(
            "replay",
            *args,
            "--base-url",
            self.server.url,
            "--ledger",
            str(self.ledger),
            "--no-progress",
        )

    def report(self, name: str = "report.json") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.tmp / name).read_text())
        return data

    def ledger_rows(self) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(self.ledger) as db:
            db.row_factory = sqlite3.Row
            return {row["key"]: dict(row) for row in db.execute("SELECT * FROM records")}


@pytest.fixture
def run_cli(clean_env: None, fake_api: FakeServer, tmp_path: Path) -> Cli:
    return Cli(fake_api, tmp_path)


def write_csv(
    path: Path, rows: Sequence[dict[str, Any]], header: Sequence[str] | None = None
) -> Path:
    fields = list(header or rows[0].keys())
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_rows(n: int, assistant: str = "aia_asst_test", prefix: str = "s") -> list[dict[str, Any]]:
    return [
        {
            "assistant_id": assistant,
            "session_id": f"{prefix}{i}",
            "message_id": f"aia_msg_{prefix}{i}" if i % 2 else "",
            "score": f"{(i % 11) / 10:g}",
            "text": f"text {i}" if i % 3 else "",
        }
        for i in range(n)
    ]


def content_of(row: dict[str, Any]) -> Content:
    """What the fake API stores for a CSV row: empty cells are absent."""
    return (
        row["assistant_id"],
        row["session_id"],
        row["message_id"] or None,
        float(row["score"]) if row["score"] != "" else None,
        row["text"] or None,
    )


def assert_exactly_once(server: FakeServer, rows: Sequence[dict[str, Any]]) -> None:
    """Every row is stored by the API once: nothing lost, nothing duplicated."""
    counts = server.state.content_counts()
    expected = {content_of(row) for row in rows}
    assert set(counts) == expected, {
        "lost": len(expected - set(counts)),
        "unexpected": len(set(counts) - expected),
    }
    assert server.state.duplicates() == {}


def assert_counts_add_up(report: dict[str, Any]) -> None:
    kinds = ["sent", "skipped", "duplicate", "invalid", "failed", "released"]
    kinds += ["stopped_records"] if "stopped_records" in report else []
    settled = sum(report[k] for k in kinds)
    assert report["read"] == settled
    assert report["in_flight"] == 0


def run_command(server: FakeServer, source: str, ledger: Path, *extra: str) -> list[str]:
    """The real command line, for tests that need it in a process of its own."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        source,
        "--base-url",
        server.url,
        "--ledger",
        str(ledger),
        "--no-progress",
        *extra,
    ]


def wait_for(done: Callable[[], bool], proc: subprocess.Popen[Any], what: str) -> None:
    """Poll (with a deadline, never a bare sleep) until ``done()`` or the process ends."""
    deadline = time.monotonic() + 30
    while not done() and proc.poll() is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (Linux: SigCgt in /proc).

    A run installs it right before reconciling and sending, so this says "a signal now is
    handled by the run", in any version of the code, without a log line to wait for.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
