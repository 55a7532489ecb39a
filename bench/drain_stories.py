"""``python -m bench.drain_stories [--records N] [--broker redis|rabbitmq]``: issue 21's
adversarial ``--drain`` stories at their own sizes, on a real Redis or RabbitMQ, a PostgreSQL
ledger and a fake API process, printing one line of figures per story: records, kills,
duplicates (the API's extra copies), never sent (records the API does not hold) and the
longest time to end (from the moment the run could end: the kill, or the start). Needs Redis,
RabbitMQ and PostgreSQL on loopback (``BENCH_REDIS``, ``BENCH_AMQP``, ``BENCH_POSTGRES``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aio_pika
import asyncpg
import redis

from bench.procs import BenchError, child_env
from bench.server import ServerProcess

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
ASSISTANT = "aia_asst_bench"
LEASE, CLAIM_IDLE, RECONCILE_EVERY, SETTLE, TIMEOUT = 5.0, 2.0, 1.0, 0.5, 5.0
BOUND = LEASE + TIMEOUT + SETTLE + RECONCILE_EVERY + CLAIM_IDLE
DEADLINE = 600.0


@dataclass
class Queue:
    broker: str
    name: str

    def url(self, consumer: str) -> str:
        if self.broker == "redis":
            return f"{REDIS}?stream={self.name}&group=workers&consumer={consumer}"
        return f"{AMQP}?queue={self.name}"

    def publish_raw(self, bodies: Sequence[bytes], headers: dict[str, str] | None = None) -> None:
        if self.broker == "redis":
            client = redis.Redis.from_url(REDIS)
            for body in bodies:
                client.xadd(self.name, {"body": body})
            client.close()
            return

        async def publish() -> None:
            connection = await aio_pika.connect(AMQP)
            async with connection:
                channel = await connection.channel()
                await channel.declare_queue(self.name, durable=True)
                for body in bodies:
                    message = aio_pika.Message(
                        body, headers=cast(Any, headers), message_id=uuid.uuid4().hex
                    )
                    await channel.default_exchange.publish(message, routing_key=self.name)

        asyncio.run(publish())

    def delete(self) -> None:
        if self.broker == "redis":
            client = redis.Redis.from_url(REDIS)
            client.delete(self.name, f"{self.name}:dead")
            client.close()
            return

        async def drop() -> None:
            connection = await aio_pika.connect(AMQP)
            async with connection:
                channel = await connection.channel()
                for name in (self.name, f"{self.name}.dead"):
                    await channel.queue_delete(name)

        asyncio.run(drop())


@dataclass
class Story:
    tmp: Path
    broker: str
    faults: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.queue = Queue(self.broker, f"bench-{uuid.uuid4().hex[:10]}")
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.ledger = f"{POSTGRES}?schema={self.schema}&lease={LEASE}"
        self.server = ServerProcess(self.tmp, extra=self.faults).start()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.tail = 0.0

    def enqueue(self, rows: int, times: int = 1) -> None:
        path = self.tmp / f"{self.queue.name}.csv"
        with path.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["session_id", "score", "text"])
            out.writerows([f"s{i}", f"{i % 10 / 10:g}", f"text {i}"] for i in range(rows))
        for _ in range(times):
            argv = [sys.executable, "-m", "pipeline", "enqueue", str(path), "--to"]
            argv += [self.queue.url("x"), "--assistant-id", ASSISTANT]
            subprocess.run(argv, env=child_env(), check=True, capture_output=True)

    def start(
        self, name: str, *extra: str, token: str | None = None, batch: int | None = None
    ) -> None:
        argv = [sys.executable, "-m", "pipeline", "run", self.queue.url(name), "--drain"]
        argv += ["--ledger", self.ledger, "--base-url", self.server.url, "--no-progress"]
        argv += ["--claim-idle", str(CLAIM_IDLE), "--reconcile-every", str(RECONCILE_EVERY)]
        argv += ["--assistant-id", ASSISTANT, "--concurrency", "8", "--max-invalid", "1000"]
        argv += ["--report", str(self.tmp / f"{self.queue.name}-{name}.json"), "--log-every", "5"]
        argv += extra
        env = {"FEEDBACK_PIPELINE_SETTLE": str(SETTLE), "FEEDBACK_PIPELINE_TIMEOUT": str(TIMEOUT)}
        if token is not None:
            env["TWILIO_AUTH_TOKEN"] = token
        if batch is not None:
            env["FEEDBACK_PIPELINE_BATCH_SIZE"] = str(batch)
        with (self.tmp / f"{self.queue.name}-{name}.out").open("wb") as out:
            self.procs[name] = subprocess.Popen(
                argv, env=child_env(env), stdout=out, stderr=subprocess.STDOUT
            )

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stored(self) -> int:
        return int(self.server.stats()["distinct"])

    def kill(self, name: str) -> float:
        self.procs.pop(name).send_signal(signal.SIGKILL)
        return time.monotonic()

    def finish(self, since: float) -> tuple[list[int], float]:
        """Exit codes, and seconds from ``since`` to the last end (-9: killed at the deadline).
        Meanwhile :attr:`tail` becomes the seconds from the API's last store to that end:
        how long the drain took to end once nothing was left to send."""
        deadline, last, stored = since + DEADLINE, time.monotonic(), -1
        while any(proc.poll() is None for proc in self.procs.values()):
            if time.monotonic() > deadline:
                for proc in self.procs.values():
                    proc.kill()
                break
            now = self.stored()
            if now != stored:
                stored, last = now, time.monotonic()
            time.sleep(0.2)
        codes = [proc.wait() for proc in self.procs.values()]
        self.procs.clear()
        self.tail = time.monotonic() - last
        return codes, time.monotonic() - since

    def figures(self, story: str, records: int, kills: int, codes: list[int], took: float) -> None:
        stats = self.server.stats()
        line = {
            "broker": self.broker, "story": story, "records": records, "kills": kills,
            "duplicates": stats["duplicates"], "never_sent": records - stats["distinct"],
            "exit_codes": codes, "longest_to_end_s": round(took, 1),
            "ended_after_last_store_s": round(self.tail, 1), "bound_s": BOUND,
        }  # fmt: skip
        print(json.dumps(line), flush=True)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        self.server.stop()
        self.queue.delete()
        asyncio.run(_drop(self.schema))


async def _drop(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def killed_after_the_others(tmp: Path, broker: str, rows: int) -> None:
    """One of three workers (rate-limited, so it holds its window) killed once the others are
    done with the rest: its messages must go to a worker still there."""
    story = Story(tmp, broker)
    try:
        story.enqueue(rows)
        # Small batches and one request every 5 s: it holds a dozen records while the others
        # send the rest.
        story.start("victim", "--rate", "0.2", "--concurrency", "2", batch=10)
        for name in ("w1", "w2"):
            story.start(name)
        # Killed once the others ended, or (when they wait for it, as they must) once they
        # have sent the rest: nothing but its own records is left by then.
        others = [story.procs["w1"], story.procs["w2"]]
        story.wait_until(lambda: story.stored() >= rows - 30, "the rest stored")
        ready = time.monotonic() + 5
        story.wait_until(
            lambda: time.monotonic() > ready or all(p.poll() is not None for p in others),
            "the others to end",
        )
        since = story.kill("victim")
        codes, took = story.finish(since)
        story.figures("killed after the others", rows, 1, codes, took)
    finally:
        story.close()


def faults_and_a_kill(tmp: Path, broker: str, rows: int) -> None:
    """Three workers, 3% 503 and 2% resets, one killed mid-run."""
    story = Story(tmp, broker, ["--fail-rate", "0.03", "--reset-rate", "0.02"])
    try:
        story.enqueue(rows)
        for name in ("w0", "w1", "w2"):
            story.start(name)
        story.wait_until(lambda: story.stored() >= rows // 3, "a third stored")
        since = story.kill("w1")
        codes, took = story.finish(since)
        story.figures("503 + resets, one killed", rows, 1, codes, took)
    finally:
        story.close()


def enqueued_twice(tmp: Path, broker: str, rows: int) -> None:
    """The same file enqueued twice, 5% resets, two workers."""
    story = Story(tmp, broker, ["--reset-rate", "0.05"])
    try:
        story.enqueue(rows, times=2)
        since = time.monotonic()
        for name in ("w0", "w1"):
            story.start(name)
        codes, took = story.finish(since)
        story.figures("file enqueued twice, resets", rows, 0, codes, took)
    finally:
        story.close()


def poison(tmp: Path, broker: str, rows: int) -> None:
    """40 valid records among poison (nested 100,000 deep, a key twice, headers or fields too
    big for a whole dead-letter copy), three workers."""
    story = Story(tmp, broker)
    try:
        story.enqueue(20)
        story.queue.publish_raw([b"[" * 100_000, b'{"session_id": "d", "score": 1, "score": 0}'])
        if broker == "rabbitmq":
            story.queue.publish_raw([b"not json"], headers={"x-big": "h" * 130_000})
        else:
            client = redis.Redis.from_url(REDIS)
            client.xadd(story.queue.name, {f"f{i}": "x" for i in range(20_000)})
            client.close()
        path = tmp / f"{story.queue.name}.csv"
        path.write_text("session_id,score\n" + "".join(f"p{i},0.5\n" for i in range(20)))
        argv = [sys.executable, "-m", "pipeline", "enqueue", str(path), "--to"]
        argv += [story.queue.url("x"), "--assistant-id", ASSISTANT]
        subprocess.run(argv, env=child_env(), check=True, capture_output=True)
        since = time.monotonic()
        for name in ("w0", "w1", "w2"):
            story.start(name)
        codes, took = story.finish(since)
        story.figures("poison", 40, 0, codes, took)
    finally:
        story.close()


def wrong_token(tmp: Path, broker: str, rows: int) -> None:
    """A wrong token, then the right one: every record sent by the second run."""
    story = Story(tmp, broker)
    try:
        story.enqueue(rows)
        story.start("wrong", token="wrong-token")
        first, _ = story.finish(time.monotonic())
        since = time.monotonic()
        story.start("right")
        codes, took = story.finish(since)
        story.figures("401, then the right token", rows, 0, first + codes, took)
    finally:
        story.close()


#: Each story, and its size (None: ``--records``).
STORIES: dict[str, tuple[Callable[[Path, str, int], None], int | None]] = {
    "killed-after": (killed_after_the_others, None),
    "faults-kill": (faults_and_a_kill, None),
    "twice": (enqueued_twice, 750),
    "poison": (poison, 40),
    "401": (wrong_token, 300),
}


def main(argv: list[str] | None = None) -> int:
    global DEADLINE
    parser = argparse.ArgumentParser(prog="python -m bench.drain_stories", description=__doc__)
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], action="append")
    parser.add_argument("--story", choices=list(STORIES), action="append")
    parser.add_argument(
        "--deadline", type=float, default=DEADLINE, help="seconds before a run counts as hung"
    )
    args = parser.parse_args(argv)
    DEADLINE = args.deadline
    with tempfile.TemporaryDirectory() as tmp:
        for broker in args.broker or ["redis", "rabbitmq"]:
            for name, (story, size) in STORIES.items():
                if not args.story or name in args.story:
                    story(Path(tmp), broker, size or args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
