"""503s, timeouts and resets: evidence of load only when they rise with the requests in flight.
On a fake clock, driven by hand (the simulations are in test_flow_noise_matrix.py)."""

from __future__ import annotations

import random
from collections.abc import Callable

from fakeclock import Clock

from pipeline.flow.compose import FlowControl, Kind, Result
from pipeline.flow.levels import Levels
from pipeline.observe.summary import Summary

OK, FAILED = Result(Kind.OK), Result(Kind.OVERLOADED)


def test_a_share_that_rises_with_the_level_is_load_a_steady_one_is_not() -> None:
    shedding = Levels(32, half_life=4.0, now=0.0)
    for i in range(400):  # none fails at or below 8, every one above does
        shedding.note(1 + i % 8, True, i * 0.001)
        if i % 4 == 0:
            shedding.note(9, False, i * 0.001)
    assert shedding.rises(9) is True

    noisy = Levels(32, half_life=4.0, now=0.0)
    rng = random.Random(3)
    for i in range(4000):  # 5% fail, whatever the level
        noisy.note(1 + i % 16, rng.random() >= 0.05, i * 0.001)
    assert not any(noisy.rises(level) for level in range(2, 17))

    few = Levels(32, half_life=4.0, now=0.0)
    few.note(3, True, 0.0)
    few.note(9, False, 0.0)
    assert few.rises(9) is None  # a few answers say nothing either way


def _round(flow: FlowControl, clock: Clock, fails: Callable[[int], bool], rtt: float = 0.02) -> int:
    """One round trip at the limit: every free slot sends (``fails(level)``: whether the
    request sent at that level fails), the answers come back together. How many went."""
    tickets = []
    while (ticket := flow.try_acquire()) is not None:
        tickets.append(ticket)
    clock.now += rtt
    for ticket in tickets:
        flow.release(ticket, FAILED if fails(ticket.level) else OK)
    return len(tickets)


def _never(level: int) -> bool:
    return False


def test_random_503s_at_every_level_move_nothing() -> None:
    clock = Clock()
    flow = FlowControl(16, clock=clock)
    rng = random.Random(5)
    sent = 0
    for _ in range(500):  # ten seconds at 16 in flight, 5% of the answers 503s
        sent += _round(flow, clock, lambda level: rng.random() < 0.05)
    assert flow.concurrency == 16
    assert sent >= 0.97 * 16 * 500
    assert flow.shown is None
    assert flow.errors.load == 0
    assert flow.errors.noise > 300
    assert flow.calm()  # a retry need not back off


def test_503s_beyond_n_in_flight_are_a_limit_found_and_shown() -> None:
    clock = Clock()
    flow = FlowControl(32, initial=32, clock=clock)
    sent = 0
    for _ in range(200):  # beyond 8 in flight, every request is shed at once
        sent += _round(flow, clock, lambda level: level > 8)
    # Found by the first requests (24 of 32 shed at once), then probed now and then: each
    # probe one error at level 9, too few there to tell (advice needs more: not yet shown).
    assert flow.concurrency <= 9
    assert flow.shown in (None, 8)
    assert flow.errors.noise == 0
    assert 0 < flow.errors.load <= 0.01 * sent
    assert sent >= 0.5 * 8 * 200

    clock = Clock()
    flow = FlowControl(32, initial=4, clock=clock)
    for _ in range(200):  # found by slow start this time, every request above 8 shed
        _round(flow, clock, lambda level: level > 8)
    assert flow.concurrency <= 9
    assert flow.shown == 8
    assert flow.errors.load > 0
    assert not flow.calm()


def test_a_request_that_stalls_is_judged_before_its_timeout_and_leaves_the_wire() -> None:
    clock = Clock()
    flow = FlowControl(16, clock=clock)
    for _ in range(20):
        _round(flow, clock, _never)
    stalled = flow.try_acquire()
    assert stalled is not None
    for _ in range(10):  # 15 others come and go, four round trips and more
        _round(flow, clock, _never)
    assert stalled.overdue
    assert flow._slots.on_wire == 0
    assert flow.errors.noise + flow.errors.load == 1
    clock.now += 1.0
    flow.release(stalled, FAILED)  # its timeout: not judged twice
    assert flow.errors.noise + flow.errors.load == 1
    assert flow.in_flight == 0


def test_noise_and_an_outage_never_become_advice() -> None:
    noisy = Summary("run", "r1", concurrency=16, concurrency_range=(16, 16), errors_noise=120)
    assert noisy.next_time is None
    assert "120 errors (503, timeout, reset) at every level" in noisy.text()
    assert "not a limit" in noisy.text()

    clock = Clock()
    flow = FlowControl(16, clock=clock)
    for _ in range(50):
        _round(flow, clock, _never)
    for _ in range(100):  # an outage: everything fails, at every level
        _round(flow, clock, lambda level: True)
    assert flow.shown is None
    down = Summary(
        "run",
        "r2",
        concurrency=flow.concurrency,
        concurrency_range=(flow.lowest, flow.highest),
        concurrency_found=flow.shown,
        errors_noise=flow.errors.noise,
    )
    assert down.next_time is None

    shed = Summary(
        "run",
        "r3",
        concurrency=8,
        concurrency_range=(8, 32),
        concurrency_found=8,
        errors_load=30,
    )
    assert shed.next_time == "--concurrency 8"
    assert "30 errors rose with the requests in flight: a limit of 8 in flight" in shed.text()
