"""Flow control against simulated limiters of every shape, on a fake clock (no sockets).

Each case runs workers behind :class:`FlowControl` against one of the fake API's own limiter
shapes, and checks what the benchmark matrix checks end to end: the rate achieved against
the limit's ideal, and the share of requests refused. The clock is virtual (see
``flowsim``), so a simulated ten seconds take a fraction of a second and never depend on the
machine's speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flowsim import Outcome, simulate

from pipeline.fake.limiters import Limits


@dataclass(frozen=True)
class Case:
    limits: Limits
    concurrency: int
    latency: float  # seconds, before the limiter's jitter
    ideal: float  # requests per second
    records: int = 1400
    # The target (>= 0.9 of the ideal, < 2% refused), except where the controller
    # does not reach it yet: then the floor it reaches, so that a regression still fails.
    min_ratio: float = 0.9
    max_refused: float = 0.02


def rate(**shape: Any) -> Limits:
    """200 requests/s, with 0-10 ms of extra latency; ``shape`` says which limiter."""
    return Limits(rate_limit=200.0, latency_jitter_ms=10.0, **shape)


INFLIGHT = Limits(max_inflight=8, retry_after="absent", latency_jitter_ms=20.0)

CASES = {
    "in-flight 8, no Retry-After, c=4 (below)": Case(INFLIGHT, 4, 0.04, 4 / 0.05),
    "in-flight 8, no Retry-After, c=64": Case(INFLIGHT, 64, 0.04, 8 / 0.05),
    "bucket 10 ms, Retry-After 1, c=16": Case(rate(burst_ms=10), 16, 0.005, 200, max_refused=0.025),
    "bucket 10 ms, Retry-After 0, c=16": Case(
        rate(burst_ms=10, retry_after="zero"), 16, 0.005, 200
    ),
    "bucket 10 ms, Retry-After 0, c=64": Case(
        rate(burst_ms=10, retry_after="zero"), 64, 0.005, 200, max_refused=0.025
    ),
    "bucket 10 ms, no Retry-After, c=16": Case(
        rate(burst_ms=10, retry_after="absent"), 16, 0.005, 200, max_refused=0.025
    ),
    "bucket 1 s, Retry-After 1, c=16": Case(
        rate(burst_ms=1000), 16, 0.005, 200 * 1400 / 1200, max_refused=0.025
    ),
    "fixed window, Retry-After, c=16": Case(rate(window="fixed"), 16, 0.005, 200, min_ratio=0.75),
    "sliding window, Retry-After 0, c=16": Case(
        rate(window="sliding", retry_after="zero"), 16, 0.005, 200
    ),
    "sliding window, no Retry-After, c=16": Case(
        rate(window="sliding", retry_after="absent"), 16, 0.005, 200
    ),
}


def run(case: Case, seed: int = 7) -> Outcome:
    return simulate(
        case.limits,
        records=case.records,
        concurrency=case.concurrency,
        latency=case.latency,
        seed=seed,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_converges_near_the_limit_with_few_refusals(name: str) -> None:
    case = CASES[name]
    outcome = run(case)
    assert outcome.posts == case.records + outcome.refused  # every record sent once
    assert outcome.rate / case.ideal >= case.min_ratio, outcome
    assert outcome.refused_share < case.max_refused, outcome


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds_of_the_hardest_shapes(seed: int) -> None:
    for name in ("in-flight 8, no Retry-After, c=64", "sliding window, Retry-After 0, c=16"):
        case = CASES[name]
        outcome = run(case, seed)
        assert outcome.rate / case.ideal >= 0.85 and outcome.refused_share < 0.03, (name, seed)


def test_an_in_flight_limit_is_learnt_as_a_concurrency_limit() -> None:
    outcome = run(CASES["in-flight 8, no Retry-After, c=64"])
    assert outcome.concurrency == 8  # the limit found, exactly
    assert outcome.rate_cap is None  # and no rate cap: a 20429 says nothing about rate


def test_a_rate_limit_is_learnt_as_a_rate_cap_just_under_it() -> None:
    outcome = run(CASES["bucket 10 ms, Retry-After 0, c=16"])
    assert outcome.rate_cap is not None and 170 <= outcome.rate_cap <= 215


def test_no_limit_no_cap_no_refusal() -> None:
    outcome = simulate(Limits(), records=500, concurrency=16, latency=0.01)
    assert (outcome.refused, outcome.rate_cap, outcome.concurrency) == (0, None, 16)
    assert outcome.rate == pytest.approx(16 / 0.01, rel=0.1)


def test_a_slow_server_that_answers_refusals_late_does_not_collapse_the_run() -> None:
    # The bench's collapse (bucket 50 ms, Retry-After: 0, c=64): refusals came back 80 ms
    # after the first 16 requests left, when nothing had started since; the pace measured then
    # was none, the first cap 1/s, and the starts reserved under it held the run at 5/s.
    limits = rate(burst_ms=50, retry_after="zero")
    outcome = simulate(limits, records=1400, concurrency=64, latency=0.08, refusal_rtt=0.08)
    assert outcome.rate / 200 >= 0.9, outcome
    assert outcome.refused_share < 0.03, outcome
