"""--max-invalid / --max-failed: a nightly job accepts a known number of bad rows without
going red; unknown outcomes and aborts are never accepted; 0 (the default) accepts none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli, make_rows, write_csv


def _input(tmp_path: Path, invalid: int = 2, gone: int = 0) -> Path:
    rows = make_rows(20)
    rows += [{**r, "score": "9"} for r in make_rows(invalid, prefix="bad")]
    rows += make_rows(gone, assistant="aia_asst_gone", prefix="g")
    return write_csv(tmp_path / "in.csv", rows)


@pytest.mark.parametrize(("accepted", "code"), [(None, 1), ("1", 1), ("2", 0), ("50", 0)])
def test_invalid_records_within_the_threshold_exit_0(
    run_cli: Cli, tmp_path: Path, accepted: str | None, code: int
) -> None:
    flags = ["--max-invalid", accepted] if accepted else []
    report = tmp_path / "report.json"

    result = run_cli.run(str(_input(tmp_path)), "--report", str(report), *flags)

    assert result.exit_code == code, result.output
    data = json.loads(report.read_text())
    assert data["invalid"] == 2
    assert data["exit_code"] == code
    assert data["max_invalid"] == int(accepted or 0)


@pytest.mark.parametrize(("accepted", "code"), [("2", 1), ("3", 0)])
def test_failed_records_within_the_threshold_exit_0(
    run_cli: Cli, tmp_path: Path, accepted: str, code: int
) -> None:
    run_cli.server.state.known_assistants = {"aia_asst_test"}
    source = _input(tmp_path, invalid=0, gone=3)

    result = run_cli.run(str(source), "--max-failed", accepted)

    assert result.exit_code == code, result.output
    assert "failed 3" in result.stdout
    assert "accepted without going red: up to 0 invalid, " + accepted + " failed" in result.stdout


def test_the_threshold_comes_from_the_environment_too(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_MAX_INVALID", "2")

    assert run_cli.run(str(_input(tmp_path))).exit_code == 0


def test_unknown_outcomes_are_never_accepted(run_cli: Cli, tmp_path: Path) -> None:
    run_cli.server.state.update_faults({"reset_rate": 1.0})
    source = write_csv(tmp_path / "in.csv", make_rows(5))

    result = run_cli.run(
        str(source), "--no-reconcile", "--max-invalid", "100", "--max-failed", "100"
    )

    assert result.exit_code == 1, result.output
    assert "5 with an unknown outcome" in result.stdout


def test_an_abort_stays_3(run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong")

    result = run_cli.run(str(_input(tmp_path)), "--max-invalid", "100", "--max-failed", "100")

    assert result.exit_code == 3, result.output


def test_a_negative_threshold_is_a_configuration_error(run_cli: Cli, tmp_path: Path) -> None:
    result = run_cli.run(str(_input(tmp_path)), "--max-failed", "-1")

    assert result.exit_code == 2
    assert result.stderr.startswith("feedback-pipeline: configuration error: --max-failed: ")
    assert result.stderr.count("\n") == 1
    assert run_cli.server.state.posts_received == 0
