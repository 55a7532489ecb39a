"""``config show``: every setting's value and where it came from; secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli

SECRET = "tok-DO-NOT-SHOW-123"


@pytest.fixture
def env(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    return monkeypatch


def show(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["config", "show", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_each_setting_names_its_source_and_secrets_are_masked(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('concurrency = 4\nledger = "postgresql://app:hunter2@db/ledger"\n')
    env.setenv("FEEDBACK_PIPELINE_TIMEOUT", "12")

    code, out, _ = show("--config", str(config), "--concurrency", "8", "--json")

    assert code == 0
    shown = json.loads(out)
    assert shown["concurrency"] == {"value": 8, "source": "flag", "origin": "--concurrency"}
    assert shown["timeout"]["source"] == "environment"
    assert shown["timeout"]["origin"] == "FEEDBACK_PIPELINE_TIMEOUT"
    assert shown["ledger"]["source"] == "file"
    assert shown["ledger"]["value"] == "postgresql://app:***@db/ledger"
    assert shown["max_attempts"] == {"value": 5, "source": "default", "origin": None}
    assert shown["backoff"]["source"] == "environment"  # from the test environment
    assert shown["credentials"]["TWILIO_AUTH_TOKEN"] == "set"
    assert shown["credentials"]["TWILIO_API_SECRET"] == "unset"
    assert SECRET not in out
    assert "hunter2" not in out


def test_text_form_and_bad_settings(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out, _ = show("--rate", "20")
    assert code == 0
    assert any(line.split()[:3] == ["rate", "20.0", "flag"] for line in out.splitlines())
    assert "TWILIO_AUTH_TOKEN set" in out
    assert SECRET not in out

    config = tmp_path / "bad.toml"
    config.write_text("concurency = 4\n")
    code, _, err = show("--config", str(config))
    assert code == 2
    assert "concurency" in err
    assert "is not a setting" in err
