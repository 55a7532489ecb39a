"""``FlowControl.try_acquire`` is ``acquire`` where that would not wait: the same ticket and
the same state after it, and None wherever ``acquire`` would wait (the slots are all taken,
everyone is held back, a rate cap or a fixed ``--rate`` paces the start)."""

from __future__ import annotations

import asyncio

from pipeline.flow.compose import FlowControl, Kind, Result, Ticket


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(flow: FlowControl) -> tuple[object, ...]:
    return (
        flow.in_flight,
        flow._slots.on_wire,
        flow._slots.filled,
        flow._rate._starts.between(0.0, 1e9),
    )


async def test_it_takes_a_free_slot_exactly_as_acquire_does() -> None:
    clock = _Clock()
    fast, slow = FlowControl(3, clock=clock), FlowControl(3, clock=clock)
    tickets: list[tuple[Ticket | None, Ticket]] = []
    for _ in range(3):
        tickets.append((fast.try_acquire(), await slow.acquire()))
        assert _state(fast) == _state(slow)
        clock.now += 0.01
    assert [a for a, _ in tickets] == [b for _, b in tickets]
    assert fast._slots.filled
    assert fast.in_flight == 3


async def test_it_declines_wherever_acquire_would_wait() -> None:
    clock = _Clock()
    flow = FlowControl(2, clock=clock)
    first, second = flow.try_acquire(), flow.try_acquire()
    assert first is not None
    assert second is not None
    assert flow.try_acquire() is None  # every slot taken
    flow.release(first, Result(Kind.OK))
    flow.hold.until = clock.now + 1.0
    assert flow.try_acquire() is None  # everyone held back
    flow.hold.until = clock.now
    assert flow.try_acquire() is not None
    assert FlowControl(4, rate=10.0, clock=clock).try_acquire() is None  # --rate paces
    capped = FlowControl(4, clock=clock)
    capped._rate.set(clock.now, 5.0)
    assert capped._rate.seeker is not None
    assert capped.try_acquire() is None  # a rate cap paces
    held = FlowControl(1, clock=clock)
    taken = held.try_acquire()
    assert taken is not None
    waiting = asyncio.ensure_future(held.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert held.try_acquire() is None
    held.release(taken, Result(Kind.OK))
    assert (await asyncio.wait_for(waiting, 5.0)).level == 1
