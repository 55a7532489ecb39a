"""A ledger that cannot be written: ``run`` refuses it up front, ``status`` still reads it.

Root ignores file permissions (its capabilities override them), and CI runs the tests as root:
there the command runs as root *without* those capabilities (dropped from its bounding set
before exec), so the kernel checks the permission bits as for anyone. That is what a read-only
mount looks like to a process: its writes fail (EACCES here, EROFS there; the code treats them
alike). What this cannot prove: the exact EROFS path of a real read-only mount. Run as an
ordinary user, the command simply runs as that user.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_rows, run_command, wait_for, write_csv

from pipeline.fake import FakeServer, FakeState, Faults

AS_ROOT = os.geteuid() == 0
# linux/capability.h and linux/prctl.h
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_PR_CAPBSET_DROP = 24


# Looked up here, not in the child: after fork only the call itself is safe to make.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _drop_permission_overrides() -> None:
    """In the child, before exec: root keeps uid 0 but loses what lets it ignore modes."""
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if _prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the other user can reach (pytest's own tmp directories are private)."""
    path = Path(tempfile.mkdtemp(prefix="ledger-ro-"))
    path.chmod(0o755)
    yield path
    for sub in [path, *path.rglob("*")]:
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def _give(*paths: Path, mode: int) -> None:
    for path in paths:
        path.chmod(mode)


def _as_other_user(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The command, bound by permission bits even when the tests run as root."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
        check=False,
        preexec_fn=_drop_permission_overrides if AS_ROOT else None,
        **kwargs,
    )


def _status(ledger: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pipeline", "status", "--ledger", str(ledger), "--json"]
    return _as_other_user(command, cwd=ledger.parent)


def _counts(ledger: Path) -> dict[str, int]:
    with sqlite3.connect(ledger) as db:
        return dict(db.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall())


def _sent_ledger(shared_dir: Path, server: FakeServer, n: int) -> tuple[Path, str]:
    source = write_csv(shared_dir / "a.csv", make_rows(n))
    ledger = shared_dir / "ledger.sqlite3"
    done = subprocess.run(
        run_command(server, str(source), ledger), env=os.environ, timeout=60, check=False
    )
    assert done.returncode == 0
    _give(source, mode=0o644)
    return ledger, str(source)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_run_refuses_a_read_only_ledger_before_sending_anything(
    clean_env: None, fake_api: FakeServer, shared_dir: Path, what: str
) -> None:
    ledger, source = _sent_ledger(shared_dir, fake_api, 5)
    before = fake_api.state.posts_received
    _give(ledger, mode=0o400 if what == "file" else 0o600)
    _give(shared_dir, mode=0o555 if what == "directory" else 0o755)

    # --settle 0 and a new record: were it let through, the run would send at once.
    write_csv(Path(source), make_rows(6))
    result = _as_other_user(run_command(fake_api, source, ledger, "--settle", "0"))

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--ledger: " in result.stderr
    assert "read-only" in result.stderr
    assert "internal error" not in result.stderr
    assert fake_api.state.posts_received == before


def test_run_refuses_a_read_only_directory_for_a_new_ledger(
    clean_env: None, fake_api: FakeServer, shared_dir: Path
) -> None:
    source = write_csv(shared_dir / "a.csv", make_rows(5))
    _give(source, mode=0o644)
    _give(shared_dir, mode=0o555)
    ledger = shared_dir / "new.sqlite3"

    result = _as_other_user(run_command(fake_api, str(source), ledger))

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"--ledger: directory {shared_dir.resolve()} is read-only" in result.stderr
    assert fake_api.state.posts_received == 0
    assert not ledger.exists()


def test_status_reads_a_ledger_it_cannot_write(
    clean_env: None, fake_api: FakeServer, shared_dir: Path
) -> None:
    ledger, source = _sent_ledger(shared_dir, fake_api, 7)
    _give(ledger, mode=0o400)
    _give(shared_dir, mode=0o555)

    result = _status(ledger)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 7
    assert sorted(p.name for p in shared_dir.iterdir()) == ["a.csv", "ledger.sqlite3"]
    dry = _as_other_user([*run_command(fake_api, source, ledger), "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "skipped 7 (sent earlier)" in dry.stdout


def test_status_reads_what_a_killed_run_left_in_its_wal_file(
    clean_env: None, shared_dir: Path
) -> None:
    source = write_csv(shared_dir / "a.csv", make_rows(300))
    ledger = shared_dir / "ledger.sqlite3"
    state = FakeState(faults=Faults(latency_ms=50))
    with FakeServer(state) as server:
        run = subprocess.Popen(run_command(server, str(source), ledger), env=os.environ)
        wait_for(lambda: state.stored_count >= 20, run, "the run to get going")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    leftovers = sorted(shared_dir.iterdir())
    assert {"ledger.sqlite3-shm", "ledger.sqlite3-wal"} <= {p.name for p in leftovers}
    _give(*[p for p in leftovers if p.name.startswith("ledger")], mode=0o400)
    _give(shared_dir, mode=0o555)

    result = _status(ledger)

    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    _give(shared_dir, mode=0o755)
    expected = _counts(ledger)  # read afterwards: a writable reader would checkpoint the WAL
    assert counts["in_flight"] == expected["in_flight"] > 0
    assert counts["total"] == sum(expected.values())
