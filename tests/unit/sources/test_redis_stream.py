"""Redis Streams end to end: a real Redis, the real CLI, a real SQLite ledger, the fake API over a
socket. Every delivery is judged by what the fake API stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows, write_csv
from redis_helpers import Stream, stream

from pipeline.cli import cli as cli_main
from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.sources.redis.stream import MAX_ENTRY_BYTES

__all__ = ["stream"]  # the fixture, used by name
OK = "aia_asst_test"


@pytest.fixture
def cli(clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")
    with FakeServer(FakeState(faults=Faults(seed=3), known_assistants=[OK])) as server:
        yield Cli(server, tmp_path)


def _bad_entries() -> list[tuple[dict[str, Any], str]]:
    """Entries that cannot be records, with what their dead letter's reason says."""
    return [
        ({"assistant_id": OK, "session_id": "bad-score", "score": "7"}, "invalid: score"),
        ({"assistant_id": OK, "score": "0.5"}, "invalid: session_id: Field required"),
        ({"session_id": b"\xff\xfe", "score": "0.5"}, "invalid: entry is not valid UTF-8"),
        ({"body": "{not json"}, "invalid: invalid JSON: "),
        ({"body": "[1, 2]"}, "invalid: expected a JSON object, got list"),
        # Read as a JSONL line or a RabbitMQ message is: one decoder for every source.
        ({"body": "[" * 100_000}, "invalid: invalid JSON: nested too deep"),
        ({"body": '{"session_id": "d", "score": 1, "score": 0}'}, "duplicated key 'score'"),
        ({"body": "x" * (MAX_ENTRY_BYTES + 1)}, f"over {MAX_ENTRY_BYTES}"),
    ]


def test_drain_delivers_each_entry_once_and_dead_letters_the_rest(
    cli: Cli, stream: Stream, tmp_path: Path
) -> None:
    flat = make_rows(30, assistant=OK)
    as_body = make_rows(10, assistant=OK, prefix="b")
    stream.add(*flat)
    stream.add(*({"body": json.dumps(row)} for row in as_body))
    bad = _bad_entries()
    bad_ids = stream.add(*(fields for fields, _ in bad))

    report = str(tmp_path / "report.json")
    result = cli.run(stream.url(), "--drain", "--report", report)

    assert result.exit_code == 1, result.output  # invalid entries: exit 1, as for files
    assert_exactly_once(cli.server, flat + as_body)
    summary = cli.report()
    assert_counts_add_up(summary)
    assert (summary["sent"], summary["invalid"]) == (40, len(bad))
    # Each invalid entry: a dead-letter copy with its reason, location and original fields.
    letters = stream.dead_letters()
    assert len(letters) == len(bad)
    for (fields, reason), entry_id, letter in zip(bad, bad_ids, letters, strict=True):
        assert reason in letter[b"reason"].decode(), letter[b"reason"]
        assert letter[b"location"].decode() == f"redis:{stream.name}/{entry_id.decode()}"
        for key, value in fields.items():
            raw = value if isinstance(value, bytes) else str(value).encode()
            assert letter[key.encode()] == raw
        assert f"redis:{stream.name}/{entry_id.decode()}" in result.output
    assert stream.pending() == 0  # everything acked


def test_map_applies_to_stream_fields(cli: Cli, stream: Stream) -> None:
    stream.add({"assistant_id": OK, "session_id": "m1", "rating": "0.3"})

    result = cli.run(stream.url(), "--drain", "--map", "score=rating")

    assert result.exit_code == 0, result.output
    assert list(cli.server.state.content_counts()) == [(OK, "m1", None, 0.3, None)]


def test_enqueuing_a_file_twice_delivers_each_record_once(
    cli: Cli, stream: Stream, tmp_path: Path
) -> None:
    rows = make_rows(25, assistant=OK)
    path = write_csv(tmp_path / "in.csv", rows)
    for _ in range(2):
        enqueued = CliRunner().invoke(
            cli_main, ["enqueue", str(path), "--to", stream.publish_url()]
        )
        assert enqueued.exit_code == 0, enqueued.output
        assert "read 25, published 25" in enqueued.output
    assert stream.redis.xlen(stream.name) == 50
    # The same key travels with both copies.
    keys = [fields[b"key"] for _, fields in stream.entries()]
    assert keys[:25] == keys[25:]

    result = cli.run(stream.url(), "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0, result.output
    assert cli.server.state.posts_received == 25  # the API never saw the second copies
    assert_exactly_once(cli.server, rows)
    summary = cli.report()
    assert (summary["sent"], summary["duplicate"]) == (25, 25)
    assert stream.pending() == 0

    # A run of the same file afterwards skips every record: the key is the file's own.
    again = cli.run(str(path))
    assert again.exit_code == 0, again.output
    assert "skipped 25" in again.output
    assert cli.server.state.posts_received == 25


def test_a_dead_consumers_pending_entries_are_claimed_after_claim_idle(
    cli: Cli, stream: Stream
) -> None:
    rows = make_rows(12, assistant=OK)
    stream.add(*rows)
    stream.redis.xgroup_create(stream.name, stream.group, id="0")
    # A consumer takes 8 entries and dies without acking them.
    taken: Any = stream.redis.xreadgroup(stream.group, "dead-worker", {stream.name: ">"}, count=8)
    assert len(taken[0][1]) == 8
    assert stream.pending() == 8

    result = cli.run(stream.url(consumer="live-worker"), "--drain", "--claim-idle", "0.3")

    assert result.exit_code == 0, result.output
    assert_exactly_once(cli.server, rows)
    assert stream.pending() == 0
    consumers = {
        c["name"]: c["pending"] for c in stream.redis.xinfo_consumers(stream.name, "workers")
    }
    assert consumers[b"dead-worker"] == 0


def test_a_broker_that_is_down_at_start_exits_2_with_the_url_masked(cli: Cli) -> None:
    from redis_helpers import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0?stream=s&group=g"

    result = cli.run(url, "--drain")

    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "cannot connect" in lines[0]
    assert ":***@127.0.0.1" in lines[0]
    assert "hunter2" not in result.output
    published = CliRunner().invoke(cli_main, ["enqueue", "-", "--format", "csv", "--to", url])
    assert published.exit_code == 2
    assert "hunter2" not in published.output


def test_a_stream_url_without_group_is_a_configuration_error(cli: Cli) -> None:
    result = cli.run("redis://127.0.0.1:6379/0?stream=s", "--drain")

    assert result.exit_code == 2, result.output
    assert "group= is required" in result.output


def test_own_pending_entries_come_back_first_and_deleted_ones_are_acked(
    cli: Cli, stream: Stream
) -> None:
    rows = make_rows(3, assistant=OK)
    ids = stream.add(*rows)
    stream.redis.xgroup_create(stream.name, stream.group, id="0")
    stream.redis.xreadgroup(stream.group, "w", {stream.name: ">"}, count=3)  # then "restarted"
    stream.redis.xdel(stream.name, ids[1])  # deleted while pending: nothing left to deliver

    result = cli.run(stream.url(consumer="w"), "--drain")

    assert result.exit_code == 0, result.output
    assert_exactly_once(cli.server, [rows[0], rows[2]])
    assert stream.pending() == 0
