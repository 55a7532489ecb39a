"""RabbitMQ as a source and as enqueue's destination, end to end: a real broker, the real CLI,
a real SQLite ledger and the fake API over a socket; judged by the fake's counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp_helpers import Msg, Queue, password_user, unique_queue
from conftest import Cli, assert_counts_add_up, assert_exactly_once, content_of, make_rows

from pipeline.sources.amqp import MESSAGE_LIMIT, parse_url


@pytest.fixture
def queue() -> Iterator[Queue]:
    yield from unique_queue()


@pytest.fixture(scope="module")
def user() -> Iterator[tuple[str, str]]:
    yield from password_user()


def _body(row: dict[str, str]) -> bytes:
    return json.dumps(row).encode()


def test_drain_stores_each_message_once_and_dead_letters_the_bad_ones(
    run_cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    rows = make_rows(60)
    good = [Msg(_body(row), message_id=f"m{i}" if i % 2 else None) for i, row in enumerate(rows)]
    bad = {
        "utf8": Msg(b'{"session_id": "\xff"}', message_id="bad-utf8"),
        "json": Msg(b'{"session_id": ', message_id="bad-json"),
        "array": Msg(b"[1, 2]", message_id="bad-array"),
        "fields": Msg(b'{"assistant_id": "aia_asst_test", "score": 0.5}', message_id="bad-fields"),
        "huge": Msg(b" " * (MESSAGE_LIMIT + 1), message_id="bad-huge", headers={"from": "x"}),
    }
    queue.publish([*good[:30], *bad.values(), *good[30:]])

    result = run_cli.run(queue.url(), "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 1, result.output  # invalid records
    assert_exactly_once(run_cli.server, rows)
    report = run_cli.report()
    assert (report["sent"], report["invalid"]) == (60, 5)
    assert_counts_add_up(report)
    # Nothing left: closing the connection would have requeued anything not acked.
    assert queue.ready() == 0
    dead = {m.message_id: m for m in queue.take_all(queue.dead)}
    assert set(dead) == {m.message_id for m in bad.values()}
    for name, msg in bad.items():
        copy = dead[msg.message_id]
        assert copy.body == msg.body, name
        assert copy.headers["location"] == f"amqp:{queue.name}/{msg.message_id}"
        assert copy.headers["queue"] == queue.name
        assert str(copy.headers["reason"]).startswith("invalid: ")
    reasons = {name: str(dead[m.message_id].headers["reason"]) for name, m in bad.items()}
    assert "not valid UTF-8" in reasons["utf8"]
    assert "invalid JSON" in reasons["json"]
    assert "expected a JSON object, got list" in reasons["array"]
    assert "session_id: Field required" in reasons["fields"]
    assert f"more than {MESSAGE_LIMIT}" in reasons["huge"]
    assert dead["bad-huge"].headers["from"] == "x"  # the original headers travel along
    assert f"amqp:{queue.name}/bad-json: invalid: invalid JSON" in result.output


def test_map_applies_to_messages(run_cli: Cli, queue: Queue) -> None:
    rows = make_rows(5)
    renamed = [{("rating" if k == "score" else k): v for k, v in row.items()} for row in rows]
    queue.publish([_body(row) for row in renamed])

    result = run_cli.run(queue.url(), "--drain", "--map", "score=rating")

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)


def test_an_empty_queue_drains_at_once_and_a_missing_one_is_created(
    run_cli: Cli, queue: Queue
) -> None:
    assert queue.ready() == -1

    result = run_cli.run(queue.url(), "--drain")

    assert result.exit_code == 0, result.output
    assert "read 0" in result.output
    assert (queue.ready(), queue.ready(queue.dead)) == (0, 0)  # both declared (durable)


def test_enqueue_twice_the_api_receives_each_record_once_and_no_password_leaks(
    run_cli: Cli, queue: Queue, user: tuple[str, str], tmp_path: Path
) -> None:
    name, password = user
    url = queue.url(user=name, password=password)
    rows = make_rows(40)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))

    first = run_cli("enqueue", str(source), "--to", url)
    second = run_cli("enqueue", str(source), "--to", url)

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert "sent 40" in first.output and "sent 40" in second.output
    assert queue.ready() == 80
    result = run_cli.run(url, "--drain", "--report", str(tmp_path / "report.json"))
    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    assert sum(run_cli.server.state.content_counts().values()) == 40
    report = run_cli.report()
    assert (report["sent"], report["skipped"] + report["duplicate"]) == (40, 40)
    assert queue.ready() == 0
    # The password is nowhere: not in output, report, or any ledger file (the run record).
    assert f"{name}:***@" in parse_url(url).shown
    ledger_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*"))
    for text in (first.output, second.output, result.output, json.dumps(report)):
        assert password not in text
    assert password.encode() not in ledger_bytes


def test_enqueued_entries_carry_their_key_as_message_id(run_cli: Cli, queue: Queue) -> None:
    rows = make_rows(3)
    source = run_cli.tmp / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))

    assert run_cli("enqueue", str(source), "--to", queue.url()).exit_code == 0

    taken = queue.take_all(queue.name)
    bodies = [json.loads(m.body) for m in taken]
    assert [m.message_id for m in taken] == [b["key"] for b in bodies]
    assert all(m.delivery_mode == 2 for m in taken)  # persistent
    stored = [content_of(row) for row in rows]
    assert [
        (b["assistant_id"], b["session_id"], b.get("message_id"), b["score"], b.get("text"))
        for b in bodies
    ] == stored


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:s3cret@127.0.0.1:1/?queue=q", "amqp://guest:***@127.0.0.1:1/?queue=q"),
        ("amqp://u:s3cret@127.0.0.1:5672/?queue=", "name the queue"),
        ("amqp://u:s3cret@127.0.0.1:notaport/?queue=q", "not a valid URL"),
    ],
)
def test_a_broker_that_cannot_be_used_at_start_is_one_line_and_exit_2(
    run_cli: Cli, url: str, expected: str
) -> None:
    enqueue = ("enqueue", "-", "--format", "jsonl", "--to", url)
    for result in (run_cli.run(url, "--drain"), run_cli(*enqueue)):
        assert result.exit_code == 2, result.output
        assert expected in result.output
        assert "s3cret" not in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_refused_login_is_one_line_and_exit_2(run_cli: Cli, queue: Queue) -> None:
    result = run_cli.run(queue.url(password="wrong-s3cret"), "--drain")

    assert result.exit_code == 2, result.output
    assert "cannot connect" in result.output and "guest:***@" in result.output
    assert "wrong-s3cret" not in result.output
    assert len(result.output.strip().splitlines()) == 1
