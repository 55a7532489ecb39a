"""Scenario 10b: the same records from NATS JetStream and from Amazon SQS (``run --drain``)
against the same records from a CSV file, each ratio measured in the same run.

As scenario 10 (:mod:`bench.queues`) does for Redis: half of ``run_rows`` records (50,000 at
full size) are enqueued with the real ``enqueue`` command (its time shown, not judged), then
drained into the same fast fake server with no rate limit; the ratio is the broker's
records/s over the file's (the file run before and after the drain, averaged).

NATS: the server on loopback (``BENCH_NATS``); its stream is deleted afterwards. SQS:
:mod:`bench.sqs_server`, started here on a free port, with no delay and with 10 ms a call (a
region's round trip, which the receives in flight must hide). Not moto, which the tests use
for SQS's semantics: its cost per call grows with the queue, so 50,000 messages would take
hours and measure moto. ``BENCH_SQS=URL`` points at another endpoint (a real queue) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.data import ASSISTANT_ID
from bench.network import check_exactly_once, fresh_ledger
from bench.procs import BenchError, Child, count, duration, pipeline_run, run_child
from bench.queues import TARGET, _run_stream
from bench.server import ServerProcess
from bench.sizes import Context
from bench.table import Row

NATS = os.environ.get("BENCH_NATS", "nats://127.0.0.1:4222")
SQS = os.environ.get("BENCH_SQS")  # an endpoint; unset: bench.sqs_server, started here


def _drain_vs_file(ctx: Context, label: str, url: str, left: Callable[[], int]) -> list[Row]:
    rows = max(1, ctx.sizes.run_rows // 2)
    concurrency = ctx.sizes.concurrency
    path = ctx.files.csv(rows)
    enqueue = [sys.executable, "-m", "pipeline", "enqueue", str(path), "--to", url]
    published = run_child([*enqueue, "--assistant-id", ASSISTANT_ID])
    if left() != rows:
        raise BenchError(f"{label}: enqueue published {left()} of {rows}")
    with ServerProcess(ctx.workdir) as server:

        def from_file(name: str) -> Child:
            server.reset()
            child = pipeline_run(
                path, fresh_ledger(ctx, name), base_url=server.url, concurrency=concurrency
            )
            check_exactly_once(server, child, rows)
            return child

        slug = "-".join(re.findall(r"\w+", label)).lower()
        before = from_file(f"{slug}-file-before")
        server.reset()
        drained: Child = _run_stream(url, fresh_ledger(ctx, slug), server, concurrency)
        check_exactly_once(server, drained, rows)
        after = from_file(f"{slug}-file-after")
    if left():
        raise BenchError(f"{label}: {left()} messages left after the drain")
    # The file's rate before and after the drain, averaged: a machine that slows or speeds
    # up during the cell moves both sides of the ratio alike.
    file_rates = [count(c, "sent") / duration(c) for c in (before, after)]
    file_rate = sum(file_rates) / 2
    rate = count(drained, "sent") / duration(drained)
    return [
        Row(
            scenario=f"10b {label} --drain, {rows:,} messages",
            measured=f"{rate:,.0f} rec/s",
            baseline=f"{file_rate:,.0f} rec/s same records from a file",
            ratio=rate / file_rate,
            target=f">= {TARGET:.2f}",
            met=rate / file_rate >= TARGET,
            details={
                "enqueue_wall_s": round(published.wall_s, 2),
                "drain_wall_s": round(drained.wall_s, 2),
                "drain_cpu_s": round(drained.cpu_s, 2),
                "file_rates": [round(r) for r in file_rates],
                "file_cpu_s": [round(c.cpu_s, 2) for c in (before, after)],
            },
        )
    ]


def nats_vs_file(ctx: Context) -> list[Row]:
    import nats
    from nats.js.errors import NotFoundError

    stream = f"bench{uuid.uuid4().hex[:10]}"

    async def _left() -> int:
        connection = await nats.connect(NATS, connect_timeout=2, allow_reconnect=False)
        try:
            jsm = connection.jsm()
            try:
                info = await jsm.consumer_info(stream, "bench")
            except NotFoundError:
                return (await jsm.stream_info(stream)).state.messages
            return (info.num_pending or 0) + (info.num_ack_pending or 0)
        finally:
            await connection.close()

    async def _delete() -> None:
        connection = await nats.connect(NATS, connect_timeout=2, allow_reconnect=False)
        with contextlib.suppress(Exception):
            for name in (stream, f"{stream}_dead"):
                await connection.jsm().delete_stream(name)
        await connection.close()

    try:
        asyncio.run(_delete())  # reachable at all
    except Exception as exc:  # noqa: BLE001 - no server: one line
        raise BenchError(f"no NATS at {NATS}: {type(exc).__name__}: {exc}") from None
    try:
        url = f"{NATS}?stream={stream}&consumer=bench"
        return _drain_vs_file(ctx, "NATS JetStream", url, lambda: asyncio.run(_left()))
    finally:
        asyncio.run(_delete())


@contextlib.contextmanager
def _sqs_endpoint(workdir: Path, latency_ms: float) -> Iterator[str]:
    if SQS:
        yield SQS
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (workdir / "sqs.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.sqs_server", "--port", str(port)]
        + ["--latency-ms", str(latency_ms)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the SQS endpoint did not start (see {log.name})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _sqs_cell(ctx: Context, latency_ms: float) -> list[Row]:
    from aiobotocore.session import get_session

    queue = f"bench-{uuid.uuid4().hex[:10]}"
    with _sqs_endpoint(ctx.workdir, latency_ms) as endpoint:

        async def _left() -> int:
            session = get_session()
            async with session.create_client(
                "sqs", region_name="us-east-1", endpoint_url=endpoint
            ) as client:
                url = (await client.get_queue_url(QueueName=queue))["QueueUrl"]
                names: list[Any] = [
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ]
                answer = await client.get_queue_attributes(QueueUrl=url, AttributeNames=names)
                return sum(int(v) for v in answer.get("Attributes", {}).values())

        url = f"sqs://{queue}?region=us-east-1&endpoint={endpoint}"
        label = "Amazon SQS" if SQS else f"SQS (bench endpoint, {latency_ms:g} ms a call)"
        return _drain_vs_file(ctx, label, url, lambda: asyncio.run(_left()))


def sqs_vs_file(ctx: Context) -> list[Row]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # the endpoint takes any credentials
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    if SQS:
        return _sqs_cell(ctx, 0)
    return [row for latency in (0.0, 10.0) for row in _sqs_cell(ctx, latency)]
