"""Adaptive concurrency, the circuit breaker, a missing assistant, and the shutdown grace."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import (
    Cli,
    assert_counts_add_up,
    assert_exactly_once,
    make_rows,
    run_command,
    wait_for,
    write_csv,
)

from pipeline.fake import FakeServer, FakeState, Faults


def test_adaptive_concurrency_keeps_429s_rare(run_cli: Cli, tmp_path: Path) -> None:
    # 200 requests/s at 20 ms each fit about 4 in flight; the ceiling allows 64.
    run_cli.server.state.update_faults({"throttle_rps": 200.0, "latency_ms": 20.0})
    rows = make_rows(1200)
    source = str(write_csv(tmp_path / "a.csv", rows))

    result = run_cli.run(
        source,
        "--concurrency",
        "64",
        "--max-attempts",
        "50",
        "--report",
        str(tmp_path / "report.json"),
    )

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    report = run_cli.report()
    throttled = run_cli.server.state.responses[429]
    assert throttled > 0  # the limit was found...
    assert throttled / report["attempts"] < 0.10  # ...without hammering it
    low, high = report["concurrency_range"]
    assert low < high <= 64  # the limit came down from the ceiling
    assert report["rate_cap"] is not None
    assert report["rate_cap"] < 300
    # A burst of 429s is one shared pause at most, never one each; none at all is right when
    # the limits alone kept the 429s rare (as on a loaded machine, where the pace is slower).
    assert report["pauses"] <= throttled


def test_a_missing_assistant_fails_fast(clean_env: None, tmp_path: Path) -> None:
    state = FakeState(known_assistants={"aia_asst_ok"})
    ok, gone = make_rows(5, assistant="aia_asst_ok"), make_rows(60, assistant="aia_asst_gone")
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        result = cli.run(
            str(write_csv(tmp_path / "a.csv", ok + gone)),
            "--concurrency",
            "4",
            "--report",
            str(tmp_path / "report.json"),
        )

    assert result.exit_code == 1
    # Those in flight when the first 404 came back, and the new ledger's lookup of the assistant.
    assert state.responses[404] <= 4 + 1
    assert result.stderr.count("assistant aia_asst_gone: not found") == 1
    report = cli.report()
    assert (report["sent"], report["failed"]) == (5, 60)
    assert_counts_add_up(report)
    assert_exactly_once(server, ok)


def test_a_long_outage_pauses_probes_then_aborts(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(200)
    source = str(write_csv(tmp_path / "a.csv", rows))
    run_cli.server.state.update_faults({"error_status": 503})

    result = run_cli.run(
        source,
        "--max-outage",
        "0.5",
        "--max-attempts",
        "3",
        "--report",
        str(tmp_path / "report.json"),
    )

    assert result.exit_code == 3
    assert "pausing all requests" in result.stderr
    assert "failed every request" in result.stdout
    # The circuit held the records back: far fewer requests than 200 records x 3 attempts.
    assert run_cli.server.state.posts_received < 100
    report = run_cli.report()
    assert_counts_add_up(report)
    assert "in_flight" not in {r["state"] for r in run_cli.ledger_rows().values()}
    run_cli.server.state.update_faults({"error_status": None})
    assert run_cli.replay().exit_code == 0
    assert run_cli.run(source).exit_code == 0
    assert_exactly_once(run_cli.server, rows)


def test_grace_cuts_off_slow_requests_and_a_rerun_settles_them(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_rows(300)
    source = str(write_csv(tmp_path / "a.csv", rows))
    ledger = tmp_path / "ledger.sqlite3"
    state = FakeState(faults=Faults(latency_ms=1000))
    with FakeServer(state) as server:
        command = run_command(server, source, ledger, "--concurrency", "8")
        proc = subprocess.Popen(
            [*command, "--grace", "0.2"],
            env=os.environ,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Eight requests on the wire, each held for 1 s.
        wait_for(lambda: state.posts_received >= 8, proc, "requests")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)

        assert proc.returncode == 3
        assert "cut off" in out
        with sqlite3.connect(ledger) as db:
            in_flight = db.execute("SELECT count(*) FROM records WHERE state = 'in_flight'")
            assert in_flight.fetchone()[0] >= 8
        # The fake still stores the cut-off requests after its latency: --settle covers that.
        state.update_faults({"latency_ms": 0.0})
        rerun = subprocess.run(
            [*command, "--settle", "1.5"],
            env=os.environ,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    assert rerun.returncode == 0, rerun.stderr
    assert "were stored (now sent)" in rerun.stdout
    assert_exactly_once(server, rows)
