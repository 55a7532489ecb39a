"""``replay`` sends what the API may still take: not permanent 4xx rejections by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, content_of, make_rows, write_csv

from pipeline.fake import FakeServer, FakeState, Faults

KNOWN = "aia_asst_test"


@pytest.fixture
def strict_cli(clean_env: None, tmp_path: Path) -> Iterator[Cli]:
    with FakeServer(FakeState(known_assistants={KNOWN}, faults=Faults(seed=7))) as server:
        yield Cli(server, tmp_path)


def failing(cli: Cli, tmp_path: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A ledger with 2 records rejected for good (404) and 3 that ran out of attempts (503)."""
    gone = make_rows(2, assistant="aia_asst_gone", prefix="g")
    busy = make_rows(3, prefix="b")
    assert cli.run(str(write_csv(tmp_path / "gone.csv", gone))).exit_code == 1
    cli.server.state.update_faults({"fail_rate": 1.0})
    assert (
        cli.run(str(write_csv(tmp_path / "busy.csv", busy)), "--max-attempts", "1").exit_code == 1
    )
    cli.server.state.update_faults({"fail_rate": 0.0})
    states = sorted((r["state"], r["http_status"]) for r in cli.ledger_rows().values())
    assert states == [("failed", 404)] * 2 + [("failed", 503)] * 3
    return gone, busy


def test_dry_run_shows_what_would_be_sent_and_sends_nothing(
    strict_cli: Cli, tmp_path: Path
) -> None:
    failing(strict_cli, tmp_path)
    posts = strict_cli.server.state.stats()["posts_received"]

    result = strict_cli.replay("--dry-run")

    assert result.exit_code == 0, result.output
    assert "would send 3 failed records" in result.stdout
    assert result.stdout.count("busy.csv:") == 3
    assert "503" in result.stdout
    assert "2 failed records were rejected by the API for good" in result.stdout
    assert strict_cli.server.state.stats()["posts_received"] == posts


def test_default_replay_leaves_permanent_rejections_out(strict_cli: Cli, tmp_path: Path) -> None:
    gone, busy = failing(strict_cli, tmp_path)

    result = strict_cli.replay()

    assert result.exit_code == 0, result.output
    assert "sent 3" in result.stdout
    assert "2 failed records were rejected by the API for good" in result.stderr
    counts = strict_cli.server.state.content_counts()
    assert {content_of(r) for r in busy} == set(counts)
    assert set(counts.values()) == {1}
    again = strict_cli.replay()
    assert again.exit_code == 0
    assert "read 0" in again.stdout


def test_include_rejected_sends_them_and_limit_caps_a_replay(
    strict_cli: Cli, tmp_path: Path
) -> None:
    failing(strict_cli, tmp_path)

    limited = strict_cli.replay("--limit", "2")
    assert limited.exit_code == 0
    assert "read 2, sent 2" in limited.stdout
    forced = strict_cli.replay("--include-rejected")

    assert forced.exit_code == 1  # the assistant still does not exist
    assert "read 3, sent 1" in forced.stdout
    assert "failed 2" in forced.stdout
    assert strict_cli.server.state.stored_count == 3
    assert strict_cli.server.state.duplicates() == {}
