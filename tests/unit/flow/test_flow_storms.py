"""Errors that the levels cannot place, on a fake clock driven by hand: the first requests'
errors, a storm of errors whatever the levels say, and errors with nothing else coming back.

Each is a way a server that sheds load at once beyond N was sent a flood: the first burst's
errors read at levels that are anybody's guess, a request sent at a level the server never
saw succeeding (the levels below looked safe), an API back from a pause shedding at once
what came meanwhile (each slot sent a request a millisecond)."""

from __future__ import annotations

import random

from fakeclock import Clock

from pipeline.flow.compose import FlowControl, Kind, Result, Ticket

OK, FAILED = Result(Kind.OK), Result(Kind.OVERLOADED)


def _send(flow: FlowControl) -> list[Ticket]:
    tickets = []
    while (ticket := flow.try_acquire()) is not None:
        tickets.append(ticket)
    return tickets


def _round(flow: FlowControl, clock: Clock, served: int, rng: random.Random) -> tuple[int, int]:
    """A round trip against a server that answers ``served`` of what it is sent and sheds
    the rest at once: sent, failed. It serves the lowest levels but one, which it takes at
    random among the others (a request that reached it before one sent earlier: the
    client's level and the server's count differ by a request on its way)."""
    tickets = sorted(_send(flow), key=lambda ticket: ticket.level)
    if len(tickets) > served > 0:
        lucky = rng.randrange(served - 1, len(tickets))
        tickets.insert(0, tickets.pop(lucky))
    rng.shuffle(tickets_served := tickets[:served])
    tickets[:served] = tickets_served
    clock.now += 0.001
    for ticket in tickets[served:]:  # shed at once
        flow.release(ticket, FAILED)
    clock.now += 0.099
    for ticket in tickets[:served]:
        flow.release(ticket, OK)
    return len(tickets), max(0, len(tickets) - served)


def test_the_first_requests_shed_set_the_limit_a_few_errors_among_them_do_not() -> None:
    clock, rng = Clock(), random.Random(1)
    flow = FlowControl(64, initial=16, clock=clock)
    sent, failed = _round(flow, clock, 8, rng)  # 8 of the 16 first requests shed at once
    assert (sent, failed) == (16, 8)
    assert flow.concurrency == 8  # what was still on the wire when the last one came back
    assert not flow._limit.slow_start  # half of them: no noise

    clock = Clock()
    flow = FlowControl(64, initial=16, clock=clock)
    tickets = _send(flow)
    clock.now += 0.1
    flow.release(tickets[0], FAILED)  # one random error among the first 16: noise
    for ticket in tickets[1:]:
        flow.release(ticket, OK)
    for _ in range(10):
        _round(flow, clock, 64, rng)
    assert flow.concurrency == 64  # slow start went on


def test_a_storm_drops_the_limit_whatever_the_levels_say() -> None:
    clock, rng = Clock(), random.Random(2)
    flow = FlowControl(64, initial=64, clock=clock)
    for _ in range(20):
        _round(flow, clock, 64, rng)
    assert flow.concurrency == 64
    # The server now answers 8 a round trip and sheds the rest at once, each error coming
    # back before any success: most answers fail, whatever the levels say.
    failed = [_round(flow, clock, 8, rng)[1] for _ in range(30)]  # three seconds
    # Dropped by the third round trip (56 errors each before), a second storm at most,
    # then a probe above the limit now and then.
    assert sum(failed[:3]) <= 3 * 56
    assert sum(failed[3:]) <= 24
    assert 4 <= flow.concurrency <= 10


def test_errors_and_nothing_else_hold_everyone_back() -> None:
    clock, rng = Clock(), random.Random(3)
    flow = FlowControl(16, initial=16, clock=clock)
    for _ in range(20):
        _round(flow, clock, 16, rng)
    # Back from a pause, the server sheds at once everything it is sent for 200 ms: each
    # slot would send a request a millisecond (3,200 requests) were nobody held back.
    sent = 0
    for _ in range(200):
        tickets = _send(flow)
        sent += len(tickets)
        clock.now += 0.001
        for ticket in tickets:
            flow.release(ticket, FAILED)
    assert flow.error_hold.count >= 1
    assert sent <= 200
    clock.now += 1.0  # the longest hold
    assert _round(flow, clock, 16, rng)[0] >= 1  # and it goes on once it answers again
