"""RabbitMQ as a source and as enqueue's destination, end to end: a real broker, the real CLI,
a real SQLite ledger and the fake API over a socket; judged by the fake's counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp_helpers import Msg, Queue, password_user, unique_queue
from conftest import Cli, assert_counts_add_up, assert_exactly_once, content_of, make_rows

from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.sources.amqp.link import parse_url
from pipeline.sources.amqp.queue import MESSAGE_LIMIT


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


def test_permanently_failed_records_are_dead_lettered_with_the_api_error(
    queue: Queue, clean_env: None, tmp_path: Path
) -> None:
    rows = make_rows(4) + make_rows(2, assistant="aia_asst_missing", prefix="x")
    queue.publish([_body(row) for row in rows])
    state = FakeState(faults=Faults(seed=5), known_assistants=["aia_asst_test"])
    with FakeServer(state) as server:
        result = Cli(server, tmp_path).run(queue.url(), "--drain")

        assert result.exit_code == 1, result.output
        assert_exactly_once(server, rows[:4])
    dead = queue.take_all(queue.dead)
    assert sorted(json.loads(m.body)["session_id"] for m in dead) == ["x0", "x1"]
    assert all("HTTP 404" in str(m.headers["reason"]) for m in dead)
    assert all(str(m.headers["reason"]).startswith("failed: ") for m in dead)
    assert queue.ready() == 0


def test_nothing_is_acked_before_its_dead_letter_copy_is_confirmed(
    run_cli: Cli, queue: Queue
) -> None:
    # A dead-letter queue that refuses every message: the broker nacks each publish.
    refusing = f"{queue.name}.refusing"
    queue.declare(refusing, {"x-max-length": 0, "x-overflow": "reject-publish"})
    try:
        queue.publish([b"not json", *(_body(row) for row in make_rows(3))])

        result = run_cli.run(f"{queue.url()}&dead={refusing}", "--drain")

        # One entry's refused copy is said and costs that entry, never the run: the others
        # are sent; the invalid message is not acked (no copy), and closing requeued it.
        assert result.exit_code == 1, result.output
        assert f"dead letter to {refusing} refused" in result.output
        assert "stays on its queue, unacked" in result.output
        assert_exactly_once(run_cli.server, make_rows(3))
        assert queue.ready() == 1
        assert queue.ready(refusing) == 0

        rerun = run_cli.run(queue.url(), "--drain")  # the default dead-letter queue

        assert rerun.exit_code == 1, rerun.output
        assert_exactly_once(run_cli.server, make_rows(3))
        [copy] = queue.take_all(queue.dead)
        assert copy.body == b"not json"
        assert queue.ready() == 0
    finally:
        queue.delete_queue(refusing)


def test_draining_with_the_window_full_of_unknown_outcomes_still_ends(
    run_cli: Cli, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request is stored, then answered with a reset: each outcome is unknown and held
    # unacked until the final reconcile, which only comes once the drain has ended. A window
    # of 1 + 3 messages would fill with them and stall the drain unless it widens.
    run_cli.server.state.update_faults({"reset_rate": 1.0})
    rows = make_rows(20)
    queue.publish([_body(row) for row in rows])

    monkeypatch.setenv("FEEDBACK_PIPELINE_BATCH_SIZE", "1")
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")

    result = run_cli.run(queue.url(), "--drain", "--concurrency", "1")

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    assert queue.ready() == 0  # acked once reconciliation found them stored


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
    assert queue.ready() == 80  # each record published twice
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
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost?queue=q", "no such vhost"),
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
    assert "cannot connect" in result.output
    assert "guest:***@" in result.output
    assert "wrong-s3cret" not in result.output
    assert len(result.output.strip().splitlines()) == 1
