"""NATS JetStream as a source and as enqueue's destination, end to end: a real server, the
real CLI, a real SQLite ledger and the fake API over a socket; judged by the fake's counts
and the consumer's own (pending, unacked, redelivered)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, JetStreamManager
from nats.js.api import AckPolicy, ConsumerConfig
from nats_helpers import PORT, JsStream, run, unique_stream
from source_calls import first_batch, source_options
from tcp_proxy import TcpProxy

from pipeline.errors import DeadLetterError, SourceError
from pipeline.sources.base import Done
from pipeline.sources.nats.dead import HEADER_LIMIT, dead_letter
from pipeline.sources.nats.records import MESSAGE_LIMIT, to_record
from pipeline.sources.nats.stream import open_source
from pipeline.sources.queue_depth import depth


@pytest.fixture
def stream() -> Iterator[JsStream]:
    yield from unique_stream()


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _redelivered(stream: JsStream, consumer: str = "workers") -> int:
    async def action(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> int:
        return (await jsm.consumer_info(stream.name, consumer)).num_redelivered or 0

    return run(action)


def test_drain_stores_each_message_once_and_dead_letters_the_bad_ones(
    run_cli: Cli, stream: JsStream, tmp_path: Path
) -> None:
    rows = make_rows(30)
    bad = [b'{"session_id": "\xff"}', b'{"session_id": ', b"[1, 2]", b'{"score": 7}']
    stream.publish([json.dumps(row).encode() for row in rows[:15]])
    stream.publish(bad[:3], headers={"from": "producer", "Nats-Expected-Stream": stream.name})
    stream.publish(bad[3:])
    stream.publish([json.dumps(row).encode() for row in rows[15:]])

    result = run_cli.run(stream.url(), "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 1, result.output  # invalid records
    assert_exactly_once(run_cli.server, rows)
    report = run_cli.report()
    assert (report["sent"], report["invalid"]) == (30, 4)
    assert_counts_add_up(report)
    assert stream.counts() == (0, 0)  # nothing pending, nothing unacked
    dead = stream.messages(stream.dead_stream)
    assert [data for data, _ in dead] == bad
    reasons = [headers["reason"] for _, headers in dead]
    assert all(r.startswith("invalid: ") for r in reasons)
    assert "not valid UTF-8" in reasons[0]
    assert "session_id: Field required" in reasons[3]
    first = dead[0][1]
    assert first["location"] == f"nats:{stream.name}/16"
    assert (first["stream"], first["from"]) == (stream.name, "producer")  # theirs travel along
    assert "Nats-Expected-Stream" not in first  # JetStream's instructions do not
    assert f"nats:{stream.name}/17: invalid: invalid JSON" in result.output


def test_enqueue_twice_is_stored_once_by_jetstream_and_no_password_leaks(
    run_cli: Cli, stream: JsStream, tmp_path: Path
) -> None:
    rows = make_rows(40)
    source = _jsonl(tmp_path / "in.jsonl", rows)
    # The shared test server has no accounts: it lets any user in; what matters is that the
    # password is never printed or stored.
    url = stream.url().replace("nats://", "nats://user:s3cret@")

    first = run_cli("enqueue", str(source), "--to", url)
    second = run_cli("enqueue", str(source), "--to", url)

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    # The key is the message id: the second enqueue was within the duplicate window.
    assert stream.counts() == (40, 0)
    stored = stream.messages(stream.name)
    assert [h["Nats-Msg-Id"] for _, h in stored] == [json.loads(d)["key"] for d, _ in stored]
    result = run_cli.run(url, "--drain", "--report", str(tmp_path / "report.json"))
    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    assert stream.counts() == (0, 0)
    ledger = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*"))
    for text in (
        first.output,
        second.output,
        result.output,
        (tmp_path / "report.json").read_text(),
    ):
        assert "s3cret" not in text
    assert b"s3cret" not in ledger


def test_a_record_in_flight_past_the_ack_wait_is_never_delivered_again(
    run_cli: Cli, stream: JsStream
) -> None:
    rows = make_rows(6)
    stream.publish([json.dumps(row).encode() for row in rows])
    run_cli.server.state.update_faults({"latency_ms": 1500})  # five ack waits on the wire

    result = run_cli.run(stream.url(), "--drain", "--claim-idle", "0.3", "--concurrency", "2")

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows)
    assert stream.counts() == (0, 0)
    assert _redelivered(stream) == 0  # the progress acks kept every ack wait from lapsing


def test_a_message_on_its_last_delivery_is_dead_lettered_not_risked(
    run_cli: Cli, stream: JsStream
) -> None:
    rows = make_rows(2)
    stream.publish([json.dumps(row).encode() for row in rows])

    async def hold_one(_: Client, js: JetStreamContext, jsm: JetStreamManager) -> None:
        config = ConsumerConfig(
            durable_name="md", ack_policy=AckPolicy.EXPLICIT, ack_wait=0.3, max_deliver=2
        )
        await jsm.add_consumer(stream.name, config)
        sub = await js.pull_subscribe_bind("md", stream.name)
        assert len(await sub.fetch(1, timeout=5)) == 1  # its first delivery, never acked

    run(hold_one)
    url = stream.url().replace("consumer=workers", "consumer=md")

    result = run_cli.run(url, "--drain", "--claim-idle", "0.3")

    assert result.exit_code == 0, result.output
    assert_exactly_once(run_cli.server, rows[1:])  # the other one: its first delivery
    [(data, headers)] = stream.messages(stream.dead_stream)
    assert json.loads(data) == rows[0]
    assert "delivered 2 times without an outcome (max_deliver=2)" in headers["reason"]
    assert stream.counts("md") == (0, 0)  # acked once its copy was stored


def test_a_message_over_the_limit_is_an_invalid_record_unparsed() -> None:
    # Only a server configured with a max_payload over 1 MiB can carry one.
    reply = "$JS.ACK.s.c.1.7.7.1700000000000000000.0"
    msg = Msg(_client=None, subject="s", reply=reply, data=b" " * (MESSAGE_LIMIT + 1))  # type: ignore[arg-type]
    record = to_record("s", msg)
    assert record.location == "nats:s/7"
    assert f"more than {MESSAGE_LIMIT}" in (record.error or "")


def test_depth_reads_the_consumer_and_a_stream_no_one_read_yet(stream: JsStream) -> None:
    stream.publish([b"{}", b"{}", b"{}"])
    found = asyncio.run(depth(stream.url()))
    assert (found.backlog, found.pending) == (3, 0)
    fresh = asyncio.run(depth(stream.url().replace("consumer=workers", "consumer=nobody")))
    assert (fresh.backlog, fresh.pending, fresh.empty) == (3, 0, False)


def test_a_copy_too_big_for_the_server_keeps_our_headers_and_says_what_was_left_out() -> None:
    big = {"x-big": "h" * (HEADER_LIMIT - 40)}
    copy = dead_letter(b"{}", big, "invalid: x", "nats:s/1", "s", 1 << 20)
    assert (copy.data, copy.headers["reason"]) == (b"{}", "invalid: x")
    assert "x-big" not in copy.headers
    assert "original headers" in (copy.truncated or "")
    huge = dead_letter(b"x" * 1000, None, "invalid:\nmulti\r\nline", "nats:s/2", "s", 1000)
    assert huge.data == b""
    assert "data (1000 bytes)" in (huge.truncated or "")
    assert huge.headers["reason"] == "invalid: multi line"  # one header line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://u:s3cret@127.0.0.1:1?stream=s&consumer=c", "nats://u:***@127.0.0.1:1"),
        ("nats://u:s3cret@127.0.0.1:4222?consumer=c", "name the stream"),
        ("nats://127.0.0.1:4222?stream=s", "name the durable consumer"),
        ("nats://127.0.0.1:4222?stream=a.b&consumer=c", "not a valid JetStream name"),
        ("nats://127.0.0.1:4222?stream=s&consumer=c&max_deliver=0", "at least 1"),
        ("nats://127.0.0.1:4222?stream=s&consumer=c&max_deliver=x", "whole number"),
        ("nats://127.0.0.1:4222?stream=s&consumer=c&qeue=x", "unknown parameter qeue="),
        ("nats://u:s3cret@127.0.0.1:notaport?stream=s&consumer=c", "not a valid URL"),
    ],
)
def test_a_server_that_cannot_be_used_at_start_is_one_line_and_exit_2(
    run_cli: Cli, url: str, expected: str
) -> None:
    results = [run_cli.run(url, "--drain")]
    if "consumer" not in expected:  # enqueue needs no consumer
        line = b'{"session_id": "s"}\n'
        results.append(run_cli("enqueue", "-", "--format", "jsonl", "--to", url, stdin=line))
    for result in results:
        assert result.exit_code == 2, result.output
        assert expected in result.output
        assert "s3cret" not in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_dead_letters_stored_in_the_stream_read_are_refused(run_cli: Cli, stream: JsStream) -> None:
    async def widen(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> None:
        await jsm.update_stream(name=stream.name, subjects=[stream.name, stream.dead])

    run(widen)
    result = run_cli.run(stream.url(), "--drain")
    assert result.exit_code == 2, result.output
    assert "is stored in the stream this consumer reads" in result.output


# --- the source's own calls, in process --------------------------------------------------


async def test_given_back_records_come_again_and_a_refused_copy_keeps_its_message(
    stream: JsStream,
) -> None:
    await asyncio.to_thread(stream.publish, [b'{"session_id": "s1"}', b"not json"])
    await asyncio.to_thread(
        run,
        lambda _, __, jsm: jsm.add_stream(
            name=stream.dead_stream, subjects=[stream.dead], max_msg_size=1
        ),
    )
    source = await open_source(stream.url(), source_options())
    try:
        stop = asyncio.Event()
        first = await first_batch(source, stop)
        assert [r.location for r in first] == [f"nats:{stream.name}/1", f"nats:{stream.name}/2"]
        assert await source.depth() == (0, 2)
        source.release([first[0].handle])
        again = await first_batch(source, stop)  # after claim_idle, handed on by this run
        assert [r.location for r in again] == [first[0].location]
        with pytest.raises(DeadLetterError) as refused:
            await source.ack([Done(first[0].handle), Done(first[1].handle, "invalid: x")])
        assert refused.value.refused == 1
        assert "stays on its stream, unacked" in str(refused.value)
        assert await source.depth() == (0, 1)  # the refused one is still held
    finally:
        await source.close()


async def test_a_cut_link_ends_the_reading_with_one_line(stream: JsStream) -> None:
    await asyncio.to_thread(stream.publish, [b'{"session_id": "s1"}'])
    proxy = TcpProxy("127.0.0.1", PORT)
    proxy.start()
    try:
        source = await open_source(stream.url(proxy.port), source_options(drain=False))
        stop = asyncio.Event()
        [record] = await first_batch(source, stop)
        proxy.cut()
        with pytest.raises(SourceError, match="connection to the server lost"):
            await first_batch(source, stop)
        with pytest.raises(SourceError, match="connection to the server lost"):
            await source.ack([Done(record.handle)])
        await source.close()
    finally:
        proxy.close()


async def test_depth_of_a_missing_stream_is_one_line() -> None:
    with pytest.raises(SourceError, match="reading the stream"):
        await depth(f"nats://127.0.0.1:{PORT}?stream=fpnosuch{uuid.uuid4().hex[:8]}&consumer=c")


@pytest.mark.parametrize("drain", [True, False], ids=["drain", "follow"])
async def test_a_consumer_deleted_under_the_run_is_said_as_such(
    stream: JsStream, drain: bool
) -> None:
    await asyncio.to_thread(stream.publish, [b'{"session_id": "s1"}'])
    source = await open_source(stream.url(), source_options(drain=drain))
    try:
        stop = asyncio.Event()
        [record] = await first_batch(source, stop)
        await source.ack([Done(record.handle)])
        await asyncio.to_thread(
            run, lambda _, __, jsm: jsm.delete_consumer(stream.name, stream.consumer)
        )
        async with asyncio.timeout(10):  # a pull request's wait and its grace, not forever
            with pytest.raises(SourceError) as gone:
                await first_batch(source, stop)
        assert f"consumer {stream.consumer} of stream {stream.name} no longer exists" in str(
            gone.value
        )
        assert "connection" not in str(gone.value)
    finally:
        await source.close()
