"""Many worker processes on one PostgreSQL ledger, judged by the fake API's counts."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exactly_once, make_rows, wait_for
from pg_helpers import PgSchema, pg_schema
from redis_helpers import Stream, stream

from pipeline.fake import FakeServer, FakeState, Faults

__all__ = ["pg_schema", "stream"]  # fixtures, used by name
OK = "aia_asst_test"


@pytest.fixture
def api(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")
    # A dead worker's records are settled once its lease and its requests' time bound passed.
    monkeypatch.setenv("FEEDBACK_PIPELINE_TIMEOUT", "2")
    with FakeServer(FakeState(faults=Faults(seed=7), known_assistants=[OK])) as server:
        yield server


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=90)
    return proc.returncode, out


def _pipeline(api: FakeServer, command: str, ledger: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", command, "--base-url", api.url, "--ledger",
            ledger, *extra]  # fmt: skip


def _run(api: FakeServer, source: str, ledger: str, *extra: str) -> list[str]:
    return _pipeline(api, "run", ledger, source, "--no-progress", *extra)


def _count(schema: PgSchema, sql: str) -> int:
    return int(asyncio.run(schema.fetch(sql))[0][0])


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def _workers(
    api: FakeServer, stream: Stream, ledger: str, tmp_path: Path, names: list[str]
) -> list[subprocess.Popen[str]]:
    return [
        _start(_run(api, stream.url(name), ledger, "--drain", "--concurrency", "4",
                    "--claim-idle", "0.5", "--report", str(tmp_path / f"{name}.json")))
        for name in names
    ]  # fmt: skip


def test_three_workers_drain_one_stream_into_one_ledger(
    api: FakeServer, stream: Stream, pg_schema: PgSchema, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    rows = make_rows(300, assistant=OK)
    stream.add(*rows)
    monkeypatch.setenv("FEEDBACK_PIPELINE_BATCH_SIZE", "10")  # small reads: all workers get some
    api.state.update_faults({"latency_ms": 20})
    names = ["w0", "w1", "w2"]
    for proc in _workers(api, stream, pg_schema.url(), tmp_path, names):
        code, out = _finish(proc)
        assert code == 0, out
    assert_exactly_once(api, rows)
    assert stream.pending() == 0
    reports = [_report(tmp_path / f"{name}.json") for name in names]
    assert sum(r["sent"] for r in reports) == len(rows)
    assert sum(1 for r in reports if r["sent"]) >= 2  # the work was shared


def test_two_replays_at_once_send_each_failed_record_once(
    api: FakeServer, pg_schema: PgSchema, tmp_path: Path
) -> None:
    rows = make_rows(200, assistant=OK)
    source = tmp_path / "in.csv"
    source.write_text(
        "assistant_id,session_id,message_id,score,text\n"
        + "".join(f"{r['assistant_id']},{r['session_id']},{r['message_id']},{r['score']},"
                  f"\"{r['text']}\"\n" for r in rows)
    )  # fmt: skip
    ledger = pg_schema.url()
    # Every request is refused with a 503: all records end failed, none stored.
    api.state.update_faults({"fail_rate": 1.0})
    code, out = _finish(_start(_run(api, str(source), ledger, "--max-attempts", "1")))
    assert api.state.stored_count == 0, out
    api.state.update_faults({"fail_rate": 0.0})
    replays = [
        _start(_pipeline(api, "replay", ledger, "--no-progress", "--report",
                         str(tmp_path / f"r{i}.json")))
        for i in range(2)
    ]  # fmt: skip
    for proc in replays:
        code, out = _finish(proc)
        assert code == 0, out
    assert_exactly_once(api, rows)
    sent = [_report(tmp_path / f"r{i}.json")["sent"] for i in range(2)]
    assert sum(sent) == len(rows)


def test_a_live_workers_records_are_reconciled_only_after_its_lease_expires(
    api: FakeServer, pg_schema: PgSchema, stream: Stream, tmp_path: Path
) -> None:
    rows = make_rows(40, assistant=OK)
    stream.add(*rows)
    ledger = pg_schema.url(lease="2")
    api.state.update_faults({"latency_ms": 3000})  # slow: requests stay on the wire
    slow = _start(_run(api, stream.url("slow"), ledger, "--drain",
                              "--concurrency", "4"))  # fmt: skip
    try:
        wait_for(lambda: api.state.posts_received >= 4, slow, "requests on the wire")
        # While it is alive (its heartbeat renews the lease), reconcile leaves its records be.
        code, out = _finish(_start(_pipeline(api, "reconcile", ledger, "--settle", "0")))
        assert code == 0, out
        assert "0 uncertain records" in out, out
        slow.send_signal(signal.SIGKILL)
        _finish(slow)
    finally:
        if slow.poll() is None:
            slow.kill()
    api.state.update_faults({"latency_ms": 0})
    # In flight, or unknown: a request can time out (--timeout 2) before the kill, on a
    # loaded machine; reconciliation settles both.
    in_flight = _count(
        pg_schema, "SELECT count(*) FROM {s}.records WHERE state IN ('in_flight', 'unknown')"
    )
    assert in_flight > 0
    live = "SELECT count(*) FROM {s}.runs WHERE lease_until >= extract(epoch FROM now())"
    deadline = time.monotonic() + 30
    while _count(pg_schema, live):  # polling with a deadline: the lease is 2 s
        assert time.monotonic() < deadline, "the killed worker's lease never expired"
        time.sleep(0.05)
    # After the kill, once its lease ran out, they are settled: stored ones become sent.
    code, out = _finish(_start(_pipeline(api, "reconcile", ledger, "--settle", "3")))
    assert code == 0, out
    assert f"reconcile: {in_flight} uncertain records" in out, out
    assert _count(pg_schema, "SELECT count(*) FROM {s}.records WHERE state = 'in_flight'") == 0
    sent = _count(pg_schema, "SELECT count(*) FROM {s}.records WHERE state = 'sent'")
    assert sent == api.state.stored_count  # what the API holds is what the ledger says
