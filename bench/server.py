"""The fake Feedback API in a process of its own: start, wait until it answers, reset, stop."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.procs import CREDENTIALS, BenchError, child_env

START_DEADLINE = 20.0
STOP_GRACE = 5.0


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m pipeline fake-server`` on 127.0.0.1; a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        latency_ms: float = 0.0,
        throttle_rps: float | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._argv = [sys.executable, "-m", "pipeline", "fake-server", "--port", str(self.port)]
        if latency_ms:
            self._argv += ["--latency-ms", str(latency_ms)]
        if throttle_rps is not None:
            self._argv += ["--throttle-rps", str(throttle_rps)]
        self._argv += extra
        self._log = workdir / f"fake-server-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process (tests pause it with SIGSTOP)."""
        if self._proc is None:
            raise BenchError("fake server not started")
        return self._proc.pid

    def start(self) -> ServerProcess:
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, env=child_env()
            )
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BenchError(f"fake server exited {self._proc.returncode}: {self._log_tail()}")
            with contextlib.suppress(OSError):
                self.stats()
                return self
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"fake server not answering after {START_DEADLINE:.0f} s")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self._log.read_text(errors="replace")[-400:]
        return ""

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            data = json.loads(resp.read())
        if not isinstance(data, dict):
            raise BenchError(f"fake server {path}: not a JSON object")
        return data

    def stats(self) -> dict[str, Any]:
        """posts_received, stored, duplicates and the count of each response status."""
        return self._call("GET", "/_fake/stats")

    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    def responses(self, status: int) -> int:
        counts = self.stats().get("responses", {})
        return int(counts.get(str(status), 0)) if isinstance(counts, dict) else 0

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (user + system), from /proc; 0.0 where unavailable."""
        if self._proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_GRACE)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def feedback_dates(server: ServerProcess, assistant_id: str) -> list[str]:
    """``date_created`` of every stored feedback (second resolution), via the List endpoint."""
    dates: list[str] = []
    url: str | None = f"{server.url}/v1/Assistants/{assistant_id}/Feedbacks?PageSize=1000"
    token = base64.b64encode(":".join(CREDENTIALS).encode()).decode()
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                page = json.loads(resp.read())
        except urllib.error.URLError as exc:
            raise BenchError(f"listing feedbacks failed: {exc}") from exc
        dates += [str(f.get("date_created")) for f in page.get("feedbacks", [])]
        url = page.get("meta", {}).get("next_page_url")
    return dates
