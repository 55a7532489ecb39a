"""Stray refusals against a real limit: the rate cap on a hand-driven clock.

A limiter with almost no burst refuses requests that reached it together at any pace (about
1-2% of them when the client, the network or the server stalls now and then). A cap that
dropped on each of those, by its margin at least, ratcheted down to 0.65-0.9 of the limit in
the benchmark's strict-bucket cell. These drive :class:`RateCap` directly, one request at a
time, so each rule is checked on its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.flow.ratecap import RATE_MARGIN, RateCap

RTT = 0.01


class Driver:
    """Requests at a steady pace, each answered at once; ``refuse`` says which are refused."""

    def __init__(self, cap_value: float) -> None:
        self.now = 100.0
        self.cap = RateCap(None, clock=lambda: self.now, sleep=_no_sleep)
        self.pace = cap_value
        self.refused = 0
        self.run(2.0)  # two clean seconds: the run is settled, the cap not there yet
        self.cap.set(self.now, cap_value)
        assert self.cap.seeker is not None
        self.cap.seeker.slow_start = False  # as after a confirmed drop
        self.cap.seeker.good = cap_value / (1.0 - RATE_MARGIN)

    @property
    def value(self) -> float:
        assert self.cap.value is not None
        return self.cap.value

    def run(self, seconds: float, refuse: Iterable[int] = (), *, run: bool = False) -> None:
        """``seconds`` of requests; those whose index (from 0) is in ``refuse`` are refused."""
        refused = set(refuse)
        for i in range(int(seconds * self.pace)):
            self.now += 1.0 / self.pace
            self.cap.started(self.now)
            if i in refused:
                self.refused += 1
                self.cap.refused(self.now, self.now + 0.001, RTT, self.now, run=run)
            else:
                self.cap.succeeded(self.now + RTT)


async def _no_sleep(seconds: float) -> None:
    return None


def every_second(pattern: list[int], seconds: int, pace: int) -> list[int]:
    """Refusal indexes: ``pattern[k]`` requests refused together at the start of second k."""
    out: list[int] = []
    for second in range(seconds):
        start = second * pace + pace // 2
        out += range(start, start + pattern[second % len(pattern)])
    return out


def test_bunched_refusals_at_a_steady_pace_leave_the_cap_where_it_is() -> None:
    # 0.8% on average, bunched: 1 refused, then 5 together, then none for two seconds. A cap
    # judged on the last second alone dropped on every 5 (2.6% of that second), 3% each time.
    driver = Driver(190.0)
    driver.run(12.0, every_second([1, 5, 0, 0], 12, 190))
    assert driver.refused == 18
    assert driver.value == 190.0


def test_a_limit_that_fell_is_found_within_a_fraction_of_a_second() -> None:
    driver = Driver(190.0)
    driver.run(3.0)
    driver.run(0.25, range(0, 48, 5))  # a tenth refused: the limit is now ~170
    assert driver.refused <= 10
    assert driver.value < 0.97 * 190


def test_the_refusals_that_dropped_the_cap_do_not_drop_it_again() -> None:
    driver = Driver(190.0)
    driver.run(3.0)
    driver.run(0.25, range(0, 48, 5))
    dropped = driver.value
    driver.pace = dropped
    driver.run(0.5)
    driver.run(0.2, [10])  # one more, within a second of the drop: the last second's share
    assert driver.value == dropped  # is still 6%, but it came before the drop


def test_a_refused_probe_goes_back_to_where_it_was_not_below() -> None:
    driver = Driver(190.0)
    driver.run(3.0)
    assert driver.cap.seeker is not None
    driver.cap.seeker.value = 195.0  # probing above the level that held
    driver.pace = 195.0
    driver.run(1.0, [50, 51])  # two stray refusals meet the probe
    assert driver.value == 190.0


def test_refusals_in_a_run_are_the_pace_however_few() -> None:
    # A fixed window used up: the last requests of its second, and nothing since.
    driver = Driver(190.0)
    driver.run(3.0)
    driver.run(0.1, [15, 16], run=True)
    assert driver.value < 190.0
