"""The live display in a real pseudo-terminal (pexpect), rendered by a terminal emulator
(pyte), during a real run against the fake API; and off a terminal, no control codes at all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pexpect
import pyte
import pytest
from conftest import make_rows, write_csv

from pipeline.fake import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    FakeServer,
    FakeState,
    Faults,
)

COLUMNS, LINES = 120, 60


@pytest.fixture
def slow_api() -> Iterator[FakeServer]:
    state = FakeState(known_assistants={"aia_asst_test"}, faults=Faults(latency_ms=10, seed=7))
    with FakeServer(state) as server:
        yield server


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "TWILIO_"))}
    env.update(
        TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
        TERM="xterm-256color",
        FEEDBACK_PIPELINE_BACKOFF="0.01",
        FEEDBACK_PIPELINE_MAX_BACKOFF="0.05",
    )
    env.pop("NO_COLOR", None)
    return env


def _args(server: FakeServer, tmp_path: Path, *extra: str) -> list[str]:
    rows = make_rows(240) + make_rows(3, assistant="aia_asst_gone", prefix="g")
    rows.append({**make_rows(1, prefix="bad")[0], "score": "2"})
    source = write_csv(tmp_path / "in.csv", rows)
    ledger = tmp_path / "ledger.sqlite3"
    base = ["-m", "pipeline", "run", str(source), "--base-url", server.url]
    return [*base, "--ledger", str(ledger), "--concurrency", "4", "--rate", "0", *extra]


def _in_a_pty(args: list[str]) -> tuple[int, bytes, pyte.Screen]:
    child = pexpect.spawn(sys.executable, args, env=_env(), dimensions=(LINES, COLUMNS), timeout=60)
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    data = b""
    while True:
        try:
            chunk = cast(bytes, child.read_nonblocking(65536, timeout=60))  # no encoding: bytes
        except pexpect.EOF:
            break
        data += chunk
        stream.feed(chunk)
    child.close()
    assert child.exitstatus is not None
    return child.exitstatus, data, screen


def _text(screen: pyte.Screen) -> str:
    return "\n".join(line.rstrip() for line in screen.display if line.strip())


def test_the_live_display_shows_the_run_and_ends_at_100_percent(
    slow_api: FakeServer, tmp_path: Path
) -> None:
    code, data, screen = _in_a_pty(_args(slow_api, tmp_path))

    shown = _text(screen)
    assert code == 1, shown  # one invalid row and the missing assistant's records
    # The last frame, left on the screen: every field, and the whole input done.
    assert re.search(r"━+ 100% of input", shown), shown
    assert re.search(r"read +sent +failed +invalid +skipped +rate", shown), shown
    assert re.search(r"\b244 +240 +3 +1 +0 +\d+/s", shown), shown
    # Whose limit is whose (issue 23, item 7): the user's --rate, and the API's cap if any.
    flow = r"concurrency limit \d+ +rate limit none \(--rate 0\) +API rate cap none found +retries"
    assert re.search(flow, shown), shown
    # Frames were drawn while it went (in place: the cursor moves up over the last frame).
    frames = [int(f) for f in re.findall(rb"(\d+)% of input", data)]
    assert len(frames) >= 2, frames
    assert frames[0] < 100, frames
    assert frames == sorted(frames), frames  # the share done never goes back (item 6)
    assert b"\x1b[2K" in data
    # Log lines appear above the display, and the summary is a table with the top reasons.
    assert "WARNING" in shown
    assert "invalid: score" in shown
    assert re.search(r"┃ read ┃ sent ┃", shown), shown
    assert "top failure reasons" in shown
    assert re.search(r"│ +\d │ failed: (HTTP 404 \(Twilio error 20404\)|not sent: assist)", shown)
    assert re.search(r"│ +1 │ invalid: score: Input should be less than or equal to 1", shown)
    assert slow_api.state.stored_count == 240


def test_quiet_on_a_terminal_logs_progress_lines_instead(
    slow_api: FakeServer, tmp_path: Path
) -> None:
    code, data, screen = _in_a_pty(_args(slow_api, tmp_path, "--quiet", "--log-every", "0.05"))

    shown = _text(screen)
    assert code == 1, shown
    # No display: no bar, and no line erased to draw a frame over it.
    assert not re.search("━+ ", shown)
    assert b"\x1b[2K" not in data
    assert re.search(r"INFO    progress: read \d+, sent \d+", shown), shown


def test_off_a_terminal_nothing_but_plain_lines(slow_api: FakeServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, *_args(slow_api, tmp_path, "--log-every", "0.05")],
        env=_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    for output in (done.stdout, done.stderr):
        assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", output), output[:2000]
    assert b"progress: read " in done.stderr
    assert done.stdout.startswith(b"run: read 244, sent 240, ")
    assert b"top failure reasons:" in done.stdout


def test_an_interrupt_ends_the_display_with_the_summary(tmp_path: Path) -> None:
    rows = make_rows(3000)
    source = write_csv(tmp_path / "in.csv", rows)
    state = FakeState(faults=Faults(latency_ms=50))
    with FakeServer(state) as server:
        args = ["-m", "pipeline", "run", str(source), "--base-url", server.url]
        args += ["--ledger", str(tmp_path / "l.sqlite3"), "--report", str(tmp_path / "r.json")]
        child = pexpect.spawn(
            sys.executable, args, env=_env(), dimensions=(LINES, COLUMNS), timeout=60
        )
        screen = pyte.Screen(COLUMNS, LINES)
        stream = pyte.ByteStream(screen)
        child.expect(rb"% of input")  # the display is up
        stream.feed(cast(bytes, child.before) + cast(bytes, child.after))
        deadline = time.monotonic() + 30
        while state.stored_count < 50:
            assert time.monotonic() < deadline, "nothing was sent"
            time.sleep(0.01)
        child.kill(signal.SIGINT)
        while True:
            try:
                stream.feed(cast(bytes, child.read_nonblocking(65536, timeout=60)))
            except pexpect.EOF:
                break
        child.close()

    shown = _text(screen)
    assert child.exitstatus == 3, shown
    assert "aborted: interrupted by SIGINT" in shown
    assert re.search(r"┃ read ┃ sent ┃", shown), shown
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sent"] == state.stored_count
    # Issue 23: the default --rate is the user's limit, not a cap the API showed (item 7);
    # records the stop kept from being sent are stopped, not failed (item 4).
    assert re.search(r"rate limit 50/s \(--rate\) +API rate cap none found", shown), shown
    assert "rate limit 50/s (--rate), API rate cap none found" in shown
    assert "next time: --rate" not in shown
    assert report["failed"] == 0, report
    assert report["stopped_records"] > 0, report
    assert re.search(r"┃ failed ┃ unknown ┃ stopped ┃", shown), shown
