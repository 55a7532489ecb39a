"""Property: whatever happens to runs (kill -9, signals, reruns, replays, a second run through
another path to the ledger, a flaky API), two invariants hold, judged by the fake API itself:

1. once clean reruns are done, every valid record is stored by the API exactly once;
2. at every point, no record is ``sent`` in the ledger that the API does not hold.

Each example is a short story of real processes against a real fake API on a socket, drawn
by Hypothesis. The stories are derandomized (the same examples on every machine, so CI is
reproducible) and few (each costs a few process starts); shrinking is off, because each
replay of a story costs seconds: a failure prints the story as drawn.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    assert_exactly_once,
    handles_sigterm,
    make_rows,
    run_command,
    wait_for,
    write_csv,
)
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pipeline.fake import FakeServer, FakeState, Faults

Step = tuple[Any, ...]

#: While a "late" run goes, the API takes this long to store what it received: what a killed
#: run had on the wire is stored after its death, later than a rerun starts, so only an honest
#: settle wait finds it. Set back right after the kill (requests already in keep their delay).
LATE_MS = 1500.0

steps = st.one_of(
    st.tuples(st.just("complete")),
    st.tuples(st.just("kill_after_posts"), st.integers(1, 60), st.booleans()),
    st.tuples(st.just("kill_after_delay"), st.floats(0.2, 2.0)),
    st.tuples(st.just("term_after_posts"), st.integers(1, 60)),
    st.tuples(st.just("term_in_settle")),
    st.tuples(st.just("second_run_via_symlink"), st.integers(1, 30)),
    st.tuples(st.just("replay")),
)
faults = st.fixed_dictionaries(
    {
        "reset_rate": st.sampled_from([0.0, 0.1]),
        "fail_rate": st.sampled_from([0.0, 0.1]),
        "latency_ms": st.sampled_from([0.0, 20.0]),
    }
)


@dataclass
class Story:
    """One example's world: the fake API, the input, the ledger, and how runs are started."""

    server: FakeServer
    tmp: Path
    rows: list[dict[str, Any]]
    settle: float
    #: Until when the API may still store what a killed "late" run had on the wire.
    late_until: float = 0.0

    @property
    def state(self) -> FakeState:
        return self.server.state

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.sqlite3"

    def command(self, ledger: Path | None = None) -> list[str]:
        source = str(self.tmp / "in.csv")
        extra = ("--settle", str(self.settle), "--concurrency", "8", "--grace", "3")
        return run_command(self.server, source, ledger or self.ledger, *extra)

    def start(self, command: list[str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        errors = self.tmp / f"err-{time.monotonic_ns()}.txt"
        with errors.open("wb") as err:
            proc = subprocess.Popen(
                command or self.command(), env=os.environ, stdout=subprocess.DEVNULL, stderr=err
            )
        return proc, errors

    def finish(self, proc: subprocess.Popen[bytes], errors: Path) -> int:
        code = proc.wait(timeout=90)
        text = errors.read_text()
        assert "internal error" not in text, text
        assert "Traceback" not in text, text
        return code

    def after_posts(self, k: int) -> tuple[subprocess.Popen[bytes], Path]:
        target = self.state.posts_received + k
        proc, errors = self.start()
        wait_for(lambda: self.state.posts_received >= target, proc, f"{k} POSTs")
        return proc, errors

    def replay(self) -> None:
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "replay",
            "--base-url",
            self.server.url,
            "--ledger",
            str(self.ledger),
            "--settle",
            str(self.settle),
            "--no-progress",
        ]
        self.finish(*self.start(command))


def _step(story: Story, step: Step) -> None:
    kind = step[0]
    if kind == "complete":
        story.finish(*story.start())
    elif kind == "kill_after_posts":
        k, late = step[1], step[2]
        base = story.state.faults.latency_ms
        if late:
            story.state.update_faults({"latency_ms": LATE_MS})
            k = min(k, 8)  # all on the wire at once (--concurrency 8)
        proc, errors = story.after_posts(k)
        proc.kill()
        story.state.update_faults({"latency_ms": base})
        if late:
            story.late_until = time.monotonic() + LATE_MS / 1000
        story.finish(proc, errors)
    elif kind == "term_after_posts":
        proc, errors = story.after_posts(step[1])
        proc.send_signal(signal.SIGTERM)
        story.finish(proc, errors)
    elif kind == "kill_after_delay":
        proc, errors = story.start()
        time.sleep(step[1])  # the drawn moment of the crash: randomness, not synchronisation
        proc.kill()
        story.finish(proc, errors)
    elif kind == "term_in_settle":
        proc, errors = story.start()
        # Handlers go in right before reconciling: with leftovers, this is the settle wait.
        wait_for(lambda: handles_sigterm(proc.pid), proc, "the settle wait")
        proc.send_signal(signal.SIGTERM)
        story.finish(proc, errors)
    elif kind == "second_run_via_symlink":
        link = story.tmp / "link.sqlite3"
        if not link.exists():
            link.symlink_to(story.ledger)
        proc, errors = story.after_posts(step[1])
        story.finish(*story.start(story.command(link)))
        story.finish(proc, errors)
    else:
        story.replay()


def _assert_sent_means_stored(story: Story) -> None:
    if not story.ledger.exists():
        return
    with sqlite3.connect(story.ledger) as db:
        sent = [fid for (fid,) in db.execute("SELECT feedback_id FROM records WHERE state='sent'")]
    held = {f["id"] for f in story.state.feedbacks()}
    assert set(sent) <= held, f"{len(set(sent) - held)} records sent that the API does not hold"
    assert len(sent) == len(set(sent)), "one stored feedback claimed by two records"


@pytest.mark.timeout(600)
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # issue 7: a crash with requests on the wire, then a signal in the settle wait
    n=200,
    fault=({"reset_rate": 0.0, "fail_rate": 0.0, "latency_ms": 0.0}),
    story=[("kill_after_posts", 8, True), ("term_in_settle",)],
)
@example(  # issue 7: a second run through a symlink while the first has records in flight
    n=150,
    fault=({"reset_rate": 0.1, "fail_rate": 0.0, "latency_ms": 20.0}),
    story=[("second_run_via_symlink", 8)],
)
@given(n=st.integers(20, 200), fault=faults, story=st.lists(steps, min_size=2, max_size=4))
def test_kills_signals_and_reruns_never_lose_or_duplicate(
    clean_env: None, n: int, fault: dict[str, float], story: list[Step]
) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeServer(FakeState(faults=Faults(seed=7))) as server,
    ):
        rows = make_rows(n)
        write_csv(Path(tmp) / "in.csv", rows)
        # The settle wait must outlast the API's own delay in storing; that is its contract.
        late = any(step[0] == "kill_after_posts" and step[2] for step in story)
        # (With a margin: the fake runs in a thread of this busy process.)
        world = Story(server, Path(tmp), rows, settle=(LATE_MS if late else 20.0) / 1000 + 0.8)
        server.state.update_faults(fault)
        for step in story:
            _step(world, step)
            _assert_sent_means_stored(world)

        server.state.update_faults({"reset_rate": 0.0, "fail_rate": 0.0, "latency_ms": 0.0})
        assert world.finish(*world.start()) == 0
        # A late store that lands after the last run would hide a resend: the fake stores
        # within LATE_MS of receipt (its contract), so after that nothing more can arrive.
        while time.monotonic() < world.late_until + 1.0:
            time.sleep(0.05)
        _assert_sent_means_stored(world)
        assert_exactly_once(server, rows)
