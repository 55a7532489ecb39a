"""SIGINT/SIGTERM against the real command in its own process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    assert_counts_add_up,
    assert_exactly_once,
    handles_sigterm,
    make_rows,
    run_command,
    wait_for,
    write_csv,
)

from pipeline.fake import FakeServer, FakeState, Faults


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_cleanly_and_a_rerun_finishes(
    clean_env: None, tmp_path: Path, sig: signal.Signals
) -> None:
    rows = make_rows(3000)
    source = str(write_csv(tmp_path / "a.csv", rows))
    ledger, report = tmp_path / "ledger.sqlite3", tmp_path / "report.json"
    state = FakeState(faults=Faults(latency_ms=50))
    with FakeServer(state) as server:
        command = run_command(server, source, ledger, "--concurrency", "8")
        proc = subprocess.Popen(
            [*command, "--report", str(report)],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        wait_for(lambda: state.stored_count >= 40, proc, "the run to get going")
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)

        assert proc.returncode == 3, err
        assert f"interrupted by {sig.name}" in out
        summary = json.loads(report.read_text())
        assert_counts_add_up(summary)
        assert summary["read"] < len(rows)
        with sqlite3.connect(ledger) as db:
            states = dict(db.execute("SELECT state, count(*) FROM records GROUP BY state"))
        # Requests on the wire finished and were recorded: the ledger matches the server.
        assert "in_flight" not in states
        assert states["sent"] == summary["sent"] == state.stored_count
        assert state.duplicates() == {}

        state.update_faults({"latency_ms": 0.0})
        rerun = subprocess.run(
            command, text=True, capture_output=True, env=os.environ, timeout=120, check=False
        )

        assert rerun.returncode == 0, rerun.stderr
        assert_exactly_once(server, rows)


def test_a_signal_during_the_settle_wait_ends_the_run_without_reconciling(
    clean_env: None, tmp_path: Path
) -> None:
    """Issue 7: a stop shortened the settle wait, the records the killed run had on the wire
    were judged "not stored" while the API was still storing them, and the next run sent
    them again. Now the interrupted run judges nothing and the next run settles them."""
    rows = make_rows(200)
    source = str(write_csv(tmp_path / "a.csv", rows))
    ledger = tmp_path / "ledger.sqlite3"
    # The API takes 3 s to store what it received: store-late, past the killed run's death.
    state = FakeState(faults=Faults(latency_ms=3000))
    with FakeServer(state) as server:
        command = run_command(server, source, ledger, "--concurrency", "16", "--settle", "4")
        first = subprocess.Popen(command, env=os.environ, stdout=subprocess.DEVNULL)
        wait_for(lambda: state.posts_received >= 16, first, "16 requests on the wire")
        first.kill()
        first.wait(timeout=30)
        # Requests already received keep their delay; new ones (the List calls) are quick.
        state.update_faults({"latency_ms": 0.0})
        on_the_wire = state.posts_received
        assert on_the_wire >= 16
        assert state.stored_count == 0

        errors = tmp_path / "rerun.err"
        with errors.open("w") as err:
            rerun = subprocess.Popen(command, env=os.environ, stdout=subprocess.PIPE, stderr=err)
            # Its handlers are installed right before it reconciles: the signal lands in (or
            # just before) the settle wait, which lasts seconds more.
            wait_for(lambda: handles_sigterm(rerun.pid), rerun, "the settle wait")
            assert rerun.poll() is None, errors.read_text()
            rerun.send_signal(signal.SIGTERM)
            out, _ = rerun.communicate(timeout=60)
        rerun_errors = errors.read_text()
        with sqlite3.connect(ledger) as db:
            states = dict(db.execute("SELECT state, count(*) FROM records GROUP BY state"))

        # Let the late stores land, so a resend (the bug) would show as a duplicate.
        deadline = time.monotonic() + 30
        while state.stored_count < on_the_wire:
            assert time.monotonic() < deadline, "timed out waiting for the late stores"
            time.sleep(0.01)
        final = subprocess.run(
            command, capture_output=True, text=True, env=os.environ, timeout=120, check=False
        )
        assert final.returncode == 0, final.stderr
        assert state.stats()["duplicates"] == 0
        assert_exactly_once(server, rows)

        assert rerun.returncode == 3, rerun_errors
        assert "waiting" in rerun_errors  # the wait was announced, with its length
        assert "stopped during the settle wait" in rerun_errors
        assert "interrupted by SIGTERM" in out.decode()
        # Nothing was judged: what the killed run claimed is still uncertain, none "not stored".
        assert states == {"in_flight": states["in_flight"]}
        assert states["in_flight"] >= on_the_wire
