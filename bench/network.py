"""Scenarios against the fake API on a fast server: throughput (1), CPU (7), the SDK (8).

Throughput and CPU are measured at two concurrencies (``--concurrency``, 16, and
``--wide-concurrency``, 64), each against the minimal loop at the same concurrency.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import twilio_sdk
from bench.procs import BenchError, Child, count, duration, module_run, pipeline_run
from bench.server import ServerProcess
from bench.sizes import Context
from bench.table import Row

_names = itertools.count(1)


def fresh_ledger(ctx: Context, label: str) -> Path:
    return ctx.files.ledger(f"{label}-{next(_names)}")


def pipeline_on(
    ctx: Context, server: ServerProcess, path: Path, *, concurrency: int, rate: float = 0.0
) -> Child:
    """One pipeline run on a fresh ledger against a freshly reset server."""
    server.reset()
    return pipeline_run(
        path,
        fresh_ledger(ctx, "run"),
        base_url=server.url,
        concurrency=concurrency,
        rate=rate,
    )


def minimal_on(server: ServerProcess, path: Path, concurrency: int) -> Child:
    server.reset()
    args = [str(path), "--base-url", server.url, "--concurrency", str(concurrency)]
    return module_run("bench.minimal_client", args)


def check_exactly_once(server: ServerProcess, child: Child, expected: int) -> None:
    stats = server.stats()
    sent = count(child, "sent")
    if sent != expected or stats.get("stored") != expected or stats.get("duplicates"):
        raise BenchError(f"expected {expected} stored once, client says {sent}, server {stats}")


@dataclass(frozen=True)
class _Measured:
    rate: float  # records per second, the best run
    cpu_per_record: float  # CPU seconds, start-up cost subtracted
    server_busy: float  # share of one core the server used during the best run
    rates: list[float]  # every run, to show the spread


def _measure(ctx: Context, runs: list[tuple[Child, float]], startup: Child) -> _Measured:
    n, n0 = ctx.sizes.records, ctx.sizes.startup_records
    rates = [n / duration(child) for child, _ in runs]
    best = rates.index(max(rates))
    cpu = min(child.cpu_s for child, _ in runs)
    per_record = (cpu - startup.cpu_s) / (n - n0) if n > n0 and cpu > startup.cpu_s else cpu / n
    return _Measured(rates[best], per_record, runs[best][1], [round(r) for r in rates])


def _timed(server: ServerProcess, run: Callable[[], Child]) -> tuple[Child, float]:
    """Run a client; also return the share of one core the server was busy meanwhile."""
    before = server.cpu_seconds()
    child = run()
    return child, (server.cpu_seconds() - before) / duration(child)


def _pair(ctx: Context, server: ServerProcess, concurrency: int) -> tuple[_Measured, _Measured]:
    """The pipeline and the minimal loop at one concurrency, best of ``repeats`` each."""
    s = ctx.sizes
    path = ctx.files.csv(s.records)
    small = ctx.files.csv(s.startup_records, start=s.records)
    pipe_runs: list[tuple[Child, float]] = []
    min_runs: list[tuple[Child, float]] = []
    for _ in range(s.repeats):
        # Alternate the two clients so that a slow spell of the machine hits both.
        pipe_runs.append(
            _timed(server, lambda: pipeline_on(ctx, server, path, concurrency=concurrency))
        )
        check_exactly_once(server, pipe_runs[-1][0], s.records)
        min_runs.append(_timed(server, lambda: minimal_on(server, path, concurrency)))
        check_exactly_once(server, min_runs[-1][0], s.records)
    pipe_startup = pipeline_on(ctx, server, small, concurrency=concurrency)
    min_startup = minimal_on(server, small, concurrency)
    return _measure(ctx, pipe_runs, pipe_startup), _measure(ctx, min_runs, min_startup)


def fast_server(ctx: Context) -> list[Row]:
    s = ctx.sizes
    with ServerProcess(ctx.workdir) as server:
        measured = [(c, *_pair(ctx, server, c)) for c in (s.concurrency, s.wide_concurrency)]
        rows = [_throughput_row(ctx, c, pipe, ceiling) for c, pipe, ceiling in measured]
        rows += [_cpu_row(c, pipe, ceiling) for c, pipe, ceiling in measured]
        rows.append(_sdk_row(ctx, server, measured[0][1].rate))
    return rows


def _throughput_row(ctx: Context, concurrency: int, pipe: _Measured, ceiling: _Measured) -> Row:
    ratio = pipe.rate / ceiling.rate
    return Row(
        scenario=f"1 throughput, c={concurrency}",
        measured=f"{pipe.rate:,.0f} rec/s",
        baseline=f"{ceiling.rate:,.0f} rec/s minimal loop",
        ratio=ratio,
        target=">= 0.90",
        met=ratio >= 0.9,
        details={
            "records": ctx.sizes.records,
            "rates_pipeline": pipe.rates,
            "rates_minimal": ceiling.rates,
            "server_busy_pipeline": round(pipe.server_busy, 3),
            "server_busy_minimal": round(ceiling.server_busy, 3),
            "note": "server_busy near 1.0 means the one-core fake server bounded that run",
        },
    )


def _cpu_row(concurrency: int, pipe: _Measured, ceiling: _Measured) -> Row:
    ratio = pipe.cpu_per_record / ceiling.cpu_per_record
    return Row(
        scenario=f"7 CPU per 10k records, c={concurrency}",
        measured=f"{pipe.cpu_per_record * 10_000:.2f} CPU s",
        baseline=f"{ceiling.cpu_per_record * 10_000:.2f} CPU s minimal loop",
        ratio=ratio,
        target="<= 1.30",
        met=ratio <= 1.3,
        details={"method": "user+sys from os.wait4, minus a tiny run's (start-up) CPU"},
    )


def _sdk_row(ctx: Context, server: ServerProcess, our_rate: float) -> Row:
    scenario = "8 vs twilio-python loop"
    reason = twilio_sdk.unavailable()
    if reason is not None:
        return Row(
            scenario=scenario,
            measured=f"{our_rate:,.0f} rec/s",
            baseline=f"n/a: {reason}",
            ratio=None,
            target="info",
            met=None,
        )
    path = ctx.files.csv(ctx.sizes.sdk_records, start=ctx.sizes.records * 2)
    server.reset()
    sdk = module_run("bench.twilio_sdk", [str(path), "--base-url", server.url])
    check_exactly_once(server, sdk, ctx.sizes.sdk_records)
    sdk_rate = ctx.sizes.sdk_records / duration(sdk)
    version = sdk.report.get("version", "?")
    return Row(
        scenario=scenario,
        measured=f"{our_rate:,.0f} rec/s",
        baseline=f"{sdk_rate:,.0f} rec/s twilio {version}",
        ratio=our_rate / sdk_rate,
        target="info",
        met=None,
        details={"sdk_records": ctx.sizes.sdk_records, "sdk": "plain sequential create() loop"},
    )
