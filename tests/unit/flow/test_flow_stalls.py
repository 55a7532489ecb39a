"""Stalls and stray errors on a fake clock, driven by hand: slow start that does not double
into a stall among its first requests, overdue requests that give their slot back, a retry
that need not back off for rare errors, and a load test that few answers cannot fool."""

from __future__ import annotations

from fakeclock import Clock
from flowsim import Noise, simulate

from pipeline.fake.limiters import Limits
from pipeline.flow.compose import FlowControl, Kind, Result, Ticket
from pipeline.flow.levels import Levels
from pipeline.flow.slots import Slots

OK, FAILED = Result(Kind.OK), Result(Kind.OVERLOADED)


def test_slow_start_does_not_double_into_a_stall_among_its_first_requests() -> None:
    # 16 leave together; the server answers 8 in time and stalls the rest. Granted at once,
    # the 8 successes grew the limit to 24 and more before the stalled 8 looked late, and
    # every request sent above 8 stalled in turn (34 stalls where 8 were unavoidable).
    stalls = Limits(stall_above=8, latency_jitter_ms=20.0)
    outcome = simulate(
        stalls, records=600, concurrency=64, latency=0.1, seed=1, noise=Noise(timeout=0.5)
    )
    # The first burst's 8, then one a probe above 8 (each a timeout).
    assert outcome.errors <= 8 + 6
    assert max(outcome.limits) == 16
    assert outcome.concurrency in (8, 9)


def _round(flow: FlowControl, clock: Clock, keep: int = 0, rtt: float = 0.02) -> list[Ticket]:
    """Every free slot sends, the answers come back together but for the first ``keep``
    (left unanswered); the requests sent."""
    tickets = []
    while (ticket := flow.try_acquire()) is not None:
        tickets.append(ticket)
    clock.now += rtt
    for ticket in tickets[keep:]:
        flow.release(ticket, OK)
    return tickets


def test_an_overdue_request_gives_its_slot_back() -> None:
    # 1% of answers later than --timeout held a slot each for the whole timeout.
    clock = Clock()
    flow = FlowControl(16, initial=16, clock=clock)
    for _ in range(20):
        _round(flow, clock)
    stalled = _round(flow, clock, keep=2)[:2]
    went = [len(_round(flow, clock)) for _ in range(10)]  # five round trips
    assert went[0] == 14  # the two hold their slots while they may yet answer
    assert went[-1] == 16  # overdue after four: they gave theirs back
    assert all(ticket.overdue and ticket.freed for ticket in stalled)
    for ticket in stalled:  # their timeouts
        flow.release(ticket, FAILED)
    assert flow.in_flight == 0
    assert flow.concurrency == 16
    assert len(_round(flow, clock)) == 16


def test_overdue_requests_give_back_a_quarter_of_the_slots_at_most() -> None:
    # A server that stalls is never sent more than a quarter over the limit meanwhile.
    told: list[bool] = []
    slots = Slots(lambda: 16, told.append)
    tickets = []
    for _ in range(16):
        slots.take_now()
        tickets.append(Ticket(0.0, slots.sent(), 0.0))
    for ticket in tickets[:6]:
        ticket.overdue = True
        slots.overdue(ticket)
    assert (slots.taken, slots.freed, slots.on_wire) == (12, 4, 10)
    assert [ticket.freed for ticket in tickets[:6]] == [True] * 4 + [False] * 2
    assert told == [True] * 4  # the run starts a worker for each slot given back...
    for ticket in tickets:
        ticket.answered = True
        slots.give_back(ticket)
    assert (slots.taken, slots.freed, slots.on_wire) == (0, 0, 0)
    assert told == [True] * 4 + [False] * 4  # ... until that request's own answer came


def test_rare_errors_with_no_verdict_yet_need_no_backoff() -> None:
    # A run at its ceiling sends at one level: nothing below to compare with, and no verdict
    # comes; a record that met a stray 503 then backed off for seconds at the run's end.
    clock = Clock()
    flow = FlowControl(16, initial=16, clock=clock)
    for _ in range(300):
        _round(flow, clock)
    ticket = flow.try_acquire()
    assert ticket is not None
    clock.now += 0.02
    flow.release(ticket, FAILED)
    clock.now += 0.2  # judged once any stall before it would be known
    _round(flow, clock)
    assert flow.errors.noise + flow.errors.load == 1
    assert flow.calm()


def test_a_few_errors_among_a_few_answers_are_no_proof_of_load() -> None:
    # Seen with 2% of 503s everywhere at concurrency 64: 3 errors among the 14 answers at
    # the top levels, 1 among 167 below, passed a two-proportion z-test of five standard
    # errors (a normal approximation, wrong for so few) and became advice.
    levels = Levels(64, half_life=4.0, now=0.0)
    for i in range(166):
        levels.note(1 + i % 62, True, 0.0)
    levels.note(40, False, 0.0)
    for i in range(11):
        levels.note(63 + i % 2, True, 0.0)
    for _ in range(3):
        levels.note(63, False, 0.0)
    assert levels.rises(63) is None

    shedding = Levels(64, half_life=4.0, now=0.0)  # every request above 8 fails: load
    for i in range(400):
        shedding.note(1 + i % 8, True, 0.0)
    for _ in range(6):
        shedding.note(9, False, 0.0)
    assert shedding.rises(9) is True
