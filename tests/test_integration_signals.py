"""SIGINT/SIGTERM against the real command in its own process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import (
    assert_counts_add_up,
    assert_exactly_once,
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
