"""Scenario 9: the flow-control matrix. Limits the client is not told, of every shape.

Each cell runs the pipeline with ``--rate 0`` and a ``--concurrency`` below or well above the
limit against a fake API with one limiter shape (``fake-server --max-inflight`` or
``--rate-limit --window --burst-ms --retry-after``, latency that varies), and divides the rate
achieved by the best any client could do against that limit:

- requests in flight: ``min(c, N) / mean latency``;
- a token bucket of rate R: ``R * n / (n - B)`` for n records, B being its burst (what it
  lets through at once when the run starts), and never more than ``c / mean latency``;
- a window of R per second: R (a window's burst is not free: it is paid for by a window
  that admits nothing, so the best client that does not burst runs at R).

Target in every cell: >= 0.90 of that ideal with < 2% of the POSTs answered 429. Each cell
lasts ``--matrix-seconds`` (20) of the ideal rate: long enough that neither the first burst's
refusals (any client that does not know the limit pays them) nor a last record waiting out a
``Retry-After: 1`` alone (a second more, whatever the controller does) decide the cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.network import check_exactly_once, pipeline_on
from bench.procs import BenchError, count, duration
from bench.server import ServerProcess
from bench.sizes import Context
from bench.table import Row, failed_row

TARGET_RATIO = 0.9
TARGET_SHARE = 0.02


@dataclass(frozen=True)
class Cell:
    name: str
    concurrency: int
    latency_ms: float
    jitter_ms: float
    max_inflight: int | None = None
    rate: float | None = None
    window: str = "bucket"
    burst_ms: float = 10.0
    retry_after: str = "present"

    @property
    def mean_latency_s(self) -> float:
        return (self.latency_ms + self.jitter_ms / 2) / 1000.0

    def server_args(self) -> list[str]:
        args = ["--latency-jitter-ms", str(self.jitter_ms), "--retry-after", self.retry_after]
        if self.max_inflight is not None:
            args += ["--max-inflight", str(self.max_inflight)]
        if self.rate is not None:
            args += ["--rate-limit", str(self.rate), "--window", self.window]
            args += ["--burst-ms", str(self.burst_ms)]
        return args

    def steady(self) -> float:
        """The limit's sustained rate, without the start-up burst."""
        by_latency = self.concurrency / self.mean_latency_s
        if self.max_inflight is not None:
            by_latency = min(self.concurrency, self.max_inflight) / self.mean_latency_s
        return min(by_latency, self.rate) if self.rate is not None else by_latency

    def ideal(self, n: int) -> float:
        if self.rate is None or self.window != "bucket":
            return self.steady()
        burst = max(1.0, self.rate * self.burst_ms / 1000.0)
        by_rate = self.rate * n / (n - burst) if n > burst else self.rate
        return min(by_rate, self.concurrency / self.mean_latency_s)


def _cells() -> list[Cell]:
    # "Below" and "well above" the limit: the limit's own concurrency is N in flight, or
    # R x latency (200/s x 10 ms = 2) for a rate; well above is 8 times that or more.
    # Where the ideal is concurrency / latency, latencies are long enough (80-120 ms) that our
    # own few ms per request do not count: the matrix judges flow control, not overhead.
    inflight = {"max_inflight": 8, "latency_ms": 80.0, "jitter_ms": 40.0, "retry_after": "absent"}
    rate = {"rate": 200.0, "latency_ms": 5.0, "jitter_ms": 10.0}
    slow = {**rate, "latency_ms": 80.0, "jitter_ms": 40.0}
    tight = {**rate, "burst_ms": 50.0}  # 10 requests: a strict pacer
    cells: list[tuple[str, int, dict[str, Any]]] = [
        ("in-flight 8, no Retry-After", 4, inflight),
        ("in-flight 8, no Retry-After", 64, inflight),
        ("bucket 50 ms burst, RA 1, 100 ms", 2, {**slow, "burst_ms": 50.0}),
        ("bucket 50 ms burst, RA 1", 16, tight),
        ("bucket 50 ms burst, RA 0", 16, {**tight, "retry_after": "zero"}),
        ("bucket 50 ms burst, RA 0", 64, {**tight, "retry_after": "zero"}),
        ("bucket 50 ms burst, no RA", 16, {**tight, "retry_after": "absent"}),
        ("bucket 10 ms burst, RA 1", 16, {**rate, "burst_ms": 10.0}),
        ("bucket 1 s burst, RA 1", 16, {**rate, "burst_ms": 1000.0}),
        ("fixed window 1 s, RA", 16, {**rate, "window": "fixed"}),
        ("sliding window 1 s, RA 0", 16, {**rate, "window": "sliding", "retry_after": "zero"}),
        ("sliding window 1 s, no RA", 16, {**rate, "window": "sliding", "retry_after": "absent"}),
    ]
    return [Cell(name, c, **params) for name, c, params in cells]


CELLS = _cells()


def _run_cell(ctx: Context, cell: Cell) -> Row:
    n = max(50, int(cell.steady() * ctx.sizes.matrix_seconds))
    path = ctx.files.csv(n)
    with ServerProcess(ctx.workdir, latency_ms=cell.latency_ms, extra=cell.server_args()) as server:
        run = pipeline_on(ctx, server, path, concurrency=cell.concurrency)
        check_exactly_once(server, run, n)
        stats = server.stats()
    posts = max(1, int(stats.get("posts_received", 0)))
    throttled = int(stats.get("responses", {}).get("429", 0))
    achieved = n / duration(run)
    ideal = cell.ideal(n)
    ratio, share = achieved / ideal, throttled / posts
    cap = run.report.get("rate_cap")
    converged = f"limit {run.report.get('concurrency')}, cap " + (
        f"{cap:.0f}/s" if isinstance(cap, int | float) else "none"
    )
    return Row(
        scenario=f"9 {cell.name}, c={cell.concurrency}",
        measured=f"{achieved:,.1f} rec/s, 429 {share:.1%}",
        baseline=f"{ideal:,.1f} rec/s ideal",
        ratio=ratio,
        target=">= 0.90, 429 < 2%",
        met=ratio >= TARGET_RATIO and share < TARGET_SHARE,
        details={
            "records": n,
            "posts": posts,
            "429": throttled,
            "429_share": round(share, 4),
            "retries": count(run, "retries"),
            "pauses": count(run, "pauses"),
            "converged": converged,
            "server": cell.server_args(),
        },
    )


def _cell_row(ctx: Context, cell: Cell) -> Row:
    """A cell that fails (a record not delivered exactly once, a run that errs) is a row that
    says so, not the end of the matrix: the other cells still tell where flow control stands."""
    try:
        return _run_cell(ctx, cell)
    except BenchError as exc:
        return failed_row(f"9 {cell.name}, c={cell.concurrency}", str(exc))


def _margin(row: Row) -> float:
    """How far a cell is inside its nearer target, as a share of that target (below 0: missed)."""
    ratio = ((row.ratio or 0.0) - TARGET_RATIO) / TARGET_RATIO
    share = (TARGET_SHARE - float(row.details.get("429_share", 0.0))) / TARGET_SHARE
    return min(ratio, share)


def flow_matrix(ctx: Context) -> list[Row]:
    cells = CELLS[: ctx.sizes.matrix_cells] if ctx.sizes.matrix_cells else CELLS
    rows = [_cell_row(ctx, cell) for cell in cells]
    worst = min(rows, key=_margin)
    rows.append(
        Row(
            scenario="9 worst cell",
            measured=worst.measured,
            baseline=worst.scenario,
            ratio=worst.ratio,
            target=">= 0.90, 429 < 2%",
            met=worst.met,
        )
    )
    return rows
