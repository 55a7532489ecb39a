"""RabbitMQ faults with real processes and a real broker: a consumer killed between the POST
and the ack, the broker connection lost mid-run, a following run stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from amqp_helpers import CutProxy, Queue, amqp_url, unique_queue
from conftest import Cli, assert_exactly_once, make_rows, run_command, wait_for

from pipeline.fake import FakeServer, FakeState, Faults


@pytest.fixture
def queue() -> Iterator[Queue]:
    yield from unique_queue()


@pytest.fixture
def env(clean_env: None) -> dict[str, str]:
    """For runs in processes of their own: what ``clean_env`` set, and a short settle wait."""
    return {**os.environ, "FEEDBACK_PIPELINE_SETTLE": "0.5"}


def _publish_rows(queue: Queue, rows: list[dict[str, str]]) -> None:
    queue.publish([json.dumps(row).encode() for row in rows])


def _received(state: FakeState, count: int) -> Callable[[], bool]:
    return lambda: state.posts_received >= count


def _states(ledger: Path) -> dict[str, int]:
    with sqlite3.connect(ledger) as db:
        return dict(db.execute("SELECT state, count(*) FROM records GROUP BY state"))


def test_kill_9_between_post_and_ack_redelivers_and_the_rerun_sends_nothing_twice(
    queue: Queue, env: dict[str, str], tmp_path: Path
) -> None:
    rows = make_rows(60)
    _publish_rows(queue, rows)
    ledger = tmp_path / "ledger.sqlite3"
    # Each answer takes 300 ms: requests are on the wire (POSTed, not yet acked) at the kill.
    state = FakeState(faults=Faults(latency_ms=300))
    kills = 0
    with FakeServer(state) as server:
        command = run_command(server, queue.url(), ledger, "--drain", "--concurrency", "8")
        for target in (10, 30):
            consumer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
            wait_for(_received(state, target), consumer, f"{target} POSTs")
            consumer.kill()  # SIGKILL: no ack, no outcome, no goodbye to the broker
            consumer.wait(timeout=30)
            kills += 1
        received = state.posts_received
        assert _states(ledger).get("in_flight", 0) > 0  # the kill left requests unanswered
        state.update_faults({"latency_ms": 0.0})

        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

        assert rerun.returncode == 0, rerun.stderr
        assert_exactly_once(server, rows)  # each record once, none twice
        assert _states(ledger) == {"sent": 60}
        assert queue.ready() == 0
        print(f"kills={kills} records={len(rows)} duplicates={len(server.state.duplicates())}")
        print(f"POSTs before the rerun: {received}, after: {state.posts_received}")


def test_broker_lost_mid_run_exits_3_and_the_rerun_completes_exactly_once(
    queue: Queue, tmp_path: Path, clean_env: None
) -> None:
    rows = make_rows(80)
    _publish_rows(queue, rows)
    state = FakeState(faults=Faults(latency_ms=200))
    proxy = CutProxy()
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)

        def cut_after_some_posts() -> None:
            deadline = time.monotonic() + 60
            while state.posts_received < 12 and time.monotonic() < deadline:
                time.sleep(0.005)
            proxy.cut()

        cutter = threading.Thread(target=cut_after_some_posts, daemon=True)
        cutter.start()
        try:
            url = amqp_url(queue.name, port=proxy.port)
            result = cli.run(
                url, "--drain", "--concurrency", "4", "--report", str(tmp_path / "r1.json")
            )
        finally:
            cutter.join(timeout=60)
            proxy.close()

        assert result.exit_code == 3, result.output
        assert "connection to the broker lost" in result.output
        assert "guest:guest" not in result.output
        states = _states(cli.ledger)
        # Requests on the wire finished and were recorded: nothing is left in flight.
        assert "in_flight" not in states
        assert states["sent"] == state.stored_count
        assert 0 < state.stored_count < 80
        assert queue.ready() > 0  # requeued by the broker: what was not acked

        rerun = cli.run(queue.url(), "--drain")

        assert rerun.exit_code == 0, rerun.output
        assert_exactly_once(server, rows)
        assert queue.ready() == 0


def test_follow_picks_up_new_messages_and_stops_on_sigterm(
    queue: Queue, env: dict[str, str], tmp_path: Path
) -> None:
    first, later = make_rows(10, prefix="a"), make_rows(10, prefix="b")
    _publish_rows(queue, first)
    ledger = tmp_path / "ledger.sqlite3"
    state = FakeState(faults=Faults(seed=3))
    with FakeServer(state) as server:
        command = run_command(server, queue.url(), ledger)  # no --drain: follow
        consumer = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for(lambda: state.stored_count >= 10, consumer, "the first messages")
            _publish_rows(queue, later)  # published while it runs
            wait_for(lambda: state.stored_count >= 20, consumer, "the later messages")
            wait_for(lambda: _states(ledger).get("sent") == 20, consumer, "the ledger")
            assert consumer.poll() is None  # still following
            consumer.send_signal(signal.SIGTERM)
            _, err = consumer.communicate(timeout=15)  # promptly
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()

    assert consumer.returncode == 0, err  # the first signal is a following run's normal end
    assert "Traceback" not in err
    assert_exactly_once(server, first + later)
    assert _states(ledger) == {"sent": 20}
    assert queue.ready() == 0  # all acked: closing would have requeued the rest


def test_broker_down_at_start_is_one_stderr_line_with_the_url_masked(
    fake_api: FakeServer, env: dict[str, str], tmp_path: Path
) -> None:
    url = "amqp://guest:s3cret@127.0.0.1:1/?queue=q"
    command = run_command(fake_api, url, tmp_path / "ledger.sqlite3", "--drain")

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "feedback-pipeline: amqp://guest:***@127.0.0.1:1/?queue=q: cannot connect: "
        "AMQPConnectionError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    ]
