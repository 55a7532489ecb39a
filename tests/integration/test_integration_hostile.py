"""The pipeline against a hostile API: each misbehaviour of pipeline.fake.hostile, judged by
the server's own counts.

Invariants checked in every test: no record is ``sent`` in the ledger unless the API holds it
under that very id; when the API is hostile, what it did not store is not ``sent``; and a later
run against a sane API delivers every record exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, assert_exactly_once, make_rows, write_csv

from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.fake.hostile import Hostile

ASSISTANT = "aia_asst_test"


@pytest.fixture(autouse=True)
def _quick_settle(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")


@pytest.fixture
def elsewhere() -> Iterator[FakeServer]:
    """Another origin that a redirect points to: a portal answering 200 to everything."""
    with FakeServer(FakeState(faults=Faults(hostile=Hostile(mode="portal")))) as server:
        yield server


def assert_ledger_truthful(cli: Cli) -> None:
    """Every ``sent`` row holds an id the API really stored, and no two rows share one."""
    held = {f["id"] for f in cli.server.state.feedbacks()}
    sent = [r["feedback_id"] for r in cli.ledger_rows().values() if r["state"] == "sent"]
    assert set(sent) <= held, "the ledger says sent, the API does not hold it"
    assert len(sent) == len(set(sent))


def states(cli: Cli) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in cli.ledger_rows().values():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def then_a_sane_api_delivers_once(cli: Cli, source: str, rows: list[dict[str, Any]]) -> None:
    cli.server.state.update_faults({"hostile": None})
    again = cli.run(source)
    assert again.exit_code == 0, again.output
    assert_exactly_once(cli.server, rows)
    assert_ledger_truthful(cli)
    assert states(cli) == {"sent": len(rows)}


def one_line_naming(output: str, *words: str) -> str:
    lines = [line for line in output.splitlines() if all(w in line for w in words)]
    assert lines, output
    return lines[0]


def test_a_portal_answering_200_html_aborts_and_loses_nothing(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(200)
    source = str(write_csv(tmp_path / "a.csv", rows))
    run_cli.server.state.update_faults({"hostile": "portal"})

    result = run_cli.run(source, "--concurrency", "4", "--report", str(tmp_path / "r.json"))

    assert result.exit_code == 3, result.output
    one_line_naming(result.output, "aborted: --base-url", "not the Feedback API")
    state = run_cli.server.state
    assert state.stored_count == 0
    assert "sent" not in states(run_cli)
    # It stopped early instead of grinding through every record.
    assert state.posts_received < 50
    report = run_cli.report("r.json")
    parts = ("sent", "skipped", "duplicate", "invalid", "failed", "unknown", "stopped_records")
    assert report["read"] == sum(report[k] for k in parts)
    assert report["in_flight"] == 0
    then_a_sane_api_delivers_once(run_cli, source, rows)


@pytest.mark.parametrize("status", [200, 201, 202])
def test_a_2xx_without_a_feedback_is_reconciled_not_trusted(
    run_cli: Cli, tmp_path: Path, status: int
) -> None:
    rows = make_rows(60)
    source = str(write_csv(tmp_path / "a.csv", rows))
    hostile = {"mode": "unconfirmed", "status": status, "rate": 0.3}
    run_cli.server.state.update_faults({"hostile": hostile})

    result = run_cli.run(source, "--report", str(tmp_path / "r.json"))

    # Stored but unconfirmed: reconciliation found each one, under the API's own id.
    assert result.exit_code == 0, result.output
    state = run_cli.server.state
    assert state.posts_received == 60
    assert state.responses[status] > 0
    assert_exactly_once(run_cli.server, rows)
    assert_ledger_truthful(run_cli)
    assert {r["feedback_id"] for r in run_cli.ledger_rows().values()} == {
        f["id"] for f in state.feedbacks()
    }
    report = run_cli.report("r.json")
    assert (report["sent"], report["unknown"], report["failed"]) == (60, 0, 0)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirected_post_is_not_followed(
    run_cli: Cli, tmp_path: Path, elsewhere: FakeServer, status: int
) -> None:
    rows = make_rows(30)
    source = str(write_csv(tmp_path / "a.csv", rows))
    location = f"{elsewhere.url}/v1/Assistants/{ASSISTANT}/Feedbacks"
    hostile = {"mode": "redirect", "status": status, "location": location}
    run_cli.server.state.update_faults({"hostile": hostile})

    result = run_cli.run(source, "--concurrency", "2")

    assert result.exit_code == 3, result.output
    line = one_line_naming(result.output, "--base-url", location, str(status))
    assert "\n" not in line
    assert elsewhere.state.responses == {}  # never followed
    assert run_cli.server.state.stored_count == 0
    assert "sent" not in states(run_cli)
    assert run_cli.server.state.posts_received <= 2  # aborted before sending more
    then_a_sane_api_delivers_once(run_cli, source, rows)


def leave_uncertain(cli: Cli, tmp_path: Path, n: int, prefix: str = "u") -> list[dict[str, Any]]:
    """``n`` records stored by the API but ``unknown`` in the ledger (answered by a reset)."""
    rows = make_rows(n, prefix=prefix)
    source = str(write_csv(tmp_path / f"{prefix}.csv", rows))
    cli.server.state.update_faults({"reset_rate": 1.0})
    assert cli.run(source, "--no-reconcile").exit_code == 1
    cli.server.state.update_faults({"reset_rate": 0.0})
    assert states(cli) == {"unknown": n}
    return rows


def reconcile(cli: Cli) -> Any:
    return cli("reconcile", "--ledger", str(cli.ledger), "--base-url", cli.server.url)


@pytest.mark.parametrize("command", ["reconcile", "run"])
def test_a_redirected_list_is_not_followed(
    run_cli: Cli, tmp_path: Path, elsewhere: FakeServer, command: str
) -> None:
    rows = leave_uncertain(run_cli, tmp_path, 5)
    location = f"{elsewhere.url}/v1/Assistants/{ASSISTANT}/Feedbacks?PageSize=1000"
    hostile = {"mode": "redirect", "status": 302, "location": location}
    run_cli.server.state.update_faults({"hostile": hostile})
    posts = run_cli.server.state.posts_received

    if command == "run":
        result = run_cli.run(str(write_csv(tmp_path / "new.csv", make_rows(5, prefix="n"))))
    else:
        result = reconcile(run_cli)

    assert result.exit_code == 3, result.output
    one_line_naming(result.output, "--base-url", location)
    assert elsewhere.state.responses == {}
    assert run_cli.server.state.posts_received == posts  # aborted before sending anything
    assert states(run_cli)["unknown"] == 5
    assert "sent" not in states(run_cli)
    run_cli.server.state.update_faults({"hostile": None})
    assert reconcile(run_cli).exit_code == 0
    assert states(run_cli)["sent"] == 5
    assert_exactly_once(run_cli.server, rows)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["repeat_cursor", "endless_cursor"])
def test_a_cursor_that_never_ends_is_an_error(run_cli: Cli, tmp_path: Path, mode: str) -> None:
    rows = leave_uncertain(run_cli, tmp_path, 5)
    run_cli.server.state.update_faults({"hostile": mode})
    lists_before = run_cli.server.state.responses[200]

    result = reconcile(run_cli)

    assert result.exit_code == 1, result.output
    one_line_naming(result.output, "reconcile", "same page twice")
    assert run_cli.server.state.responses[200] - lists_before <= 3
    assert states(run_cli) == {"unknown": 5}  # nothing decided on a broken listing
    run_cli.server.state.update_faults({"hostile": None})
    assert reconcile(run_cli).exit_code == 0
    assert states(run_cli) == {"sent": 5}
    assert_exactly_once(run_cli.server, rows)
    assert_ledger_truthful(run_cli)


def test_a_relative_next_page_url_is_followed(run_cli: Cli, tmp_path: Path) -> None:
    state = run_cli.server.state
    for i in range(1000):  # a full first page, so the records are on the second one
        state.store(ASSISTANT, {"session_id": f"filler{i}"}, account_sid=state.account_sid)
    rows = leave_uncertain(run_cli, tmp_path, 5)
    run_cli.server.state.update_faults({"hostile": "relative_cursor"})

    result = reconcile(run_cli)

    assert result.exit_code == 0, result.output
    assert "5 were stored by the API" in result.output
    assert states(run_cli) == {"sent": 5}
    assert_ledger_truthful(run_cli)
    assert state.duplicates() == {}
    assert len(rows) == 5


def test_a_slow_drip_ends_at_the_timeout_as_ambiguous(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(4)
    source = str(write_csv(tmp_path / "a.csv", rows))
    # About 400 bytes at one every 50 ms: 20 s per answer, against a 1 s timeout.
    run_cli.server.state.update_faults({"hostile": {"mode": "drip", "delay_s": 0.05}})
    args = ("--timeout", "1", "--report", str(tmp_path / "r.json"))

    first = run_cli.run(source, "--no-reconcile", *args)

    # The request was written: ambiguous (unknown, not resent), never a hang.
    assert first.exit_code == 1, first.output
    report = run_cli.report("r.json")
    assert (report["unknown"], report["attempts"], report["sent"]) == (4, 4, 0)
    assert report["duration_s"] < 15  # bounded by --timeout, not by the drip
    assert states(run_cli) == {"unknown": 4}
    assert run_cli.server.state.posts_received == 4
    # Reconciliation (here by the next run, still against the drip) finds each one.
    again = run_cli.run(source, *args)
    assert again.exit_code == 0, again.output
    assert run_cli.report("r.json")["reconciled_found"] == 4
    assert run_cli.server.state.posts_received == 4
    assert_exactly_once(run_cli.server, rows)
    assert_ledger_truthful(run_cli)
    assert states(run_cli) == {"sent": 4}


def test_a_huge_201_is_not_read_whole(run_cli: Cli, tmp_path: Path) -> None:
    rows = make_rows(3)
    source = str(write_csv(tmp_path / "a.csv", rows))
    size = 64 << 20
    run_cli.server.state.update_faults({"hostile": {"mode": "huge", "size": size}})

    result = run_cli.run(source, "--concurrency", "1", "--report", str(tmp_path / "r.json"))

    assert result.exit_code == 0, result.output
    state = run_cli.server.state
    # The server could hand over only what the client read (plus socket buffers).
    assert 0 < state.hostile_stats["bytes_streamed"] < 3 * size // 4
    assert_exactly_once(run_cli.server, rows)
    assert_ledger_truthful(run_cli)
    assert run_cli.report("r.json")["sent"] == 3


@pytest.mark.parametrize("status", [None, 500, 504])
def test_store_late_is_found_with_a_sufficient_settle(
    run_cli: Cli, tmp_path: Path, status: int | None
) -> None:
    rows = make_rows(10)
    source = str(write_csv(tmp_path / "a.csv", rows))
    hostile = {"mode": "store_late", "delay_s": 0.3, "status": status}
    run_cli.server.state.update_faults({"hostile": hostile})

    result = run_cli.run(source, "--settle", "1.5", "--report", str(tmp_path / "r.json"))

    assert result.exit_code == 0, result.output
    state = run_cli.server.state
    assert state.posts_received == 10
    assert (state.resets, state.responses[status or 0]) == ((10, 0) if status is None else (0, 10))
    assert_exactly_once(run_cli.server, rows)
    assert_ledger_truthful(run_cli)
    report = run_cli.report("r.json")
    assert (report["sent"], report["unknown"], report["attempts"]) == (10, 0, 10)
