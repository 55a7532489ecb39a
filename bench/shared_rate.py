"""Scenario 10: the accuracy of a rate budget shared through Redis (``--rate-scope``).

Three worker processes, each with its own file and ledger, run at the same time against one
fake server with ``--rate 100`` and one scope: the server should see 100 requests/s in total,
not 300. Measured from the server's side (the ``date_created`` second of every stored
feedback), over the whole seconds in which all three were sending (the first and the last
calendar seconds are partial and left out). Needs Redis on loopback (``BENCH_REDIS``).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import redis

from bench.data import ASSISTANT_ID
from bench.network import fresh_ledger
from bench.procs import BenchError, Child, count, pipeline_run
from bench.server import ServerProcess, feedback_dates
from bench.sizes import Context
from bench.table import Row

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
WORKERS = 3
RATE = 100.0


def shared_rate_accuracy(ctx: Context) -> list[Row]:
    per_worker = max(ctx.sizes.rate_records // WORKERS, 100)
    key = f"bench-{uuid.uuid4().hex[:12]}"
    scope = f"{REDIS}?key={key}"
    paths = [ctx.files.csv(per_worker, start=i * per_worker) for i in range(WORKERS)]
    try:
        with ServerProcess(ctx.workdir) as server, ThreadPoolExecutor(WORKERS) as pool:
            server.reset()
            runs: list[Child] = list(
                pool.map(
                    lambda path: pipeline_run(
                        path,
                        fresh_ledger(ctx, "shared"),
                        base_url=server.url,
                        concurrency=ctx.sizes.concurrency,
                        rate=RATE,
                        extra=["--rate-scope", scope],
                    ),
                    paths,
                )
            )
            stats = server.stats()
            per_second = Counter(feedback_dates(server, ASSISTANT_ID))
    finally:
        client = redis.Redis.from_url(REDIS)
        client.delete(
            f"feedback-pipeline:rate:{{{key}}}", f"feedback-pipeline:rate:{{{key}}}:pause"
        )
        client.close()
    total = WORKERS * per_worker
    sent = sum(count(run, "sent") for run in runs)
    if sent != total or stats.get("stored") != total or stats.get("duplicates"):
        raise BenchError(f"expected {total} stored once, clients say {sent}, server {stats}")
    seconds = [per_second[sec] for sec in sorted(per_second)[1:-1]]
    if not seconds:
        raise BenchError("the run took less than three calendar seconds: nothing to judge")
    achieved = sum(seconds) / len(seconds)
    ratio = achieved / RATE
    return [
        Row(
            scenario=f"10 shared rate, {WORKERS} workers at --rate {RATE:g}, one --rate-scope",
            measured=f"{achieved:,.1f} rec/s (whole seconds: min {min(seconds)}, "
            f"max {max(seconds)})",
            baseline=f"{RATE:g} rec/s asked in total",
            ratio=ratio,
            target="0.90 .. 1.01",
            met=0.90 <= ratio <= 1.01,
            details={"records": total, "per_second": seconds},
        )
    ]
