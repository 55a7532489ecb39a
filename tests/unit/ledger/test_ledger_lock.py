"""One run per ledger *file*: every path to it is locked out, and non-file names are refused."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_exactly_once, make_rows, run_command, wait_for, write_csv

from pipeline.cli import cli
from pipeline.errors import ConfigError, LedgerError
from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.ledger import SqliteLedger


class Opened:
    """Opens writers and closes whatever a test left open."""

    def __init__(self) -> None:
        self.ledgers: list[SqliteLedger] = []

    async def __call__(self, path: Path | str, run_id: str = "run-1") -> SqliteLedger:
        ledger = await SqliteLedger.open(str(path), run_id, command="run")
        self.ledgers.append(ledger)
        return ledger


@pytest.fixture
async def opened() -> AsyncIterator[Opened]:
    factory = Opened()
    yield factory
    for ledger in factory.ledgers:
        await ledger.close()


def _other_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    real = tmp_path / "ledger.sqlite3"
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    return {
        "symlink": tmp_path / "link.sqlite3",
        "hard link": tmp_path / "hard.sqlite3",
        "./ and ..": Path("./sub/../ledger.sqlite3"),
        "relative": Path("ledger.sqlite3"),
        "real": real,
    }


@pytest.mark.parametrize("other", ["symlink", "hard link", "./ and ..", "relative"])
async def test_another_path_to_the_same_file_is_locked_out(
    opened: Opened, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    paths = _other_paths(tmp_path, monkeypatch)
    await opened(paths["real"])  # created (it did not exist) and locked
    paths["symlink"].symlink_to(paths["real"])
    os.link(paths["real"], paths["hard link"])

    with pytest.raises(LedgerError, match=rf"is in use by another run \(pid {os.getpid()}\)"):
        await opened(paths[other], "run-2")


async def test_a_hard_linked_ledger_is_refused(tmp_path: Path) -> None:
    # Locked out or not: SQLite's -wal file follows the name, so a crash through one name
    # would hide the last commits from a run through the other.
    real, hard = tmp_path / "ledger.sqlite3", tmp_path / "hard.sqlite3"
    ledger = await SqliteLedger.open(str(real), "run-1", command="run")
    await ledger.close()
    os.link(real, hard)
    for path in (real, hard):
        with pytest.raises(ConfigError, match=r"--ledger: .* has 2 hard links"):
            await SqliteLedger.open(str(path), "run-2", command="run")
    reader = await SqliteLedger.open(str(hard), "status", command="status", read_only=True)
    await reader.close()


async def test_the_lock_is_released_on_close_for_every_path(opened: Opened, tmp_path: Path) -> None:
    real, link = tmp_path / "ledger.sqlite3", tmp_path / "link.sqlite3"
    first = await opened(real)
    link.symlink_to(real)
    opened.ledgers.remove(first)
    await first.close()
    await opened(link, "run-2")


async def test_closing_the_lock_keeps_sqlite_usable_across_runs(
    opened: Opened, tmp_path: Path
) -> None:
    # The lock's descriptor is closed only after SQLite's connection: a later run reads all.
    path = tmp_path / "ledger.sqlite3"
    for n in range(3):
        ledger = await opened(path, f"run-{n}")
        await ledger.heartbeat()
        opened.ledgers.remove(ledger)
        await ledger.close(f"summary {n}")
    reader = await SqliteLedger.open(str(path), "status", command="status", read_only=True)
    try:
        assert await reader.counts() == {}
    finally:
        await reader.close()


@pytest.mark.parametrize("name", [":memory:", "", "  ", "file:ledger?mode=memory", "file:x.db"])
async def test_names_that_are_not_files_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for read_only in (False, True):
        with pytest.raises(ConfigError, match="--ledger: "):
            await SqliteLedger.open(name, "run-1", command="run", read_only=read_only)
    # No file named ":memory:" left behind (a check: nothing else runs meanwhile).
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240


def test_run_refuses_memory_ledger_before_sending(
    clean_env: None, fake_api: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = write_csv(tmp_path / "a.csv", make_rows(5))
    result = CliRunner().invoke(
        cli, ["run", str(source), "--base-url", fake_api.url, "--ledger", ":memory:"]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert "--ledger" in result.output, result.output
    assert fake_api.state.posts_received == 0
    assert not (tmp_path / ":memory:").exists()


def test_a_directory_as_ledger_is_a_configuration_error(
    clean_env: None, fake_api: FakeServer, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "a.csv", make_rows(5))
    result = CliRunner().invoke(
        cli, ["run", str(source), "--base-url", fake_api.url, "--ledger", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert f"--ledger: {tmp_path} is a directory" in result.output
    assert fake_api.state.posts_received == 0


@pytest.mark.parametrize("how", ["symlink", "hard link"])
def test_a_second_process_through_another_path_is_refused_and_nothing_is_duplicated(
    clean_env: None, tmp_path: Path, how: str
) -> None:
    """Issue 7: the lock was per path; a second run through a symlink ran at once, reconciled
    the first run's live in-flight records away and sent them again (390 of 2,000)."""
    rows = make_rows(400)
    source = str(write_csv(tmp_path / "a.csv", rows))
    ledger, other = tmp_path / "ledger.sqlite3", tmp_path / "other.sqlite3"
    state = FakeState(faults=Faults(latency_ms=100))
    with FakeServer(state) as server:
        first = subprocess.Popen(
            run_command(server, source, ledger, "--concurrency", "4"), env=os.environ
        )
        try:
            wait_for(lambda: state.stored_count >= 8, first, "the first run to get going")
            assert first.poll() is None, "the first run ended too early"
            if how == "symlink":
                other.symlink_to(ledger)
            else:
                os.link(ledger, other)
            second = subprocess.run(
                run_command(server, source, other, "--settle", "0"),
                capture_output=True,
                text=True,
                env=os.environ,
                timeout=60,
                check=False,
            )
            assert second.returncode == 3, second.stderr
            assert second.stderr.strip() == (
                f"feedback-pipeline: ledger {other} is in use by another run (pid {first.pid}); "
                "an SQLite ledger takes one process at a time: for many workers use a "
                "postgresql:// ledger"
            )
            state.update_faults({"latency_ms": 0.0})
            assert first.wait(timeout=60) == 0
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        assert_exactly_once(server, rows)


def test_ledger_help_says_that_another_ledger_sends_everything_again() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    text = " ".join(result.output.split())
    assert "the memory of what was sent" in text
    assert "A run with another ledger sends everything again" in text
    assert "One run at a time per ledger file" in text
