"""The real CLI: input problems, configuration errors, secrets, status, stdin, dry runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows, write_csv

from pipeline.fake import DEFAULT_ACCOUNT_SID, FakeServer, FakeState, Faults

SECRET = "s3cr3t-token-DO-NOT-PRINT"


def test_bad_rows_are_reported_with_file_and_line(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "mixed.csv"
    source.write_text(
        "session_id,message_id,score,text\n"
        "ok-1,aia_msg_1,0.5,fine\n"
        "bad-1,msg_1,0.5,no prefix\n"
        '"ok-2",,1,"multi\nline text"\n'
        "bad-2,,1.5,too high\n"
        'bad-3,"unclosed,0.1,x\n'
    )
    result = run_cli.run(
        str(source), "--assistant-id", "aia_asst_x", "--report", str(tmp_path / "report.json")
    )

    assert result.exit_code == 1
    assert f"{source}:3: invalid: message_id: String should match pattern" in result.stderr
    assert f"{source}:6: invalid: score: Input should be less than or equal to 1" in result.stderr
    assert f"{source}:7: invalid: malformed CSV" in result.stderr
    assert "Traceback" not in result.output
    report = run_cli.report()
    assert (report["read"], report["sent"], report["invalid"]) == (5, 2, 3)
    assert_counts_add_up(report)
    invalid = {
        r["location"]: r["error_message"]
        for r in run_cli.ledger_rows().values()
        if r["state"] == "invalid"
    }
    assert set(invalid) == {f"{source}:3", f"{source}:6", f"{source}:7"}
    assert run_cli.server.state.stored_count == 2


def test_fixing_a_bad_row_in_place_leaves_one_state(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("assistant_id,session_id,score\naia_asst_x,s1,0.5\naia_asst_x,s2,7\n")
    assert run_cli.run(str(source)).exit_code == 1
    source.write_text("assistant_id,session_id,score\naia_asst_x,s1,0.5\naia_asst_x,s2,0.7\n")

    assert run_cli.run(str(source)).exit_code == 0
    assert sorted(r["state"] for r in run_cli.ledger_rows().values()) == ["sent", "sent"]


def test_the_token_never_leaks(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    state = FakeState(
        auth_token=SECRET, known_assistants={"aia_asst_test"}, faults=Faults(fail_rate=0.2, seed=3)
    )
    rows = make_rows(40) + make_rows(3, assistant="aia_asst_other")
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        good = cli.run(
            str(write_csv(tmp_path / "a.csv", rows)),
            "--max-attempts",
            "2",
            "--report",
            str(tmp_path / "report.json"),
        )
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET + "-wrong")
        # The failures are 404s: a default replay would not send them (nor meet the 401).
        refused = cli.replay("--include-rejected", "--report", str(tmp_path / "replay.json"))

    assert good.exit_code == 1
    assert refused.exit_code == 3
    assert state.responses[201] > 0
    assert state.responses[503] > 0
    assert state.responses[401] > 0
    texts = [good.output, good.stderr, refused.output, refused.stderr]
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name.endswith("-wal") or p.name.endswith(".sqlite3") for p in files)
    for blob in [t.encode() for t in texts] + [p.read_bytes() for p in files]:
        assert SECRET.encode() not in blob


def test_stdin_gzip_map_and_format(run_cli: Cli, tmp_path: Path) -> None:
    import gzip

    rows = make_rows(12)
    renamed = [{("rating" if k == "score" else k): v for k, v in r.items()} for r in rows]
    write_csv(tmp_path / "a.csv", renamed)
    data = gzip.compress((tmp_path / "a.csv").read_bytes())

    result = run_cli.run("-", "--format", "csv", "--map", "score=rating", stdin=data)

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)


def test_dry_run_sends_nothing_and_creates_no_ledger(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(10) + [dict(make_rows(1)[0], score="2")]
    result = run_cli.run(str(write_csv(tmp_path / "a.csv", rows)), "--dry-run")

    assert result.exit_code == 1  # one invalid row
    assert "would send 10" in result.stdout
    assert run_cli.server.state.posts_received == 0
    assert not run_cli.ledger.exists()
    clean = run_cli.run(str(write_csv(tmp_path / "b.csv", rows[:10])), "--dry-run")
    assert clean.exit_code == 0
    assert "would send 10" in clean.stdout


def test_status_json_counts(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(6) + [dict(make_rows(1)[0], session_id="")]
    run_cli.run(str(write_csv(tmp_path / "a.csv", rows)))

    result = run_cli("status", "--ledger", str(run_cli.ledger), "--json")

    assert result.exit_code == 0
    counts = json.loads(result.stdout)
    runs = counts.pop("runs")
    fleet = {k: counts.pop(k) for k in ("job", "now", "holder", "queue", "complete")}
    assert fleet["holder"] == []
    assert fleet["queue"] is None
    assert fleet["complete"]
    assert counts.pop("done_fraction") == 1.0
    assert counts.pop("failed_unsent") == 0
    assert counts == {
        "sent": 6,
        "failed": 0,
        "invalid": 1,
        "in_flight": 0,
        "unknown": 0,
        "retired": 0,
        "total": 7,
    }
    assert [(r["command"], r["state"], r["exit_code"]) for r in runs] == [("run", "ended", 1)]


def test_a_ledger_in_use_aborts(run_cli: Cli, tmp_path: Path) -> None:
    import fcntl

    source = str(write_csv(tmp_path / "a.csv", make_rows(3)))
    # The lock is on the ledger file itself (see pipeline.ledger.lock).
    with open(run_cli.ledger, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_cli.run(source)
    assert result.exit_code == 3
    assert f"in use by another run (pid {os.getpid()})" in result.stderr
    assert run_cli.server.state.posts_received == 0


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env_extra", "needle"),
    [
        (["run", "a.csv", "--concurrency", "0"], {}, "--concurrency: Input should be greater"),
        (["run", "a.csv"], {"FEEDBACK_PIPELINE_RATE": "fast"}, "FEEDBACK_PIPELINE_RATE"),
        (["run", "a.csv", "--base-url", "http://example.com"], {}, "--base-url: plain http"),
        (["run", "a.csv", "--map", "colour=c"], {}, "--map: unknown field 'colour'"),
        (["run", "a.csv", "--map", "nonsense"], {}, "expected FIELD=COLUMN"),
        (["run", "missing.csv"], {}, "missing.csv: no such file"),
        (["run", "."], {}, ".: is a directory"),
        (["run", "a.txt"], {}, "pass --format csv|jsonl"),
        (["run", "a.csv", "--config", "nope.toml"], {}, "config: file nope.toml not found"),
        (["run", "a.csv", "--config", "bad.toml"], {}, "colour in bad.toml: is not a setting"),
        (["run", "a.csv"], {"TWILIO_AUTH_TOKEN": ""}, "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"),
        (["status", "--ledger", "none.sqlite3"], {}, "no ledger at none.sqlite3"),
        (["frobnicate"], {}, "No such command"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env_extra: dict[str, str], needle: str
) -> None:
    (tmp_path / "a.csv").write_text("session_id\ns1\n")
    (tmp_path / "a.txt").write_text("session_id\ns1\n")
    (tmp_path / "bad.toml").write_text('colour = "blue"\n')
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "FEEDBACK_"))}
    env.update(TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID, TWILIO_AUTH_TOKEN="t")
    env.update(env_extra)

    done = _cli(args, env, tmp_path)

    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "feedback-ledger.sqlite3").exists()


def test_dry_run_counts_repeats_across_batches(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_BATCH_SIZE", "4")
    rows = make_rows(10)
    result = run_cli.run(str(write_csv(tmp_path / "a.csv", rows + rows[:3])), "--dry-run")

    assert result.exit_code == 0
    assert "read 13, would send 10" in result.stdout
    assert "duplicate 3" in result.stdout
