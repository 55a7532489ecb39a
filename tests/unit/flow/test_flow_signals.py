"""Which limit a 429 moves: the evidence per in-flight level, the first burst of a run, and
refusals misread, on a fake clock (the simulations per shape are in test_flow_simulation.py).
"""

from __future__ import annotations

from fakeclock import Clock

from pipeline.flow.aimd import Seeker
from pipeline.flow.compose import FlowControl, Kind, Result
from pipeline.flow.levels import Levels


def _flow(concurrency: int, clock: Clock) -> FlowControl:
    async def sleep(seconds: float) -> None:
        clock.now += seconds

    return FlowControl(concurrency, clock=clock, sleep=sleep)


def test_levels_tell_an_in_flight_limit_from_a_rate_limit() -> None:
    inflight = Levels(64, half_life=4.0, now=0.0)
    for i in range(40):  # at or below 8 always admitted, above always refused
        inflight.note(1 + i % 8, True, i * 0.01)
        inflight.note(9 + i % 4, False, i * 0.01)
    assert inflight.inflight(9) is True

    rate = Levels(64, half_life=4.0, now=0.0)
    for i in range(240):  # refused now and then at any level, among many successes
        rate.note(1 + i % 12, i % 20 != 9, i * 0.01)
    assert rate.inflight(9) is False


def test_one_refusal_is_no_pattern_and_evidence_fades() -> None:
    levels = Levels(16, half_life=1.0, now=0.0)
    levels.note(3, False, 0.0)
    assert levels.inflight(3) is None  # one refusal: requests that arrived together?
    levels.note(3, False, 0.1)
    assert levels.inflight(3) is True
    for t in range(1, 6):  # then successes there, second after second: the old refusals fade
        for _ in range(4):
            levels.note(3, True, float(t))
    assert not levels.inflight(3)


def test_an_unconfirmed_drop_keeps_slow_start_and_the_same_measure_twice_confirms() -> None:
    seeker = Seeker(16, ceiling=64, min_step=1.0)
    seeker.pressure(0.0, 8.0, confirmed=False)  # the first burst: 8 of 16 admitted
    assert (seeker.value, seeker.slow_start) == (8.0, True)
    seeker.clean(0.1)
    assert seeker.value == 16.0  # grows again as fast as before: it may have been a rate
    seeker.pressure(0.2, 8.0, confirmed=False)  # refused above 8 again: the limit is 8
    assert (seeker.value, seeker.slow_start) == (8.0, False)


async def test_the_first_burst_refused_above_n_halves_nothing_for_good() -> None:
    # 16 leave before anything came back; 8 are refused at once without Retry-After. That is
    # an in-flight limit of 8, or a bucket of 8 tokens: the limit drops to 8 but slow start
    # goes on, so a rate limit's burst does not pin the run at 8 in flight.
    clock = Clock()
    flow = _flow(64, clock)
    tickets = [await flow.acquire() for _ in range(16)]
    clock.now += 0.001
    for ticket in tickets[8:]:
        flow.release(ticket, Result(Kind.THROTTLED))
    assert flow.limit == 8
    assert flow.cap is None
    assert flow._limit.slow_start


async def test_a_refusal_below_the_in_flight_limit_says_it_was_a_rate_limit() -> None:
    clock = Clock()
    flow = _flow(32, clock)
    tickets = [await flow.acquire() for _ in range(6)]
    clock.now += 0.001
    flow.release(tickets[5], Result(Kind.THROTTLED))  # the first burst: "6 in flight is too many"
    assert flow.limit == 5
    clock.now += 0.01
    for ticket in tickets[:5]:
        flow.release(ticket, Result(Kind.OK))
    for i in range(9):  # then refused now and then with only two in flight: that is a rate
        assert flow.limit >= 2
        first, second = await flow.acquire(), await flow.acquire()
        clock.now += 0.002
        flow.release(first, Result(Kind.OK))
        flow.release(second, Result(Kind.THROTTLED if i % 3 == 2 else Kind.OK))
    assert flow._inflight_limit == float("inf")  # the in-flight reading is dropped
    assert flow.cap is not None  # and the rate is capped instead


async def test_before_anything_came_back_refusals_are_no_dry_spell() -> None:
    # An in-flight limit refuses at once and its successes take a round trip: refusals
    # only, for a while, are not a used-up window, and must not hold everyone back for the
    # whole Retry-After.
    clock = Clock()
    flow = _flow(64, clock)
    tickets = [await flow.acquire() for _ in range(16)]
    for ticket in tickets[8:]:
        clock.now += 0.005
        flow.release(ticket, Result(Kind.THROTTLED, retry_after=1.0))
    assert flow.hold.until - clock.now < 0.5


async def test_a_probe_refused_above_the_in_flight_limit_sets_no_rate_cap() -> None:
    # The benchmark's trap (in-flight 8, c=64): probing at 9 and 10 in flight, a request at
    # level 9 got through (the server's count and ours differ by a request on its way), so
    # the refusals there came "among successes at their level". Read as rate refusals, they
    # set a cap that held the run at 0.87-0.91 of the limit.
    clock = Clock()
    flow = _flow(64, clock)
    first = [await flow.acquire() for _ in range(16)]
    clock.now += 0.001
    for ticket in first[8:]:  # the first burst: an in-flight limit of 8
        flow.release(ticket, Result(Kind.THROTTLED))
    clock.now += 0.1
    for ticket in first[:8]:
        flow.release(ticket, Result(Kind.OK))
    for _ in range(15):  # a second and a half at 8 in flight
        batch = [await flow.acquire() for _ in range(8)]
        clock.now += 0.1
        for ticket in batch:
            flow.release(ticket, Result(Kind.OK))
    flow._limit.value = 10.0  # a probe
    batch = [await flow.acquire() for _ in range(9)]
    clock.now += 0.1
    for ticket in batch:  # the one at level 9 got through
        flow.release(ticket, Result(Kind.OK))
    batch = [await flow.acquire() for _ in range(10)]
    clock.now += 0.002
    flow.release(batch[9], Result(Kind.THROTTLED))
    flow.release(batch[8], Result(Kind.THROTTLED))
    clock.now += 0.1
    for ticket in batch[:8]:
        flow.release(ticket, Result(Kind.OK))
    assert flow.limit < 10  # the probe is over
    assert flow.cap is None
