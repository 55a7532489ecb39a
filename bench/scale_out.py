"""Scenario 10: one ``run --drain`` worker against three, through Redis + PostgreSQL.

The same records are enqueued twice (two streams); one worker drains the first, three
workers (separate processes, one consumer name each) drain the second, every worker on the
same fast fake server with no rate limit and a PostgreSQL ledger (a schema of its own, dropped
after). The ratio is the three workers' records/s (first start to last end) over the one's.
On a 2-core machine three workers share two cores with the server and PostgreSQL: the ratio
shows the coordination cost, not a scaling promise. Needs Redis and PostgreSQL on loopback
(``BENCH_REDIS``, ``BENCH_POSTGRES``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import asyncpg
import redis

from bench.data import ASSISTANT_ID
from bench.procs import BenchError, child_env, run_child
from bench.server import ServerProcess
from bench.sizes import Context
from bench.table import Row

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET = 1.0  # three workers should at least not be slower than one


def _drain(stream: str, ledger: str, server: ServerProcess, workers: int, conc: int) -> float:
    """Seconds from the first worker's start to the last one's end."""
    argv = [sys.executable, "-m", "pipeline", "run", "--drain", "--no-progress", "--rate", "0"]
    argv += ["--ledger", ledger, "--base-url", server.url, "--concurrency", str(conc)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*argv, f"{REDIS}?stream={stream}&group=bench&consumer=w{i}"],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise BenchError(f"worker exited {proc.returncode}: {err.decode()[-300:]}")
    return time.perf_counter() - started


async def _drop(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def one_vs_three(ctx: Context) -> list[Row]:
    rows = max(3, ctx.sizes.run_rows // 5)
    path = ctx.files.csv(rows)
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    tag = uuid.uuid4().hex[:10]
    streams, schemas = [f"bench-{tag}-1", f"bench-{tag}-3"], [f"bench_{tag}_1", f"bench_{tag}_3"]
    seconds: list[float] = []
    try:
        for stream in streams:
            to = f"{REDIS}?stream={stream}"
            run_child([sys.executable, "-m", "pipeline", "enqueue", str(path), "--to", to,
                       "--assistant-id", ASSISTANT_ID])  # fmt: skip
        with ServerProcess(ctx.workdir) as server:
            for stream, schema, workers in zip(streams, schemas, (1, 3), strict=True):
                server.reset()
                ledger = f"{POSTGRES}?schema={schema}"
                seconds.append(_drain(stream, ledger, server, workers, ctx.sizes.concurrency))
                stats = server.stats()
                if stats.get("stored") != rows or stats.get("duplicates"):
                    raise BenchError(f"{workers} workers: expected {rows} stored once: {stats}")
                if client.xpending(stream, "bench")["pending"]:
                    raise BenchError(f"{workers} workers left entries pending")
    finally:
        client.delete(*streams, *(f"{s}:dead" for s in streams))
        client.close()
        for schema in schemas:
            asyncio.run(_drop(schema))
    one, three = rows / seconds[0], rows / seconds[1]
    return [
        Row(
            scenario=f"10 scale-out: 3 workers vs 1, {rows:,} entries, Redis + PostgreSQL",
            measured=f"{three:,.0f} rec/s (3 workers)",
            baseline=f"{one:,.0f} rec/s (1 worker)",
            ratio=three / one,
            target=f">= {TARGET:.2f} (2 cores shared)",
            met=three / one >= TARGET,
            details={"one_worker_s": round(seconds[0], 2), "three_workers_s": round(seconds[1], 2)},
        )
    ]
