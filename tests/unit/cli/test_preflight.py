"""``validate`` (offline: no network, no ledger) and ``check`` (one cheap read per assistant)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from conftest import Cli, make_rows, write_csv

from pipeline.fake import FakeServer, FakeState, Faults

KNOWN = "aia_asst_test"


@pytest.fixture
def strict_cli(clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.chdir(tmp_path)  # where a default ledger would appear
    with FakeServer(FakeState(known_assistants={KNOWN}, faults=Faults(seed=9))) as server:
        yield Cli(server, tmp_path)


def test_validate_reports_problems_with_file_and_line_and_touches_nothing(
    strict_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_LEDGER", str(tmp_path / "env-ledger.sqlite3"))
    monkeypatch.setenv("FEEDBACK_PIPELINE_BASE_URL", strict_cli.server.url)
    rows = make_rows(5) + [dict(make_rows(1)[0], score="2"), dict(make_rows(1)[0], session_id="")]
    path = write_csv(tmp_path / "in.csv", rows)
    before = sorted(p.name for p in tmp_path.iterdir())

    result = strict_cli("validate", str(path), "--show", "1")

    assert result.exit_code == 1
    assert "validate: read 7, valid 5, invalid 2" in result.stdout
    assert f"{path}:7: invalid: score: Input should be less than or equal to 1" in result.stderr
    assert "... 1 more invalid records" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no ledger, nothing written
    assert strict_cli.server.state.stats()["responses"] == {}  # not one request


def test_validate_clean_input_and_usage_errors(strict_cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ok.csv", make_rows(3))
    ok = strict_cli("validate", str(path))
    missing = strict_cli("validate", str(tmp_path / "nope.csv"))
    queue = strict_cli("validate", "redis://localhost/0?stream=x")
    assert ok.exit_code == 0
    assert "read 3, valid 3, invalid 0" in ok.stdout
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output
    assert queue.exit_code == 2
    assert "not queues" in queue.stderr


def check(cli: Cli, *args: str) -> Result:
    return cli("check", "--base-url", cli.server.url, *args)


def test_check_accepts_known_assistants_one_read_each(strict_cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", make_rows(4))
    result = check(strict_cli, "--assistant-id", KNOWN, str(path))
    assert result.exit_code == 0, result.output
    assert f"check: {KNOWN}: ok" in result.stdout
    stats = strict_cli.server.state.stats()
    assert stats["responses"] == {"200": 1}
    assert stats["posts_received"] == 0


def test_check_names_an_unknown_assistant(strict_cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", make_rows(2, assistant="aia_asst_gone"))
    result = check(strict_cli, "--assistant-id", KNOWN, str(path))
    assert result.exit_code == 1
    assert "check: aia_asst_gone: not found" in result.stdout
    assert f"check: {KNOWN}: ok" in result.stdout


def test_check_refused_credentials_exit_3_without_the_token(
    strict_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token-xyz")
    result = check(strict_cli, "--assistant-id", KNOWN)
    assert result.exit_code == 3
    assert "credentials or --base-url refused" in result.output
    assert "wrong-token-xyz" not in result.output


def test_check_usage_errors(strict_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    nothing = check(strict_cli)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    no_token = check(strict_cli, "--assistant-id", KNOWN)
    assert nothing.exit_code == 2
    assert "no assistant id" in nothing.stderr
    assert no_token.exit_code == 2
    assert "TWILIO_AUTH_TOKEN" in no_token.stderr


def test_check_says_when_the_base_url_is_not_the_api(strict_cli: Cli) -> None:
    strict_cli.server.state.update_faults({"hostile": "portal"})
    result = check(strict_cli, "--assistant-id", KNOWN)
    assert result.exit_code == 3
    assert "not the Feedback API" in result.stdout
    assert strict_cli.server.state.stats()["posts_received"] == 0
