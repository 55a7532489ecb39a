"""Exactly once under faults and crashes: ambiguous outcomes, reconcile, kill -9."""

from __future__ import annotations

import os
import random
import signal
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


@pytest.fixture(autouse=True)
def _quick_settle(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake stores a request before it answers, so a short settle time is exact here.
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")


def test_resets_after_store_are_settled_not_resent(run_cli: Cli, tmp_path: Path) -> None:
    run_cli.server.state.update_faults(
        {"reset_rate": 0.15, "fail_rate": 0.1, "throttle_rps": 100.0, "latency_ms": 5.0}
    )
    rows = make_rows(300)
    source = str(write_csv(tmp_path / "a.csv", rows))

    result = run_cli.run(
        source,
        "--max-attempts",
        "30",
        "--concurrency",
        "16",
        "--report",
        str(tmp_path / "report.json"),
    )

    assert result.exit_code == 0, result.output
    state = run_cli.server.state
    assert state.resets > 0
    assert state.responses[503] > 0
    assert state.responses[429] > 0
    assert_exactly_once(run_cli.server, rows)  # a blind resend would have duplicated the resets
    print(f"\nsoak: {len(rows)} records, server: {state.stats()}")
    report = run_cli.report()
    assert_counts_add_up(report)
    assert (report["sent"], report["unknown"]) == (300, 0)
    assert {r["state"] for r in run_cli.ledger_rows().values()} == {"sent"}
    server_ids = {f["id"] for f in state.feedbacks()}
    assert {r["feedback_id"] for r in run_cli.ledger_rows().values()} == server_ids


def test_a_500_not_stored_is_settled_as_failed_then_replayed(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(12)
    source = str(write_csv(tmp_path / "a.csv", rows))
    run_cli.server.state.update_faults({"error_status": 500})

    first = run_cli.run(source, "--report", str(tmp_path / "report.json"))

    # 500 may mean "stored": never retried blindly; reconcile found nothing, so: failed.
    assert first.exit_code == 1
    assert run_cli.server.state.posts_received == 12
    report = run_cli.report()
    assert (report["failed"], report["unknown"], report["attempts"]) == (12, 0, 12)
    run_cli.server.state.update_faults({"error_status": None})
    assert run_cli.replay().exit_code == 0
    assert_exactly_once(run_cli.server, rows)


def test_no_reconcile_leaves_uncertain_records_unsent(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(20)
    source = str(write_csv(tmp_path / "a.csv", rows))
    run_cli.server.state.update_faults({"reset_rate": 1.0})
    first = run_cli.run(source, "--no-reconcile", "--report", str(tmp_path / "report.json"))
    assert first.exit_code == 1
    assert run_cli.report()["unknown"] == 20
    run_cli.server.state.update_faults({"reset_rate": 0.0})

    again = run_cli.run(source, "--no-reconcile", "--report", str(tmp_path / "report.json"))

    assert again.exit_code == 1
    assert run_cli.report()["unknown"] == 20
    assert run_cli.server.state.posts_received == 20  # nothing resent blindly
    settled = run_cli(
        "reconcile", "--ledger", str(run_cli.ledger), "--base-url", run_cli.server.url
    )
    assert settled.exit_code == 0
    assert "20 were stored by the API" in settled.stdout
    assert run_cli.run(source).exit_code == 0
    assert run_cli.server.state.posts_received == 20
    assert_exactly_once(run_cli.server, rows)


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    clean_env: None, tmp_path: Path
) -> None:
    rng = random.Random(20261123)
    rows = make_rows(1500)
    source = str(write_csv(tmp_path / "a.csv", rows))
    faults = Faults(latency_ms=10, fail_rate=0.05, reset_rate=0.05, seed=7)
    state = FakeState(faults=faults)
    kills = 0
    with FakeServer(state) as server:
        ledger = tmp_path / "ledger.sqlite3"
        command = run_command(server, source, ledger, "--concurrency", "16", "--max-attempts", "20")
        for _trial in range(8):
            proc = subprocess.Popen(
                command, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            target = state.posts_received + rng.randint(1, 150)
            wait_for(lambda: state.posts_received >= target, proc, "requests")  # noqa: B023
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
        # Reruns until one finishes cleanly, with the faults still on.
        for _attempt in range(5):
            final = subprocess.run(
                command, env=os.environ, capture_output=True, text=True, timeout=120, check=False
            )
            if final.returncode == 0:
                break
        assert final.returncode == 0, final.stdout + final.stderr
        stats = state.stats()

    print(f"\nkill -9: {kills} kills in 8 trials, {len(rows)} records, server: {stats}")
    assert kills >= 6
    assert stats["resets"] > 0
    assert_exactly_once(server, rows)
    assert stats["stored"] == len(rows)
    assert stats["duplicates"] == 0


def test_reconcile_report_counts_add_up_after_a_crash(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(40)
    source = str(write_csv(tmp_path / "a.csv", rows))
    run_cli.server.state.update_faults({"reset_rate": 1.0})
    assert run_cli.run(source, "--no-reconcile").exit_code == 1
    run_cli.server.state.update_faults({"reset_rate": 0.0})

    result = run_cli.run(source, "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0
    report = run_cli.report()
    assert_counts_add_up(report)
    assert (report["reconciled_found"], report["skipped"], report["sent"]) == (40, 40, 0)
    assert_exactly_once(run_cli.server, rows)
