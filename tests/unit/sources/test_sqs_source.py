"""Amazon SQS as a source and as enqueue's destination, end to end: moto's SQS server on
loopback, the real CLI, a real SQLite ledger and the fake API over a socket; judged by the
fake's counts and the queue's own (visible, in flight)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows
from source_calls import first_batch, source_options
from sqs_helpers import SqsQueue, unique_queue

from pipeline.errors import DeadLetterError, SourceError
from pipeline.models import RawRecord
from pipeline.sources.base import Done
from pipeline.sources.queue_depth import depth
from pipeline.sources.sqs.dead import dead_letter
from pipeline.sources.sqs.publish import fifo_id
from pipeline.sources.sqs.queue import open_source


@pytest.fixture
def queue() -> Iterator[SqsQueue]:
    yield from unique_queue()


@pytest.fixture
def fifo() -> Iterator[SqsQueue]:
    yield from unique_queue(fifo=True)


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_drain_stores_each_message_once_and_dead_letters_the_bad_ones(
    run_cli: Cli, queue: SqsQueue, tmp_path: Path
) -> None:
    rows = make_rows(30)
    bad = ['{"session_id": ', "[1, 2]", '{"score": 7}']
    queue.send([json.dumps(row) for row in rows[:15]])
    queue.send(bad, {"from": {"DataType": "String", "StringValue": "producer"}})
    queue.send([json.dumps(row) for row in rows[15:]])

    result = run_cli.run(queue.url(), "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 1, result.output  # invalid records
    assert_exactly_once(run_cli.server, rows)
    report = run_cli.report()
    assert (report["sent"], report["invalid"]) == (30, 3)
    assert_counts_add_up(report)
    assert queue.counts() == (0, 0, 0)  # every message deleted
    dead = queue.receive(10, visibility=60, name=queue.dead)
    assert sorted(m["Body"] for m in dead) == sorted(bad)
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["reason"].startswith("invalid: ")
        assert attributes["location"].startswith(f"sqs:{queue.name}/")
        assert (attributes["queue"], attributes["from"]) == (queue.name, "producer")
    assert f"sqs:{queue.name}/" in result.output


def test_fifo_enqueue_twice_is_stored_once_by_its_deduplication_id(
    run_cli: Cli, fifo: SqsQueue, tmp_path: Path
) -> None:
    rows = make_rows(25)  # three SendMessageBatch calls of at most ten
    source = _jsonl(tmp_path / "in.jsonl", rows)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"session_id": "x", "score": 7}])

    first = run_cli("enqueue", str(source), "--to", fifo.url())
    second = run_cli("enqueue", str(source), "--to", fifo.url())

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert fifo.counts() == (25, 0, 0)  # the key is the de-duplication id: stored once
    fifo.send([bad.read_text().strip()])
    result = run_cli.run(fifo.url(), "--drain")
    assert result.exit_code == 1, result.output
    assert_exactly_once(run_cli.server, rows)
    assert fifo.counts() == (0, 0, 0)
    [copy] = fifo.receive(10, visibility=60, name=fifo.dead)  # the FIFO dead letters' queue
    assert copy["MessageAttributes"]["reason"]["StringValue"].startswith("invalid: ")


def test_a_record_in_flight_past_the_visibility_timeout_is_never_received_again(
    run_cli: Cli, queue: SqsQueue
) -> None:
    rows = make_rows(4)
    queue.send([json.dumps(row) for row in rows])
    run_cli.server.state.update_faults({"latency_ms": 2500})  # over two visibility timeouts

    result = run_cli.run(queue.url(), "--drain", "--claim-idle", "1", "--concurrency", "4")

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    assert queue.counts() == (0, 0, 0)
    # Received once each: a lapse would have been received again, and said.
    assert "could not be extended" not in result.output
    assert run_cli.server.state.posts_received == 4


def test_depth_reads_the_queue_counts(queue: SqsQueue) -> None:
    queue.send(["{}", "{}", "{}"])
    queue.receive(1, visibility=60)
    found = asyncio.run(depth(queue.url()))
    assert (found.backlog, found.pending, found.empty) == (2, 1, False)


def test_fifo_ids_and_a_copy_that_does_not_fit() -> None:
    assert fifo_id("k-1") == "k-1"
    assert len(fifo_id("a key with spaces")) == 64  # hashed: spaces are not allowed
    many = {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(8)}
    copy = dead_letter("{}", many, "invalid: x", "sqs:q/1", "q", 262144)
    assert set(copy.attributes) == {"reason", "location", "queue", "truncated"}
    assert "at most 10 attributes" in (copy.truncated or "")
    big = dead_letter("x" * 2000, None, "invalid:\nx", "sqs:q/2", "q", 1024)
    assert big.body == "-"
    assert "body (2000 bytes)" in (big.truncated or "")
    assert big.attributes["reason"]["StringValue"] == "invalid: x"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqs://?region=us-east-1", "name the queue"),
        ("sqs://bad name?region=us-east-1", "name the queue"),
        ("sqs://q?region=us-east-1&wait=30", "wait= is seconds of long polling"),
        ("sqs://q?region=us-east-1&endpoint=ftp://x", "endpoint= must be"),
        ("sqs://q?region=us-east-1&dead=a/b", "not a valid queue name"),
        ("sqs://q?region=us-east-1&queue=x", "unknown parameter queue="),
        ("sqs://q?region=us-east-1&endpoint=http://127.0.0.1:1", "127.0.0.1:1"),
    ],
)
def test_a_queue_that_cannot_be_used_at_start_is_one_line_and_exit_2(
    run_cli: Cli, url: str, expected: str
) -> None:
    results = [
        run_cli.run(url, "--drain"),
        run_cli("enqueue", "-", "--format", "jsonl", "--to", url, stdin=b'{"session_id": "s"}\n'),
    ]
    for result in results:
        assert result.exit_code == 2, result.output
        assert expected in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


# --- the source's own calls, in process --------------------------------------------------


async def test_given_back_records_come_again_and_a_refused_copy_keeps_its_message(
    queue: SqsQueue,
) -> None:
    refusing = f"{queue.dead}-refusing.fifo"  # of the other type: SQS refuses every copy
    await asyncio.to_thread(queue.create, refusing)
    await asyncio.to_thread(queue.send, ['{"session_id": "s1"}', "not json"])
    source = await open_source(queue.url(dead=refusing), source_options())
    try:
        stop = asyncio.Event()
        first: list[RawRecord] = []
        while len(first) < 2:
            first += await first_batch(source, stop)
        assert all(r.location.startswith(f"sqs:{queue.name}/") for r in first)
        assert await source.depth() == (0, 2)
        good = next(r for r in first if r.error is None)
        bad = next(r for r in first if r.error is not None)
        source.release([good.handle])
        again = await first_batch(source, stop)  # after claim_idle, handed on by this run
        assert [r.location for r in again] == [good.location]
        with pytest.raises(DeadLetterError) as refused:
            await source.ack([Done(good.handle), Done(bad.handle, "invalid: x")])
        assert refused.value.refused == 1
        assert "stays on its queue" in str(refused.value)
        assert await source.depth() == (0, 1)  # the refused one is still held
    finally:
        await source.close()


async def test_depth_of_a_missing_queue_is_one_line(queue: SqsQueue) -> None:
    missing = queue.url().replace(queue.name, f"fpnosuch-{uuid.uuid4().hex[:8]}")
    with pytest.raises(SourceError, match="NonExistentQueue|QueueDoesNotExist"):
        await depth(missing)
