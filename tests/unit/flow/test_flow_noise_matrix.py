"""The noise and overload matrix (the benchmark's scenario 13) on a fake clock, and the cells
around it.

- Noise cells (``bench.noise``: 503s, resets, answers later than the timeout, at concurrency
  16 and 64, latency 20 and 100 ms): >= 0.85 of the same cell without noise, over three
  seeds; noise never becomes a limit shown (advice).
- Overload cells (503 beyond 8 in flight, answers late beyond 8 at work): >= 0.9 of the
  ideal with under 2% errors, the limit found.
- Around them (10% 503s, 3% resets, 3% late answers, concurrency 4, latency 5 ms; a shed or
  stall limit of 4 and 24): no collapse, and the limits found where there are some. Known
  weak spot: 3% of answers later than the timeout at c=64 can read, at the top levels, as a
  limit a few under the ceiling (the floors below say how far).
"""

from __future__ import annotations

import pytest
from flowsim import Noise, Outcome, simulate

from bench.noise import (
    ERROR_SHARE,
    GROUPS,
    NOISE_TARGET,
    NOISES,
    OVERLOAD_TARGET,
    OVERLOADS,
    Overload,
    timeout_for,
)
from bench.noise import Noise as Faults
from pipeline.fake.limiters import Limits

#: Seconds of the clean rate each noise cell lasts (the benchmark's length).
SECONDS = 8.0
#: The clean rate a simulated cell is sized by: the benchmark's machine bounds c=64 at 20 ms.
RATE_BOUND = 3000.0


def _noise_cell(c: int, latency_s: float, noise: Noise, seed: int) -> tuple[float, Outcome]:
    records = int(min(c / latency_s, RATE_BOUND) * SECONDS)
    args = {"records": records, "concurrency": c, "latency": latency_s, "seed": seed}
    clean = simulate(Limits(), noise=Noise(timeout=noise.timeout), **args)  # type: ignore[arg-type]
    noisy = simulate(Limits(), noise=noise, **args)  # type: ignore[arg-type]
    return noisy.rate / clean.rate, noisy


CELLS = [(c, latency, cell) for c, latency in GROUPS for cell in NOISES]


@pytest.mark.parametrize(
    ("c", "latency_ms", "cell"), CELLS, ids=[f"{n.name}, c={c}, {ms:.0f} ms" for c, ms, n in CELLS]
)
def test_noise_costs_at_most_the_target(c: int, latency_ms: float, cell: Faults) -> None:
    timeout = timeout_for(latency_ms)
    noise = Noise(fail=cell.fail, reset=cell.reset, late=cell.late, timeout=timeout)
    for seed in (1, 2, 3):
        ratio, outcome = _noise_cell(c, latency_ms / 1000, noise, seed)
        assert ratio >= NOISE_TARGET, (seed, ratio, outcome)
        assert outcome.shown is None, (seed, outcome)  # noise is never a limit
        assert outcome.noise > 0


def _limits(cell: Overload) -> Limits:
    limit = {"stall_above": cell.limit} if cell.stall else {"shed_above": cell.limit}
    return Limits(latency_jitter_ms=cell.jitter_ms, **limit)  # type: ignore[arg-type]


def _overload(cell: Overload, seed: int) -> tuple[float, Outcome]:
    records = int(cell.ideal * 2 * SECONDS)
    outcome = simulate(
        _limits(cell),
        records=records,
        concurrency=cell.concurrency,
        latency=cell.latency_ms / 1000,
        seed=seed,
        noise=Noise(timeout=timeout_for(cell.latency_ms)),
    )
    return outcome.rate / cell.ideal, outcome


@pytest.mark.parametrize("cell", OVERLOADS, ids=[f"{c.name}, c={c.concurrency}" for c in OVERLOADS])
def test_a_server_that_sheds_load_or_stalls_is_found(cell: Overload) -> None:
    for seed in (1, 2, 3):
        ratio, outcome = _overload(cell, seed)
        assert ratio >= OVERLOAD_TARGET, (seed, ratio, outcome)
        assert outcome.error_share < ERROR_SHARE, (seed, outcome)
        # Found and respected; shown (advice) once the evidence passed the test, or not yet.
        assert outcome.concurrency in (cell.limit, cell.limit + 1), (seed, outcome)
        assert outcome.shown in (None, cell.limit), (seed, outcome)


def _bound(latency: float, noise: Noise) -> float:
    """What is left when every slot is taken: an answer later than the timeout holds its
    slot until the timeout, whatever flow control does (3% of them at 5 ms, a third of the
    slots and more)."""
    return min(1.0, latency / (latency * (1.0 - noise.late) + noise.late * noise.timeout))


def test_no_collapse_around_the_matrix() -> None:
    """Each cell against what its late answers leave of it (:func:`_bound`)."""
    worst: list[tuple[float, str]] = []
    for c in (4, 16, 64):
        for latency_ms in (5.0, 20.0, 100.0):
            timeout = timeout_for(latency_ms)
            for noise in (
                Noise(fail=0.10, timeout=timeout),
                Noise(reset=0.03, timeout=timeout),
                Noise(late=0.03, timeout=timeout),
                Noise(fail=0.03, reset=0.01, late=0.01, timeout=timeout),
            ):
                ratio, outcome = _noise_cell(c, latency_ms / 1000, noise, seed=1)
                worst.append((ratio / _bound(latency_ms / 1000, noise), f"{noise}, c={c}"))
                shown = outcome.shown
                assert shown is None or shown >= 0.9 * c, (noise, c, latency_ms, outcome)
    assert min(worst)[0] >= 0.5, min(worst)
    met = sum(1 for ratio, _ in worst if ratio >= NOISE_TARGET)
    assert met >= 0.6 * len(worst), sorted(worst)[:10]


@pytest.mark.parametrize("limit", [4, 24])
@pytest.mark.parametrize("stall", [False, True])
def test_limits_of_other_sizes_are_found(limit: int, stall: bool) -> None:
    cell = Overload("around", 64, stall, limit=limit)
    ratio, outcome = _overload(cell, seed=1)
    assert ratio >= 0.85, (ratio, outcome)
    # Each probe above the limit costs an error or two: a larger share of a small limit's.
    assert outcome.error_share < (0.08 if limit < 8 else 0.03), outcome
    assert abs(outcome.concurrency - limit) <= max(1, limit // 8), outcome
    assert outcome.shown is None or abs(outcome.shown - limit) <= max(1, limit // 8), outcome
