"""Diagnostics go through :mod:`logging`: timestamped, levelled lines on stderr in text or
JSON, set by -v/-q and --log-format; the summary stays on stdout; no secret in any line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, make_rows, write_csv

from pipeline.fake import FakeServer, FakeState, Faults

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) +\S")
SECRET = "tok-0123456789abcdef-very-secret"


def _input(tmp_path: Path) -> Path:
    rows = make_rows(30) + [{**make_rows(1, prefix="bad")[0], "score": "7"}]
    return write_csv(tmp_path / "in.csv", rows)


def test_text_lines_have_a_timestamp_and_level_and_the_summary_stays_on_stdout(
    run_cli: Cli, tmp_path: Path
) -> None:
    result = run_cli.run(str(_input(tmp_path)))

    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines, result.stderr
    assert all(TEXT_LINE.match(line) for line in lines), result.stderr
    assert any(re.search(r" WARNING .*in\.csv:\d+: invalid: score", line) for line in lines)
    assert any(" INFO    run started: run " in line for line in lines)
    assert any(" INFO    run finished (exit 1)" in line for line in lines)
    assert result.stdout.startswith("run: read 31, sent 30")
    assert not TEXT_LINE.match(result.stdout)


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in stderr.splitlines()]
    assert all(isinstance(e, dict) for e in events)
    return events


def test_json_logs_are_one_object_per_event_with_fields(run_cli: Cli, tmp_path: Path) -> None:
    result = run_cli.run(str(_input(tmp_path)), "--log-format", "json", "--log-every", "0.01")

    assert result.exit_code == 1, result.output
    events = _json_lines(result.stderr)
    for e in events:
        assert {"timestamp", "level", "logger", "message", "event"} <= set(e), e
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00$", e["timestamp"])
    [problem] = [e for e in events if e["event"] == "problem"]
    assert problem["level"] == "WARNING"
    assert problem["location"].endswith("in.csv:32")
    [end] = [e for e in events if e["event"] == "end"]
    assert end["read"] == 31
    assert end["sent"] == 30
    assert end["invalid"] == 1
    assert end["exit_code"] == 1
    [reason] = end["failure_reasons"]
    assert reason["count"] == 1
    assert reason["reason"].startswith("invalid: score: ")


@pytest.mark.parametrize(
    ("flags", "levels"),
    [
        ((), {"INFO", "WARNING"}),
        (("-qq",), {"WARNING"}),
        (("-qqq",), set()),
        (("-v",), {"DEBUG", "INFO", "WARNING"}),
    ],
)
def test_v_and_q_set_the_level(
    run_cli: Cli, tmp_path: Path, flags: tuple[str, ...], levels: set[str]
) -> None:
    result = run_cli.run(str(_input(tmp_path)), "--log-format", "json", *flags)

    assert result.exit_code == 1, result.output
    assert {e["level"] for e in _json_lines(result.stderr)} == levels
    if "-v" in flags:  # every POST attempt, with its status
        attempts = [e for e in _json_lines(result.stderr) if e["event"] == "attempt"]
        assert len(attempts) == 30
        assert {e["status"] for e in attempts} == {201}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_log_line_holds_the_token(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    state = FakeState(
        auth_token=SECRET, known_assistants={"aia_asst_test"}, faults=Faults(fail_rate=0.2, seed=3)
    )
    rows = make_rows(30) + make_rows(3, assistant="aia_asst_other")
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        source = str(write_csv(tmp_path / "a.csv", rows))
        good = cli.run(source, "-v", "--log-format", fmt, "--log-every", "0.01")
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET + "-wrong")
        refused = cli.replay("-v", "--log-format", fmt, "--include-rejected")

    assert good.exit_code == 1
    assert refused.exit_code == 3
    assert state.responses[201] > 0
    assert state.responses[503] > 0
    assert state.responses[401] > 0
    lines = (good.stderr + refused.stderr).splitlines()
    assert len(lines) > 30  # the debug lines of every attempt, problems, notices
    for line in lines:
        if fmt == "json" and not line.startswith("feedback-pipeline: "):
            json.loads(line)
        assert SECRET not in line
    assert SECRET not in good.stdout + refused.stdout
