"""Many worker processes, one rate budget (``--rate-scope``): judged by what the fake API
received and when, against a real Redis."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Cli,
    assert_exactly_once,
    make_rows,
    run_command,
    wait_for,
    write_csv,
)
from redis_helpers import RedisServer, redis_server, scope

from pipeline.fake import FakeServer

__all__ = ["redis_server", "scope"]  # fixtures, used by name

UNREACHABLE = "unreachable (ConnectionError): not sending until it is back"


@dataclass
class Workers:
    """Worker processes, each with its own input and ledger, sharing one fake API."""

    server: FakeServer
    tmp: Path
    procs: list[subprocess.Popen[str]]
    rows: list[dict[str, Any]]

    @classmethod
    def start(cls, server: FakeServer, tmp: Path, n: int, per_worker: int, *extra: str) -> Workers:
        procs, rows = [], []
        for i in range(n):
            mine = make_rows(per_worker, prefix=f"w{i}-")
            rows += mine
            source = write_csv(tmp / f"in{i}.csv", mine)
            command = run_command(server, str(source), tmp / f"ledger{i}.sqlite3", *extra)
            procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        return cls(server, tmp, procs, rows)

    def wait_posts(self, count: int) -> None:
        wait_for(lambda: self.server.state.posts_received >= count, self.procs[0], "POSTs")

    def finish(self) -> list[tuple[int, str]]:
        ended = []
        for proc in self.procs:
            _, err = proc.communicate(timeout=120)
            ended.append((proc.returncode, err))
        return ended

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(clean_env: None, fake_api: FakeServer, tmp_path: Path) -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for group in started:
        group.kill()


def posts_between(server: FakeServer, start: float, end: float) -> int:
    return sum(1 for t in list(server.state.post_times) if start < t < end)


def steady(counts: Sequence[int]) -> list[int]:
    """The whole seconds in which every worker was sending: not the first, not the last."""
    return list(counts[1:-1])


def test_three_workers_share_one_rate(
    workers: list[Workers], fake_api: FakeServer, tmp_path: Path, scope: str
) -> None:
    group = Workers.start(fake_api, tmp_path, 3, 250, "--rate", "100", "--rate-scope", scope)
    workers.append(group)
    for code, err in group.finish():
        assert code == 0, err
    assert_exactly_once(fake_api, group.rows)
    counts = fake_api.state.posts_per_second()
    middle = steady(counts)
    print(f"posts per second: {counts}")  # the report quotes these (pytest -s)
    assert len(middle) >= 4, counts
    # At most the rate, plus one second of burst, over any run of whole seconds (a slot next
    # to a second's boundary lands on either side of it, so single seconds jitter a little).
    for first in range(len(counts)):
        for last in range(first, len(counts)):
            seconds = last - first + 1
            assert sum(counts[first : last + 1]) <= 100 * seconds + 100, counts
    # And at least 90 % of it while every worker is sending.
    assert sum(middle) / len(middle) >= 90, counts


def test_a_429_seen_by_one_worker_pauses_them_all(
    workers: list[Workers], fake_api: FakeServer, tmp_path: Path, scope: str
) -> None:
    group = Workers.start(fake_api, tmp_path, 3, 150, "--rate", "50", "--rate-scope", scope)
    workers.append(group)
    group.wait_posts(30)
    fake_api.state.retry_after_once = 2
    wait_for(lambda: fake_api.state.retry_after_once is None, group.procs[0], "the 429")
    throttled_at = time.monotonic()
    for code, err in group.finish():
        assert code == 0, err
    assert fake_api.state.responses[429] == 1
    assert_exactly_once(fake_api, group.rows)
    # Requests already on the wire or holding a slot (up to the horizon, 250 ms) still go;
    # then nobody sends until the Retry-After is over (at 50/s, ~65 POSTs without the pause).
    assert posts_between(fake_api, throttled_at + 0.6, throttled_at + 1.9) == 0
    assert posts_between(fake_api, throttled_at + 2.0, throttled_at + 30) > 0


def test_no_sending_while_the_scope_is_down(
    workers: list[Workers], fake_api: FakeServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    group = Workers.start(
        fake_api, tmp_path, 2, 150, "--rate", "50", "--rate-scope", redis_server.url
    )
    workers.append(group)
    group.wait_posts(20)
    redis_server.kill()
    down_at = time.monotonic()
    # Down for a while: long enough that, were it sending, 50/s would show.
    wait_for(lambda: time.monotonic() > down_at + 2, group.procs[0], "the outage")
    redis_server.start()
    up_at = time.monotonic()
    ended = group.finish()
    assert posts_between(fake_api, down_at + 0.6, up_at) == 0
    assert posts_between(fake_api, up_at, up_at + 60) > 0  # it went on once Redis was back
    assert_exactly_once(fake_api, group.rows)
    for code, err in ended:
        assert code == 0, err
        assert err.count(UNREACHABLE) == 1, err
        assert err.count("is back: sending again") == 1, err
        assert redis_server.password
        assert redis_server.password not in err


def test_abort_after_max_outage(
    workers: list[Workers], fake_api: FakeServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.kill()
    group = Workers.start(
        fake_api,
        tmp_path,
        1,
        20,
        "--rate",
        "50",
        "--rate-scope",
        redis_server.url,
        "--max-outage",
        "1",
    )
    workers.append(group)
    [(code, err)] = group.finish()
    assert code == 3, err
    assert fake_api.state.posts_received == 0
    assert err.count(UNREACHABLE) == 1, err
    assert "unreachable for more than 1 s (--max-outage)" in err
    assert redis_server.password
    assert redis_server.password not in err


def test_bad_scope_settings_fail_fast(run_cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", make_rows(2))
    no_rate = run_cli.run(str(source), "--rate", "0", "--rate-scope", "redis://127.0.0.1:6379/0")
    assert no_rate.exit_code == 2
    assert "--rate-scope" in no_rate.output
    assert "--rate above 0" in no_rate.output
    bad = run_cli.run(str(source), "--rate-scope", "http://u:pa55word@127.0.0.1:6379/0")
    assert bad.exit_code == 2
    assert "--rate-scope" in bad.output
    assert "pa55word" not in bad.output
    assert run_cli.server.state.posts_received == 0
