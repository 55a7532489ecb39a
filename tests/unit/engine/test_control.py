"""RunControl: stop with a reason, stop-aware pauses, background failures end the run."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.engine.control import RunControl
from pipeline.errors import AbortedError


async def test_check_raises_the_first_reason() -> None:
    control = RunControl()
    control.check()  # running: nothing to say
    control.abort("ack failed")
    control.abort("later")
    with pytest.raises(AbortedError, match="^ack failed$"):
        control.check()


async def test_pause_ends_when_the_run_stops() -> None:
    control = RunControl()
    pause = asyncio.create_task(control.pause(3600))
    await asyncio.sleep(0)
    control.abort("interrupted")
    # A deadline, not a speed check: without the stop the pause would last an hour.
    await asyncio.wait_for(pause, timeout=30)


async def test_a_failing_background_task_ends_the_run_with_its_reason() -> None:
    control = RunControl()

    async def broken() -> None:
        raise ConnectionError("gone")

    await control.background("ack", broken)
    assert control.stopped
    assert control.reason == "ack failed: ConnectionError: gone"


async def test_the_heartbeat_beats_until_cancelled_and_a_failure_stops_the_run() -> None:
    control = RunControl()
    beats = 0
    twice = asyncio.Event()

    async def beat() -> None:
        nonlocal beats
        beats += 1
        if beats == 2:
            twice.set()
        if beats == 3:
            raise OSError("disk full")

    task = control.heartbeat(beat, 0)
    await asyncio.wait_for(twice.wait(), timeout=30)
    await asyncio.wait_for(task, timeout=30)
    assert control.reason == "heartbeat failed: OSError: disk full"

    quiet = RunControl()
    quiet.heartbeat(beat, 3600)
    await quiet.cancel_background()  # cancelled, not a failure
    assert not quiet.stopped
