"""The real CLI against the fake API over real sockets: delivery, reruns, faults, replay."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows, write_csv

from pipeline.fake import FakeServer, FakeState


def test_happy_path_csv_and_jsonl_gz(run_cli: Cli, tmp_path: Path) -> None:
    csv_rows = make_rows(60, prefix="c")
    json_rows = make_rows(40, prefix="j")
    write_csv(tmp_path / "a.csv", csv_rows)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        for row in json_rows:
            fh.write(json.dumps({k: v for k, v in row.items() if v != ""}) + "\n")

    result = run_cli.run(
        str(tmp_path / "a.csv"),
        str(tmp_path / "b.jsonl.gz"),
        "--report",
        str(tmp_path / "report.json"),
    )

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, csv_rows + json_rows)
    report = run_cli.report()
    assert (report["read"], report["sent"]) == (100, 100)
    assert_counts_add_up(report)
    # The ledger holds the id the API gave each record.
    server_ids = {f["id"] for f in run_cli.server.state.feedbacks()}
    rows = run_cli.ledger_rows().values()
    assert {r["state"] for r in rows} == {"sent"}
    assert {r["feedback_id"] for r in rows} == server_ids
    assert all(r["body"] is None and r["http_status"] == 201 for r in rows)


def test_rerun_sends_nothing(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(30)
    source = str(write_csv(tmp_path / "a.csv", rows))
    assert run_cli.run(source).exit_code == 0
    posts = run_cli.server.state.posts_received

    result = run_cli.run(source, "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0
    assert run_cli.server.state.posts_received == posts == 30
    report = run_cli.report()
    assert (report["skipped"], report["sent"], report["attempts"]) == (30, 0, 0)
    assert_exactly_once(run_cli.server, rows)


def test_duplicates_in_input_are_sent_once(run_cli: Cli, tmp_path: Path) -> None:
    rows = [dict(r, key="") for r in make_rows(10)]
    # rows[1] three times ("0.10" is the score "0.1" written differently), and two different
    # records that share an explicit key: the key wins, the second is a duplicate.
    same = [dict(rows[1]), dict(rows[1], score=rows[1]["score"] + "0")]
    keyed = [dict(r, key="k-1") for r in make_rows(2, prefix="k")]
    source = str(write_csv(tmp_path / "a.csv", rows + same + keyed))

    result = run_cli.run(source, "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0, result.output
    report = run_cli.report()
    assert (report["read"], report["sent"], report["duplicate"]) == (14, 11, 3)
    assert_counts_add_up(report)
    assert run_cli.server.state.posts_received == 11
    assert_exactly_once(run_cli.server, rows + keyed[:1])


def test_503_and_429_are_retried_to_success(run_cli: Cli, tmp_path: Path) -> None:
    run_cli.server.state.update_faults({"fail_rate": 0.3, "throttle_rps": 100.0})
    rows = make_rows(200)
    source = str(write_csv(tmp_path / "a.csv", rows))

    result = run_cli.run(
        source,
        "--max-attempts",
        "30",
        "--concurrency",
        "20",
        "--report",
        str(tmp_path / "report.json"),
    )

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    responses = run_cli.server.state.responses
    assert responses[503] > 0
    assert responses[429] > 0
    report = run_cli.report()
    assert report["retries"] == responses[503] + responses[429]
    assert report["attempts"] == run_cli.server.state.posts_received
    assert_counts_add_up(report)


def test_other_4xx_is_failed_without_retry(clean_env: None, tmp_path: Path) -> None:
    state = FakeState(known_assistants={"aia_asst_known"})
    rows = make_rows(5, assistant="aia_asst_known") + make_rows(4, assistant="aia_asst_gone")
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        result = cli.run(
            str(write_csv(tmp_path / "a.csv", rows)), "--report", str(tmp_path / "report.json")
        )

    assert result.exit_code == 1
    # One attempt each (never retried), and the new ledger's lookup of the missing assistant.
    assert state.responses[404] == 4 + 1
    failed = [r for r in cli.ledger_rows().values() if r["state"] == "failed"]
    assert len(failed) == 4
    assert {(r["http_status"], r["error_code"], r["attempts"]) for r in failed} == {(404, 20404, 1)}
    assert all(r["body"] for r in failed)  # kept for replay
    assert "HTTP 404 (Twilio error 20404)" in result.stderr
    assert_exactly_once(server, rows[:5])
    assert_counts_add_up(cli.report())


def test_replay_after_the_server_recovers(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(25)
    source = str(write_csv(tmp_path / "a.csv", rows))
    run_cli.server.state.update_faults({"error_status": 503})

    first = run_cli.run(source, "--max-attempts", "2")
    assert first.exit_code == 1
    assert run_cli.server.state.stored_count == 0
    assert {r["state"] for r in run_cli.ledger_rows().values()} == {"failed"}

    run_cli.server.state.update_faults({"error_status": None})
    replayed = run_cli.replay("--report", str(tmp_path / "report.json"))

    assert replayed.exit_code == 0, replayed.output
    assert_exactly_once(run_cli.server, rows)
    report = run_cli.report()
    assert (report["command"], report["read"], report["sent"]) == ("replay", 25, 25)
    again = run_cli.replay()
    assert again.exit_code == 0
    assert "read 0" in again.stdout
    assert run_cli.run(source).exit_code == 0
    assert_exactly_once(run_cli.server, rows)


def test_401_aborts_the_run_at_once(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token-value")
    monkeypatch.setenv("FEEDBACK_PIPELINE_BATCH_SIZE", "100")
    rows = make_rows(1000)
    source = str(write_csv(tmp_path / "a.csv", rows))

    result = run_cli.run(source, "--concurrency", "4", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 3
    assert "authentication refused" in result.stdout + result.stderr
    # Only the requests already on their way went out, not one per record.
    assert run_cli.server.state.responses[401] <= 4
    states = [r["state"] for r in run_cli.ledger_rows().values()]
    assert "in_flight" not in states
    assert "sent" not in states
    report = run_cli.report()
    assert report["aborted"]
    assert report["read"] <= 200
    assert report["failed"] == report["read"]
    assert_counts_add_up(report)
