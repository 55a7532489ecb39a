"""Real brokers for tests: the machine's Redis on loopback, and Redis servers a test starts.

Outside CI a missing broker skips its tests; with ``CI=true`` it fails them (CI must run them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis

REDIS_URL = os.environ.get("FEEDBACK_PIPELINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unavailable(what: str) -> None:
    """A broker the tests need is not there: fail in CI, skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is not reachable, and CI=true: broker tests must run")
    pytest.skip(f"{what} is not reachable")


def require_redis() -> None:
    """Skip (or, in CI, fail) a test when the shared Redis does not answer."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        unavailable(f"Redis at {REDIS_URL}")


@dataclass
class Stream:
    """A uniquely named stream on the shared Redis; deleted (with its dead letters) after."""

    server: str
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}")
    group: str = "workers"

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.server)

    @property
    def dead(self) -> str:
        return f"{self.name}:dead"

    def url(self, consumer: str | None = None, **extra: str) -> str:
        query = f"stream={self.name}&group={self.group}"
        if consumer is not None:
            query += f"&consumer={consumer}"
        for key, value in extra.items():
            query += f"&{key}={value}"
        return f"{self.server}?{query}"

    def publish_url(self) -> str:
        return f"{self.server}?stream={self.name}"

    def add(self, *entries: dict[str, Any]) -> list[bytes]:
        with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(self.name, cast(Any, entry))
            ids: list[bytes] = pipe.execute()
        return ids

    def pending(self) -> int:
        summary: dict[str, Any] = self.redis.xpending(self.name, self.group)
        return int(summary["pending"])

    def entries(self, name: str | None = None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        found: Any = self.redis.xrange(name or self.name)
        return [(entry_id, fields) for entry_id, fields in found]

    def dead_letters(self) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in self.entries(self.dead)]

    def delete(self) -> None:
        self.redis.delete(self.name, self.dead)
        self.redis.close()


@pytest.fixture
def stream() -> Iterator[Stream]:
    require_redis()
    made = Stream(REDIS_URL)
    try:
        yield made
    finally:
        made.delete()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of the test's own, on a free port, persisting to an append-only file in
    a temporary directory: killed with SIGKILL and started again, it still has its streams
    (Redis writes the AOF before it answers; the kernel keeps what a killed process wrote)."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.dir = directory
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server (the program)")
        command = [
            str(binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(self.dir),
        ]
        if self.password:
            command += ["--requirepass", self.password]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A second Redis (with a password) that the test may kill and start again."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, password="s3cr3t-Pa55")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def scope() -> Iterator[str]:
    """A ``--rate-scope`` of its own on the shared Redis (``?key=``); its keys deleted after."""
    from pipeline.flow.shared import KEY_PREFIX

    require_redis()
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield f"{REDIS_URL}?key={name}"
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"{KEY_PREFIX}{{{name}}}", f"{KEY_PREFIX}{{{name}}}:pause")
    client.close()
