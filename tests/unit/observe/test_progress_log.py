"""Off a terminal (here: a test runner's pipes), a run writes one timestamped progress line
every --log-every seconds: real runs against the fake API, lines parsed."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path

import pytest
from conftest import Cli, assert_exactly_once, make_rows, write_csv

from pipeline.observe.monitor import Monitor, RateMeter, Snapshot, progress_line
from pipeline.observe.summary import Summary
from pipeline.sources import FileSource, SourceOptions, open_source

LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) INFO    progress: read (?P<read>\d+), "
    r"sent (?P<sent>\d+) \((?P<rate>\d+)/s\), failed (?P<failed>\d+), invalid (?P<invalid>\d+), "
    r"skipped (?P<skipped>\d+), duplicate (?P<duplicate>\d+), (?:released \d+, )?"
    r"limit (?P<limit>\d+), retries (?P<retries>\d+)"
    r"(?:, (?P<pct>\d+)% of input(?:, ETA [\d:]+)?)? \([\d:]+ elapsed\)$"
)


def _slow(run_cli: Cli) -> None:
    run_cli.server.state.update_faults({"latency_ms": 15})


def test_a_run_logs_progress_lines_that_add_up(run_cli: Cli, tmp_path: Path) -> None:
    _slow(run_cli)
    rows = make_rows(60)
    source = write_csv(tmp_path / "in.csv", rows)

    result = run_cli.run(str(source), "--concurrency", "2", "--log-every", "0.05")

    assert result.exit_code == 0, result.output
    lines = [m for m in map(LINE.match, result.stderr.splitlines()) if m]
    assert len(lines) >= 3, result.stderr
    sent = [int(m["sent"]) for m in lines]
    assert sent == sorted(sent)
    assert sent[-1] <= 60
    assert sent[0] < 60
    assert [m["ts"] for m in lines] == sorted(m["ts"] for m in lines)
    for m in lines:
        assert int(m["read"]) >= int(m["sent"]) + int(m["failed"])
        assert int(m["limit"]) <= 2
        assert m["pct"] is not None
        assert 0 <= int(m["pct"]) <= 100
    assert any(int(m["rate"]) > 0 for m in lines)
    assert_exactly_once(run_cli.server, rows)


def test_json_progress_events_carry_the_counts(run_cli: Cli, tmp_path: Path) -> None:
    _slow(run_cli)
    source = write_csv(tmp_path / "in.csv", make_rows(40))

    result = run_cli.run(
        str(source), "--concurrency", "2", "--log-every", "0.05", "--log-format", "json"
    )

    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 2
    for e in progress:
        assert e["level"] == "INFO"
        assert e["message"].startswith("progress: read ")
        assert e["bytes_total"] == source.stat().st_size
        assert 0 <= e["bytes_read"] <= e["bytes_total"]
        assert e["read"] >= e["sent"]
        # None before delivery starts (a line may come while the ledger opens, under load).
        assert e["limit"] is None or e["limit"] <= 2
    assert any(e["limit"] == 2 for e in progress)


def test_stdin_has_no_percentage_and_the_default_interval_logs_nothing(
    run_cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", make_rows(10))
    _slow(run_cli)

    piped = run_cli.run(
        "-",
        "--format",
        "csv",
        "--concurrency",
        "1",
        "--log-every",
        "0.01",
        stdin=source.read_bytes(),
    )
    quick = run_cli.run(str(source))  # 60 s default: a short run has no progress line

    assert piped.exit_code == 0
    assert quick.exit_code == 0
    lines = [m for m in map(LINE.match, piped.stderr.splitlines()) if m]
    assert lines
    assert all(m["pct"] is None for m in lines)
    assert "progress:" not in quick.stderr


async def test_file_progress_counts_bytes_read_of_plain_and_gzip_files(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "a.csv", make_rows(2000))
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    options = SourceOptions(batch_size=100, concurrency=1, drain=True, claim_idle=1)
    for path in (plain, packed):
        source = await open_source(str(path), options)
        assert isinstance(source, FileSource)
        total = path.stat().st_size
        assert source.progress() == (0, total)
        seen: list[tuple[int, int]] = []
        async for _ in source.batches(asyncio.Event()):
            measured = source.progress()
            assert measured is not None
            seen.append(measured)
        assert seen[-1] == (total, total)
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)
        await source.close()


def test_rate_eta_and_line_on_a_fake_clock() -> None:
    now = [0.0]
    summary = Summary("run", "r1")

    class Half:
        def progress(self) -> tuple[int, int]:
            return 500, 1000

    monitor = Monitor(summary, [Half()], clock=lambda: now[0])
    meter = RateMeter(window=10)
    meter(monitor.snapshot())
    now[0] = 4.0
    summary.read, summary.sent, summary.invalid = 100, 75, 5  # 20 in flight
    snap = monitor.snapshot()
    assert meter(snap) == 18.75
    assert snap.fraction == 0.4
    assert snap.eta == pytest.approx(6.0)
    assert progress_line(snap, 18.75) == (
        "progress: read 100, sent 75 (19/s), failed 0, invalid 5, skipped 0, duplicate 0, "
        "retries 0, "
        "40% of input, ETA 0:06 (0:04 elapsed)"
    )
    queue = Snapshot(1, 1, 1, 0, 0, 0, 0, 0, 1, 0, None, None, None)
    assert queue.fraction is None
    assert queue.eta is None


def test_the_progress_line_says_what_a_drain_waits_for() -> None:
    class Draining:
        def waiting(self) -> str | None:
            return "3 entries held by consumer w1, idle 12 s"

    monitor = Monitor(Summary("run", "r1"), [Draining()], clock=lambda: 0.0)
    snap = monitor.snapshot()
    assert progress_line(snap, 0.0).endswith(
        "waiting for 3 entries held by consumer w1, idle 12 s (0:00 elapsed)"
    )
