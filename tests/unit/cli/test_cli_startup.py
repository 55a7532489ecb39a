"""Bad settings found at start-up: one line naming the setting, exit 2, nothing sent.

Each case here was accepted before (and then hung, stalled, or failed with "internal error"
after every record had been sent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli, make_rows, write_csv


def _binary_toml(tmp_path: Path) -> str:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    return str(path)


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


CASES = [
    # (flags, environment, needle in the one line)
    (["--rate", "inf"], {}, "--rate: Input should be a finite number"),
    (["--rate", "nan"], {}, "--rate: Input should be a finite number"),
    (["--rate", "1e300"], {}, "--rate: Input should be less than or equal to 1000000"),
    (["--timeout", "inf"], {}, "--timeout: Input should be a finite number"),
    (["--timeout", "1e-300"], {}, "--timeout: Input should be greater than or equal to 0.1"),
    (["--grace", "inf"], {}, "--grace: Input should be a finite number"),
    (["--settle", "-1"], {}, "--settle: Input should be greater than or equal to 0"),
    (["--max-outage", "1e309"], {}, "--max-outage: Input should be a finite number"),
    ([], {"FEEDBACK_PIPELINE_TIMEOUT": "inf"}, "FEEDBACK_PIPELINE_TIMEOUT: Input should be a"),
    ([], {"FEEDBACK_PIPELINE_MAX_BACKOFF": "NaN"}, "FEEDBACK_PIPELINE_MAX_BACKOFF: Input"),
    ([], {"FEEDBACK_PIPELINE_COLUMNS": "{score: rating}"}, "FEEDBACK_PIPELINE_COLUMNS: not valid"),
    ([], {"FEEDBACK_PIPELINE_CONCURENCY": "4"}, "FEEDBACK_PIPELINE_CONCURENCY: is not a setting"),
    ([], {"FEEDBACK_PIPELINE_TIMOUT": "4"}, "FEEDBACK_PIPELINE_TIMOUT: is not a setting"),
]


@pytest.mark.parametrize(("flags", "env", "needle"), CASES)
def test_bad_setting_is_one_line_exit_2_before_anything_is_sent(
    run_cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    source = str(write_csv(tmp_path / "a.csv", make_rows(3)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    result = run_cli.run(source, *flags)

    _assert_refused(run_cli, result.exit_code, result.stderr, needle)


@pytest.mark.parametrize("port", ["99999", "0", "http", "-1"])
def test_base_url_port_out_of_range(run_cli: Cli, tmp_path: Path, port: str) -> None:
    source = str(write_csv(tmp_path / "a.csv", make_rows(1)))
    url = f"http://127.0.0.1:{port}"

    result = run_cli("run", source, "--ledger", str(run_cli.ledger), "--base-url", url)

    _assert_refused(run_cli, result.exit_code, result.stderr, "--base-url: has a port that is not")


def _assert_refused(run_cli: Cli, code: int, stderr: str, needle: str) -> None:
    assert code == 2, stderr
    assert needle in stderr
    assert stderr.count("\n") == 1, stderr  # one line
    assert "internal error" not in stderr
    assert "Traceback" not in stderr
    assert run_cli.server.state.posts_received == 0
    assert not run_cli.ledger.exists()


def test_typo_in_a_variable_with_a_lower_case_name_is_caught_too(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("feedback_pipeline_ratee", "5")
    result = run_cli.run(str(write_csv(tmp_path / "a.csv", make_rows(1))))
    _assert_refused(run_cli, result.exit_code, result.stderr, "feedback_pipeline_ratee: is not")


def test_known_non_settings_are_not_typos(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_DEBUG", "1")
    monkeypatch.setenv("FEEDBACK_PIPELINE_CONFIG", _toml(tmp_path, "concurrency = 2\n"))
    rows = make_rows(3)
    result = run_cli.run(str(write_csv(tmp_path / "a.csv", rows)))
    assert result.exit_code == 0, result.stderr
    assert run_cli.server.state.posts_received == len(rows)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("concurrency = true\n", "concurrency in {path}: must be a number, not true or false"),
        ("timeout = inf\n", "timeout in {path}: Input should be a finite number"),
        ("grace = nan\n", "grace in {path}: Input should be a finite number"),
        ("max_attempts = 3.5\n", "max_attempts in {path}: Input should be a valid integer"),
        ("reconcile = 1\n", "reconcile in {path}: must be true or false"),
        ("batch_size = false\n", "batch_size in {path}: must be a number, not true or false"),
    ],
)
def test_bad_value_in_the_file_names_key_and_file(
    run_cli: Cli, tmp_path: Path, text: str, needle: str
) -> None:
    path = _toml(tmp_path, text)
    source = str(write_csv(tmp_path / "a.csv", make_rows(2)))

    result = run_cli.run(source, "--config", path)

    _assert_refused(run_cli, result.exit_code, result.stderr, needle.format(path=path))


def test_binary_config_file_is_one_line(run_cli: Cli, tmp_path: Path) -> None:
    path = _binary_toml(tmp_path)
    source = str(write_csv(tmp_path / "a.csv", make_rows(2)))

    result = run_cli.run(source, "--config", path)

    _assert_refused(run_cli, result.exit_code, result.stderr, f"{path}: not a UTF-8 text file")


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        ("missing-dir/report.json", "directory {tmp}/missing-dir does not exist"),
        ("a.csv/report.json", "{tmp}/a.csv is not a directory"),
        (".", "is a directory, not a file"),
    ],
)
def test_report_that_cannot_be_written_is_refused_before_sending(
    run_cli: Cli, tmp_path: Path, report: str, problem: str
) -> None:
    source = str(write_csv(tmp_path / "a.csv", make_rows(3)))
    target = str(tmp_path / report)

    result = run_cli.run(source, "--report", target)

    needle = f"--report: cannot write {target}: {problem.format(tmp=tmp_path)}"
    _assert_refused(run_cli, result.exit_code, result.stderr, needle)


def test_report_from_the_environment_is_named_as_such(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_REPORT", str(tmp_path / "nope" / "r.json"))
    result = run_cli.run(str(write_csv(tmp_path / "a.csv", make_rows(1))))
    _assert_refused(run_cli, result.exit_code, result.stderr, "FEEDBACK_PIPELINE_REPORT: cannot")


def test_report_into_a_read_only_directory(run_cli: Cli, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    source = str(write_csv(tmp_path / "a.csv", make_rows(1)))
    try:
        result = run_cli.run(source, "--report", str(locked / "r.json"))
    finally:
        locked.chmod(0o700)
    if result.exit_code == 0:  # root writes whatever the mode bits say: then it must work
        assert (locked / "r.json").is_file()
    else:
        _assert_refused(run_cli, result.exit_code, result.stderr, "permission denied")


def test_replay_checks_the_report_too(run_cli: Cli, tmp_path: Path) -> None:
    result = run_cli.replay("--report", str(tmp_path / "nope" / "r.json"))
    _assert_refused(run_cli, result.exit_code, result.stderr, "--report: cannot write")


def test_a_writable_report_is_written(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(2)
    result = run_cli.run(
        str(write_csv(tmp_path / "a.csv", rows)), "--report", str(tmp_path / "report.json")
    )
    assert result.exit_code == 0, result.stderr
    assert run_cli.report()["sent"] == len(rows)
