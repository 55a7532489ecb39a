"""Issue 23, the small inconsistencies: each one's test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Cli
from paths import ROOT

from pipeline.cli import cli
from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

README = (ROOT / "README.md").read_text(encoding="utf-8")
RUN_PAGE = (ROOT / "docs" / "reference" / "run.md").read_text(encoding="utf-8")
#: Every page a reader copies shell lines from: the README and the documentation site.
PAGES = [README, *(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").rglob("*.md")))]


def _help(*command: str) -> str:
    return CliRunner().invoke(cli, [*command, "--help"], terminal_width=200).output


def test_config_show_keeps_every_name_apart_from_its_value(clean_env: None) -> None:
    shown = CliRunner().invoke(cli, ["config", "show"]).output

    assert "metrics_textfilenull" not in shown
    assert re.search(r"^  metrics_textfile +null +default$", shown, re.M), shown


@pytest.mark.parametrize(
    "command", [("run",), ("replay",), ("reconcile",), ("status",), ("failures",), ("retire",)]
)
def test_every_ledger_help_names_postgresql(command: tuple[str, ...]) -> None:
    assert "postgresql://USER@HOST:PORT/DB" in _help(*command)


def test_replay_help_has_its_own_exit_codes() -> None:
    replay, run = _help("replay"), _help("run")

    assert "every record replayed was sent" in replay
    assert replay.split("Exit codes:")[1] != run.split("Exit codes:")[1]


def test_the_docs_say_reconcile_takes_a_subset() -> None:
    assert "`replay` and `reconcile`\ntake the same delivery flags" not in RUN_PAGE
    assert "`reconcile` takes a subset of them" in RUN_PAGE


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_fake_server_stopped_by_a_signal_exits_0(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "fake-server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert "listening on" in proc.stdout.readline()  # up: the signal handlers are set
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 0, err
    assert "fake Feedback API stopped" in out
    assert "exit 0" in _help("fake-server") or "0 stopped" in _help("fake-server")


def test_the_fake_server_can_say_which_assistants_exist(clean_env: None, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "fake-server",
            "--port",
            "0",
            "--assistant",
            "aia_asst_a",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = re.findall(r"listening on (\S+)", proc.stdout.readline())[0]
        env = {**os.environ, "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID}
        env["TWILIO_AUTH_TOKEN"] = DEFAULT_AUTH_TOKEN
        check = subprocess.run(
            [sys.executable, "-m", "pipeline", "check", "--base-url", url,
             "--assistant-id", "aia_asst_nope", "--assistant-id", "aia_asst_a"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    assert check.returncode == 1
    assert "aia_asst_nope: not found" in check.stdout + check.stderr
    assert "aia_asst_a: ok" in check.stdout + check.stderr


def test_shell_lines_of_the_docs_quote_urls_with_a_query() -> None:
    # zsh reads an unquoted ? as a glob: `--to redis://h/0?stream=x` fails there ("no matches").
    blocks = [
        b for page in PAGES for b in re.findall(r"```(?:sh|console)[^\n]*\n(.*?)```", page, re.S)
    ]
    assert len(blocks) > 20
    for line in (line for block in blocks for line in block.splitlines()):
        for url in re.findall(r"(?<!['\"])\b(?:redis|amqp)s?://\S*\?\S*", line):
            pytest.fail(f"unquoted URL with a query in a shell line: {url} ({line})")


def test_make_clean_removes_what_the_recipes_leave() -> None:
    dry = subprocess.run(
        ["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for left in ("backfill.sqlite3", "backfill.json", "nightly.sh", "nightly.sqlite3", "reports",
                 "fix.sqlite3", "fix.csv"):  # fmt: skip
        assert left in dry, left


def test_the_readme_puts_the_command_on_path_after_make_demo() -> None:
    assert ". .venv/bin/activate" in README


def test_metrics_can_listen_on_one_address_only() -> None:
    import urllib.request

    from pipeline.observe.metrics import RunMetrics
    from pipeline.observe.monitor import Monitor
    from pipeline.observe.summary import Summary

    metrics = RunMetrics(Monitor(Summary("run", "r")))
    metrics.serve(0, "--metrics-port", "127.0.0.1")
    try:
        server = metrics._server
        assert server is not None
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body = answer.read()
    finally:
        metrics.close()

    assert host == "127.0.0.1"
    assert b"feedback_records_read_total" in body
    assert "--metrics-address" in _help("run")


def test_failures_lists_rows_in_file_order(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    lines = ["session_id,score"] + [f"s{i},{2 + i}" for i in range(12)]  # every score too high
    source.write_text("\n".join(lines) + "\n")
    assert run_cli.run(str(source), "--assistant-id", "aia_asst_x").exit_code == 1

    out = run_cli("failures", "--ledger", str(run_cli.ledger), "--format", "jsonl").output

    locations = re.findall(r'"location": "[^"]*:(\d+)"', out)
    assert [int(n) for n in locations] == list(range(2, 14))
