"""Scenario 10: the same records from a Redis stream (``run --drain``) and from a CSV file.

Both runs go to the same fast fake server, with no rate limit, in the same suite run; the
ratio is the stream's records/s over the file's. Its size is half of ``run_rows`` (50,000 at
full size). The stream is enqueued with the real ``enqueue`` command (its time is shown, not
judged) and deleted afterwards. Needs Redis on loopback (``BENCH_REDIS`` to point elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path

import redis

from bench.data import ASSISTANT_ID
from bench.network import check_exactly_once, fresh_ledger
from bench.procs import BenchError, Child, count, duration, pipeline_run, run_child
from bench.server import ServerProcess
from bench.sizes import Context
from bench.table import Row

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
TARGET = 0.8  # reading a stream (and acking) should cost little next to reading a file


def _run_stream(url: str, ledger: Path, server: ServerProcess, concurrency: int) -> Child:
    report = ledger.with_suffix(".report.json")
    argv = [sys.executable, "-m", "pipeline", "run", url, "--drain", "--no-progress"]
    argv += ["--assistant-id", ASSISTANT_ID, "--ledger", str(ledger), "--report", str(report)]
    argv += ["--concurrency", str(concurrency), "--rate", "0", "--base-url", server.url]
    child = run_child(argv)
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"stream run wrote no readable report: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchError("stream run: report is not a JSON object")
    return dataclasses.replace(child, report=data)


def redis_vs_file(ctx: Context) -> list[Row]:
    rows = max(1, ctx.sizes.run_rows // 2)
    concurrency = ctx.sizes.concurrency
    path = ctx.files.csv(rows)
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"no Redis at {REDIS}: {exc}") from None
    stream = f"bench-{uuid.uuid4().hex[:10]}"
    try:
        to = f"{REDIS}?stream={stream}"
        enqueue = [sys.executable, "-m", "pipeline", "enqueue", str(path), "--to", to]
        published = run_child([*enqueue, "--assistant-id", ASSISTANT_ID])
        if client.xlen(stream) != rows:
            raise BenchError(f"enqueue published {client.xlen(stream)} of {rows}")
        with ServerProcess(ctx.workdir) as server:
            server.reset()
            from_file = pipeline_run(
                path, fresh_ledger(ctx, "file"), base_url=server.url, concurrency=concurrency
            )
            check_exactly_once(server, from_file, rows)
            server.reset()
            url = f"{to}&group=bench"
            from_stream = _run_stream(url, fresh_ledger(ctx, "stream"), server, concurrency)
            check_exactly_once(server, from_stream, rows)
        pending = client.xpending(stream, "bench")["pending"]
        if pending:
            raise BenchError(f"{pending} entries left pending after the drain")
    finally:
        client.delete(stream, f"{stream}:dead")
        client.close()
    file_rate = count(from_file, "sent") / duration(from_file)
    stream_rate = count(from_stream, "sent") / duration(from_stream)
    return [
        Row(
            scenario=f"10 Redis --drain, {rows:,} entries",
            measured=f"{stream_rate:,.0f} rec/s",
            baseline=f"{file_rate:,.0f} rec/s same records from a file",
            ratio=stream_rate / file_rate,
            target=f">= {TARGET:.2f}",
            met=stream_rate / file_rate >= TARGET,
            details={
                "enqueue_wall_s": round(published.wall_s, 2),
                "stream_cpu_s": round(from_stream.cpu_s, 2),
                "file_cpu_s": round(from_file.cpu_s, 2),
            },
        )
    ]
