"""A following run (a queue without --drain) is a service: a signal is its normal end, unless
the requests on the wire have to be cut off (grace expiry, a second signal)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import memory_source
import pytest
from conftest import Cli
from memory_source import MemorySource

import pipeline.sources
from pipeline.fake import FakeServer, FakeState, Faults

OK = "aia_asst_test"


@pytest.fixture(autouse=True)
def _mem_scheme(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(pipeline.sources._BROKERS, "mem", "memory_source")
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")
    memory_source.SOURCES.clear()
    yield
    memory_source.SOURCES.clear()


def _signal_once_posted(state: FakeState, count: int) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def interrupt(stop: asyncio.Event) -> None:
        deadline = time.monotonic() + 30
        while state.posts_received < count:
            assert time.monotonic() < deadline, "the requests never went out"
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        await stop.wait()

    return interrupt


def test_a_following_run_whose_grace_runs_out_is_cut_off(tmp_path: Path) -> None:
    state = FakeState(faults=Faults(latency_ms=3000))
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        rows = [{"assistant_id": OK, "session_id": f"s{i}", "score": "0.5"} for i in range(4)]
        source = MemorySource(rows, cli.ledger, batch_size=4, follow=True)
        source.after_first = _signal_once_posted(state, 4)
        memory_source.SOURCES["q"] = source

        result = cli.run("mem://q", "--grace", "0.2")

    assert result.exit_code == 3, result.output
    assert "aborted: stopped by SIGTERM: the grace period of 0.2s ran out" in result.output
    assert "cut off" in result.output
    assert source.acked == []  # nothing final: every entry is delivered again
    assert {r["state"] for r in cli.ledger_rows().values()} == {"in_flight"}


def test_a_following_run_that_finishes_within_grace_ends_with_exit_0(tmp_path: Path) -> None:
    state = FakeState(faults=Faults(latency_ms=200))
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        rows = [{"assistant_id": OK, "session_id": f"s{i}", "score": "0.5"} for i in range(4)]
        source = MemorySource(rows, cli.ledger, batch_size=4, follow=True)
        source.after_first = _signal_once_posted(state, 4)
        memory_source.SOURCES["q"] = source

        result = cli.run("mem://q", "--grace", "60")

        assert result.exit_code == 0, result.output
        assert "stopped by SIGTERM (the normal end of a following run)" in result.output
        assert sorted(source.acks_by_handle()) == [0, 1, 2, 3]
        assert state.stored_count == 4
        assert state.duplicates() == {}
