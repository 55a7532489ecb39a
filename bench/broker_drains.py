"""Scenario 10b: the same records from NATS JetStream and from Amazon SQS (``run --drain``)
against the same records from a CSV file, each ratio measured in the same run.

As scenario 10 (:mod:`bench.queues`) does for Redis: half of ``run_rows`` records (50,000 at
full size) are enqueued with the real ``enqueue`` command (its time shown, not judged), then
drained into the same fast fake server with no rate limit; the ratio is the broker's
records/s over the file's. NATS: the server on loopback (``BENCH_NATS``); its stream is
deleted afterwards. SQS: moto's server, started here on a free port, at 1/50 of the size
(1,000 messages at full size): moto keeps a queue's messages in a Python list that every
send, receive and delete scans, so its cost per call grows with the queue, and 50,000 messages
would take hours. Its figure measures moto more than the pipeline. ``BENCH_SQS=URL`` points at
another endpoint, at full size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
SQS = os.environ.get("BENCH_SQS")  # an endpoint; unset: moto's server, started here


def _drain_vs_file(
    ctx: Context, label: str, url: str, left: Callable[[], int], *, share: int = 1
) -> list[Row]:
    rows = max(1, ctx.sizes.run_rows // 2 // share)
    concurrency = ctx.sizes.concurrency
    path = ctx.files.csv(rows)
    enqueue = [sys.executable, "-m", "pipeline", "enqueue", str(path), "--to", url]
    published = run_child([*enqueue, "--assistant-id", ASSISTANT_ID])
    if left() != rows:
        raise BenchError(f"{label}: enqueue published {left()} of {rows}")
    with ServerProcess(ctx.workdir) as server:
        server.reset()
        from_file = pipeline_run(
            path, fresh_ledger(ctx, "file"), base_url=server.url, concurrency=concurrency
        )
        check_exactly_once(server, from_file, rows)
        server.reset()
        drained: Child = _run_stream(url, fresh_ledger(ctx, label), server, concurrency)
        check_exactly_once(server, drained, rows)
    if left():
        raise BenchError(f"{label}: {left()} messages left after the drain")
    file_rate = count(from_file, "sent") / duration(from_file)
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
                "file_cpu_s": round(from_file.cpu_s, 2),
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
def _sqs_endpoint(workdir: Path) -> Iterator[str]:
    if SQS:
        yield SQS
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (workdir / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError("moto's SQS server did not start (is moto[server] installed?)")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def sqs_vs_file(ctx: Context) -> list[Row]:
    from aiobotocore.session import get_session

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # moto takes any credentials
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    with _sqs_endpoint(ctx.workdir) as endpoint:

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
        label, share = ("Amazon SQS", 1) if SQS else ("Amazon SQS (moto)", 50)
        return _drain_vs_file(ctx, label, url, lambda: asyncio.run(_left()), share=share)
