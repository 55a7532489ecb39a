"""Redis Streams under faults, each run a real process: kill -9 between the POST and the ack,
follow mode ended by SIGTERM, the broker killed mid-run. Judged by the fake API's counts."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    assert_counts_add_up,
    assert_exactly_once,
    make_rows,
    run_command,
    wait_for,
)
from redis_helpers import RedisServer, Stream, redis_server, stream

from pipeline.fake import FakeServer, FakeState, Faults

__all__ = ["redis_server", "stream"]  # fixtures, used by name
OK = "aia_asst_test"


@pytest.fixture
def api(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")
    with FakeServer(FakeState(faults=Faults(seed=5), known_assistants=[OK])) as server:
        yield server


def _start(api: FakeServer, url: str, ledger: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_command(api, url, ledger, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _posts_at_least(api: FakeServer, count: int) -> Callable[[], bool]:
    return lambda: api.state.posts_received >= count


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.mark.parametrize("rerun_as", ["same consumer", "another consumer"])
def test_kill_9_between_post_and_ack_delivers_each_record_once(
    api: FakeServer, stream: Stream, tmp_path: Path, rerun_as: str
) -> None:
    rows = make_rows(60, assistant=OK)
    stream.add(*rows)
    ledger = tmp_path / "ledger.sqlite3"
    # Slow answers: requests are on the wire (received, maybe stored, not acked) at the kill.
    api.state.update_faults({"latency_ms": 150})
    kills = in_flight = 0
    for consumer, posts in (("w1", 8), ("w1" if rerun_as == "same consumer" else "w2", 24)):
        proc = _start(
            api, stream.url(consumer), ledger, "--drain", "--concurrency", "4",
            "--claim-idle", "0.2",  # the second consumer takes over the first one's entries
        )  # fmt: skip
        wait_for(_posts_at_least(api, posts), proc, f"{posts} POSTs")
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        _finish(proc)
        kills += 1
        in_flight += _states(ledger).get("in_flight", 0)
    assert stream.pending() > 0  # entries were taken and never acked
    assert in_flight > 0  # killed between the POST and the outcome (so before the ack)
    api.state.update_faults({"latency_ms": 0})

    # The same name reads its own pending entries back at once; another name has to claim
    # them (after --claim-idle; the default of 60 s would outlast the test's deadline).
    final = ["w1"] if rerun_as == "same consumer" else ["w3", "--claim-idle", "0.2"]
    proc = _start(
        api, stream.url(final[0]), ledger, "--drain", *final[1:], "--report",
        str(tmp_path / "report.json"),
    )  # fmt: skip
    code, out = _finish(proc)

    assert code == 0, out
    assert_exactly_once(api, rows)  # each record stored once, whatever the kills cut
    assert stream.pending() == 0
    summary = json.loads((tmp_path / "report.json").read_text())
    assert_counts_add_up(summary)
    # Entries sent before a kill came again (redelivered or claimed): the ledger skipped them.
    assert summary["skipped"] > 0
    # Some were stored with no outcome recorded (killed between the POST and the ack): the
    # rerun's reconciliation found them, so they were skipped, not sent again.
    assert summary["reconciled_found"] > 0
    print(
        f"kill -9 ({rerun_as}): kills {kills}, records {len(rows)}, claimed without outcome "
        f"at the kills {in_flight}, stored without outcome (reconciled) "
        f"{summary['reconciled_found']}, "
        f"POSTs {api.state.posts_received}, stored {api.state.stored_count}, "
        f"duplicates {sum(api.state.duplicates().values())}"
    )


def test_follow_mode_takes_new_entries_and_ends_on_sigterm_with_exit_0(
    api: FakeServer, stream: Stream, tmp_path: Path
) -> None:
    first, later = make_rows(10, assistant=OK), make_rows(10, assistant=OK, prefix="late")
    stream.add(*first)
    report = tmp_path / "report.json"
    proc = _start(api, stream.url(), tmp_path / "l.sqlite3", "--report", str(report))
    wait_for(lambda: api.state.stored_count >= 10, proc, "the first entries")
    stream.add(*later)  # published while the run follows the stream
    wait_for(lambda: api.state.stored_count >= 20 and stream.pending() == 0, proc, "the later")
    assert proc.poll() is None  # following: it does not end by itself

    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)

    assert code == 0, out
    assert "stopped by SIGTERM (the normal end of a following run)" in out
    assert_exactly_once(api, first + later)
    assert stream.pending() == 0


def test_drain_exits_by_itself_once_the_stream_is_empty(
    api: FakeServer, stream: Stream, tmp_path: Path
) -> None:
    rows = make_rows(5, assistant=OK)
    stream.add(*rows)

    code, out = _finish(_start(api, stream.url(), tmp_path / "l.sqlite3", "--drain"))

    assert code == 0, out
    assert_exactly_once(api, rows)


def test_a_broker_killed_mid_run_exits_3_and_the_rerun_completes_exactly_once(
    api: FakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    password = redis_server.password or ""
    queue = Stream(redis_server.url)
    rows = make_rows(80, assistant=OK)
    queue.add(*rows)
    ledger, report = tmp_path / "ledger.sqlite3", tmp_path / "report.json"
    url = queue.url("worker")
    api.state.update_faults({"latency_ms": 100})

    proc = _start(api, url, ledger, "--drain", "--concurrency", "4", "--report", str(report))
    wait_for(lambda: api.state.posts_received >= 12, proc, "some POSTs")
    redis_server.kill()
    code, out = _finish(proc)

    assert code == 3, out
    assert "redis went away" in out
    assert api.state.stored_count < len(rows)
    assert_counts_add_up(json.loads(report.read_text()))
    redis_server.start()  # same port, same directory: the stream and the group are back
    api.state.update_faults({"latency_ms": 0})

    code, out2 = _finish(_start(api, url, ledger, "--drain", "--report", str(report)))

    assert code == 0, out2
    assert_exactly_once(api, rows)
    queue.redis = type(queue.redis).from_url(redis_server.url)
    assert queue.pending() == 0
    # The password appears nowhere: output, report, ledger (its run records included).
    for text in (out, out2, report.read_text()):
        assert password not in text
    assert ":***@127.0.0.1" in out  # the source is named, masked
    for path in tmp_path.glob("ledger.sqlite3*"):
        assert password.encode() not in path.read_bytes()
    queue.redis.close()


def test_a_password_never_shows_in_a_run(
    api: FakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    password = redis_server.password or ""
    queue = Stream(redis_server.url)
    queue.add({"assistant_id": OK, "session_id": "s1", "score": "2"})  # invalid: a problem line
    report = tmp_path / "report.json"

    code, out = _finish(
        _start(api, queue.url(), tmp_path / "l.sqlite3", "--drain", "--report", str(report))
    )

    assert code == 1, out
    assert password not in out
    assert password not in report.read_text()
    assert password.encode() not in (tmp_path / "l.sqlite3").read_bytes()
    queue.redis.close()


def test_what_reconcile_found_not_stored_stays_pending_and_the_next_run_sends_it(
    api: FakeServer, stream: Stream, tmp_path: Path
) -> None:
    # A 500 may or may not have stored the record; here it did not. The following run's
    # periodic reconcile says so: the entries are not acked, and the next run sends them
    # (this run would take them for duplicates of its own: see docs/brokers/redis.md).
    api.state.update_faults({"error_status": 500})
    rows = make_rows(4, assistant=OK)
    stream.add(*rows)
    ledger = tmp_path / "l.sqlite3"
    url = stream.url("only-worker")
    proc = _start(api, url, ledger, "--reconcile-every", "0.1", "--claim-idle", "0.3")
    wait_for(lambda: _states(ledger) == {"failed": 4}, proc, "reconcile: not stored")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)
    assert code == 1, out  # failed records: exit 1 even at a normal end
    assert stream.pending() == 4
    assert api.state.stored_count == 0
    api.state.update_faults({"error_status": None})

    code, out = _finish(_start(api, url, ledger, "--drain"))

    assert code == 0, out
    assert_exactly_once(api, rows)
    assert stream.pending() == 0


def _states(ledger: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(ledger) as db:
            rows = db.execute("SELECT state, COUNT(*) FROM records GROUP BY state").fetchall()
    except sqlite3.Error:
        return {}
    return {state: n for state, n in rows}


def test_entries_taken_but_not_sent_at_sigterm_are_released_and_sent_by_the_next_run(
    api: FakeServer, stream: Stream, tmp_path: Path
) -> None:
    api.state.update_faults({"latency_ms": 300})
    rows = make_rows(10, assistant=OK)
    stream.add(*rows)
    ledger, report = tmp_path / "l.sqlite3", tmp_path / "report.json"
    url = stream.url("svc")
    proc = _start(api, url, ledger, "--concurrency", "1", "--report", str(report))
    wait_for(_posts_at_least(api, 1), proc, "a first POST")

    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)

    assert code == 0, out  # the service's normal end: the rest is not a failure
    summary = json.loads(report.read_text())
    assert_counts_add_up(summary)
    assert summary["failed"] == 0
    assert summary["released"] > 0
    assert summary["sent"] + summary["released"] == len(rows)
    assert stream.pending() == summary["released"]  # not acked: still the queue's
    api.state.update_faults({"latency_ms": 0})

    code, out = _finish(_start(api, url, ledger, "--drain", "--report", str(report)))

    assert code == 0, out
    assert_exactly_once(api, rows)
    assert stream.pending() == 0
