"""Scenarios where something else sets the pace: server latency (2), the client's own rate
limit (3), and a server that throttles at a limit the client does not know (4)."""

from __future__ import annotations

from collections import Counter

from bench.data import ASSISTANT_ID
from bench.network import check_exactly_once, minimal_on, pipeline_on
from bench.procs import count, duration
from bench.server import ServerProcess, feedback_dates
from bench.sizes import Context
from bench.table import Row


def latency_bound(ctx: Context) -> list[Row]:
    s = ctx.sizes
    path = ctx.files.csv(s.latency_records)
    with ServerProcess(ctx.workdir, latency_ms=s.latency_ms) as server:
        run = pipeline_on(ctx, server, path, concurrency=s.latency_concurrency)
        check_exactly_once(server, run, s.latency_records)
        # What any Python client gets from this server: the fake API answers the requests
        # of one round one after the other, which stretches every round a little.
        minimal = minimal_on(server, path, s.latency_concurrency)
        check_exactly_once(server, minimal, s.latency_records)
    achieved = s.latency_records / duration(run)
    ceiling = s.latency_records / duration(minimal)
    ideal = s.latency_concurrency / (s.latency_ms / 1000.0)
    ratio = achieved / ideal
    return [
        Row(
            scenario=f"2a latency {s.latency_ms:g} ms, c={s.latency_concurrency}",
            measured=f"{achieved:,.1f} rec/s",
            baseline=f"{ideal:,.0f} rec/s = c / latency",
            ratio=ratio,
            target=">= 0.95",
            met=ratio >= 0.95,
            details={"records": s.latency_records},
        ),
        Row(
            scenario="2b latency-bound vs minimal loop",
            measured=f"{achieved:,.1f} rec/s",
            baseline=f"{ceiling:,.1f} rec/s minimal loop ({ceiling / ideal:.3f} of ideal)",
            ratio=achieved / ceiling,
            target="info",
            met=None,
        ),
    ]


def rate_accuracy(ctx: Context) -> list[Row]:
    s = ctx.sizes
    path = ctx.files.csv(s.rate_records)
    with ServerProcess(ctx.workdir) as server:
        run = pipeline_on(ctx, server, path, concurrency=ctx.sizes.concurrency, rate=s.rate)
        check_exactly_once(server, run, s.rate_records)
        per_second = Counter(feedback_dates(server, ASSISTANT_ID))
    achieved = s.rate_records / duration(run)
    ratio = achieved / s.rate
    # Whole calendar seconds only: the first and the last are partial.
    seconds = sorted(per_second)[1:-1]
    peak = max((per_second[sec] for sec in seconds), default=0)
    return [
        Row(
            scenario=f"3 rate accuracy --rate {s.rate:g}",
            measured=f"{achieved:,.1f} rec/s (peak 1 s: {peak})",
            baseline=f"{s.rate:g} rec/s asked",
            ratio=ratio,
            target="0.98 .. 1.00",
            met=0.98 <= ratio <= 1.0,
            details={
                "records": s.rate_records,
                "peak_whole_second": peak,
                "note": "peak counts feedbacks the server stored in one calendar second",
            },
        )
    ]


def unknown_limit(ctx: Context) -> list[Row]:
    s = ctx.sizes
    path = ctx.files.csv(s.throttle_records)
    with ServerProcess(ctx.workdir, throttle_rps=s.throttle_rps) as server:
        run = pipeline_on(ctx, server, path, concurrency=s.concurrency)
        stats = server.stats()
    stored = int(stats.get("stored", 0))
    posts = max(1, int(stats.get("posts_received", 0)))
    throttled = int(stats.get("responses", {}).get("429", 0))
    achieved = stored / duration(run)
    # The server's bucket starts full (one second of requests): the best any client could do
    # with N records is N in (N - R) / R seconds.
    n, limit = s.throttle_records, s.throttle_rps
    # (With N <= R everything fits in the burst: then R itself is the baseline.)
    ceiling = limit * n / (n - limit) if n > limit else limit
    share = throttled / posts
    details = {
        "records": n,
        "stored": stored,
        "failed": count(run, "failed"),
        "posts": posts,
        "429": throttled,
        "retries": count(run, "retries"),
        "ceiling_rec_s": round(ceiling, 1),
        "client": f"--concurrency {s.concurrency} --rate 0: the client is not told the limit",
    }
    ratio = achieved / ceiling
    return [
        Row(
            scenario=f"4a unknown limit {limit:g}/s, c={s.concurrency}",
            measured=f"{achieved:,.1f} rec/s ({n - stored} not sent)",
            baseline=f"{ceiling:,.1f} rec/s = " + ("R + 1 s burst" if n > limit else "R"),
            ratio=ratio,
            target=">= 0.90",
            met=ratio >= 0.9,
            details=details,
        ),
        Row(
            scenario="4b unknown limit: 429 share",
            measured=f"{share:.1%} of {posts} POSTs",
            baseline="all POSTs",
            ratio=share,
            target="< 0.02",
            met=share < 0.02,
        ),
    ]
