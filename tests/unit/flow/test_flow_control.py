"""Seeker, FlowControl and Gate on a fake clock: no sleeping, no wall-clock dependence.

(The simulations against every limiter shape are in test_flow_simulation.py.)"""

from __future__ import annotations

import asyncio

import pytest
from fakeclock import Clock

from pipeline.delivery.circuit import Gate
from pipeline.errors import OutageError
from pipeline.flow.aimd import Seeker
from pipeline.flow.compose import FlowControl, Kind, Result
from pipeline.observe.summary import Summary


def test_seeker_slow_start_doubles_up_to_the_ceiling() -> None:
    seeker = Seeker(4, ceiling=100)
    seen = []
    for t in range(6):
        seeker.clean(float(t))
        seen.append(seeker.value)
    assert seen == [8, 16, 32, 64, 100, 100]


def test_seeker_drops_to_just_under_what_the_api_accepted_not_by_a_blind_factor() -> None:
    seeker = Seeker(100.0, margin=0.05)
    seeker.pressure(0.0, 80.0)
    assert seeker.value == pytest.approx(76.0)
    seeker.pressure(0.1, 80.0)  # the same measure again: no compounding
    assert seeker.value == pytest.approx(76.0)


def test_seeker_holds_then_probes_with_a_step_that_doubles() -> None:
    seeker = Seeker(100.0, probe_after=1.0)
    seeker.pressure(0.0, 50.0)
    for t in (0.2, 0.4, 0.6, 0.8):  # below probe_after: holds at the good level
        seeker.clean(t)
    assert seeker.value == 50.0
    values = []
    for t in (1.0, 1.2, 1.4, 1.6):
        seeker.clean(t)
        values.append(seeker.value)
    steps = [b / a - 1 for a, b in zip([50.0, *values], values, strict=False)]
    assert steps == pytest.approx([0.01, 0.02, 0.04, 0.08])


def test_seeker_recovers_as_fast_as_it_fell_when_the_limit_goes_away() -> None:
    seeker = Seeker(1000.0, probe_after=1.0)
    seeker.pressure(0.0, 100.0)
    t = 1.0
    while seeker.value < 1000.0 and t < 10.0:
        seeker.clean(t)
        t += 0.1
    assert seeker.value >= 1000.0
    assert t < 4.0


def test_seeker_probes_less_often_where_the_limit_held() -> None:
    seeker = Seeker(100.0, probe_after=1.0, max_probe=8.0)
    seeker.pressure(0.0, 50.0)
    seeker.clean(1.0)  # a probe above 50...
    seeker.pressure(1.1, 50.0)  # ...refused at the same level
    seeker.clean(2.2)
    assert seeker.value == 50.0  # the next probe waits 2 s, not 1
    seeker.clean(3.2)
    assert seeker.value > 50.0


def _flow(concurrency: int, clock: Clock, rate: float | None = None) -> FlowControl:
    return FlowControl(concurrency, rate, initial=concurrency, clock=clock)


async def test_a_20429_sets_the_limit_to_the_level_that_worked() -> None:
    clock = Clock()
    flow = _flow(32, clock)
    tickets = [await flow.acquire() for _ in range(12)]
    clock.now += 0.05
    for ticket in tickets[:10]:
        flow.release(ticket, Result(Kind.OK))
    flow.release(tickets[10], Result(Kind.THROTTLED))  # sent as the 11th in flight
    assert flow.limit == 10
    assert flow.cap is None  # no Retry-After, refused above what worked: not a rate signal


async def test_a_retry_after_caps_the_rate_not_the_concurrency() -> None:
    clock = Clock()
    flow = _flow(32, clock)
    for _ in range(50):  # 1000 requests/s, every one succeeds...
        ticket = await flow.acquire()
        clock.now += 0.001
        flow.release(ticket, Result(Kind.OK))
    ticket = await flow.acquire()
    flow.release(ticket, Result(Kind.THROTTLED, retry_after=1.0))  # ...until one is refused:
    assert flow.cap is None  # one refusal is no pattern (two that arrived together)
    ticket = await flow.acquire()
    flow.release(ticket, Result(Kind.THROTTLED, retry_after=1.0))  # a second one is
    assert flow.cap is not None
    assert flow.cap < 1000
    assert flow.limit == 32


async def test_a_cap_never_exceeds_the_users_rate() -> None:
    clock = Clock()
    flow = _flow(8, clock, rate=50.0)
    assert flow.cap == 50.0
    ticket = await flow.acquire()
    flow.release(ticket, Result(Kind.THROTTLED, retry_after=0.0))
    assert flow.cap is not None
    assert flow.cap <= 50.0


def test_retry_after_is_obeyed_but_zero_is_no_invitation_to_spin() -> None:
    flow = _flow(8, Clock())
    assert flow.retry_wait(3.0) == 3.0
    assert flow.retry_wait(0.0) >= 0.01
    assert flow.retry_wait(None) >= 0.01


async def test_acquire_waits_for_a_free_slot() -> None:
    clock = Clock()
    flow = _flow(2, clock)
    first, _second = await flow.acquire(), await flow.acquire()
    waiter = asyncio.create_task(flow.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert flow.in_flight == 2
    flow.release(first, Result(Kind.OK))
    await asyncio.wait_for(waiter, timeout=5)
    assert flow.in_flight == 2


class Sleeps:
    """A fake sleep that advances the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.now += seconds


def gate(clock: Clock, notices: list[str], *, max_outage: float = 600.0) -> tuple[Gate, Sleeps]:
    sleeps = Sleeps(clock)
    made = Gate(
        sleep=sleeps,
        stopped=lambda: False,
        notice=notices.append,
        clock=clock,
        threshold=3,
        cooldown=1.0,
        max_cooldown=4.0,
        max_outage=max_outage,
    )
    return made, sleeps


async def test_circuit_opens_probes_with_growing_cooldown_and_closes() -> None:
    clock, notices = Clock(), list[str]()
    g, sleeps = gate(clock, notices)
    for _ in range(3):
        g.failed("HTTP 503")
    assert g.is_open
    assert len(notices) == 1
    assert "3 requests in a row" in notices[0]
    await g.admit()  # the probe, after one cool-down
    assert sleeps.calls == [1.0]
    g.failed("HTTP 503")  # the probe failed: the next waits twice as long
    await g.admit()
    assert sleeps.calls[-1] == pytest.approx(2.0)
    g.succeeded()
    assert not g.is_open
    assert "answers again" in notices[-1]
    calls = len(sleeps.calls)
    await g.admit()
    assert len(sleeps.calls) == calls  # closed: no waiting


async def test_a_long_outage_gives_up() -> None:
    clock, notices = Clock(), list[str]()
    g, _ = gate(clock, notices, max_outage=5.0)
    g.heard()  # HTTP answers: an API that is down, not a wrong URL (see test_fail_fast)
    for _ in range(3):
        g.failed("HTTP 500")

    async def probes() -> None:
        for _ in range(10):
            await g.admit()
            g.failed("HTTP 500")

    with pytest.raises(OutageError, match="failed every request"):
        await probes()


def test_the_summary_says_where_flow_control_converged() -> None:
    summary = Summary("run", "r1", concurrency=8, concurrency_range=(8, 16), rate_cap_found=190.4)
    summary.concurrency_found = 8
    assert summary.next_time == "--concurrency 8 --rate 190"
    assert (
        "converged to: concurrency limit 8 (ranged 8-16); rate limit none (--rate 0), "
        "API rate cap 190/s"
    ) in summary.text()
    assert "next time: --concurrency 8 --rate 190" in summary.text()
    assert summary.as_dict()["next_time"] == "--concurrency 8 --rate 190"
    untouched = Summary("run", "r2", concurrency=16, concurrency_range=(16, 16))
    assert untouched.next_time is None
    assert "next time" not in untouched.text()
