"""A PostgreSQL cluster of the test's own (initdb in a temporary folder, its own port), so a
test can restart the ledger's server mid-run without touching the machine's shared one.

PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user. Outside
CI a machine without PostgreSQL's programs skips the test; with ``CI=true`` it fails it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_helpers import free_port, unavailable


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    def __init__(self, bin_dir: Path, base: Path) -> None:
        self._bin = bin_dir
        self.data = base / "data"
        self.port = free_port()
        self._user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(base, "postgres")
            self._user = ["runuser", "-u", "postgres", "--"]
        self._base = base

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._user, *args], check=True, capture_output=True, timeout=60, cwd=self._base
        )

    def init(self) -> None:
        self._run(
            str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._base} -c fsync=off "
            "-c max_connections=50"
        )
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                  "-l", str(self._base / "log"), "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL's programs (initdb, pg_ctl)")
        raise AssertionError("unreachable")
    base = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
    cluster = PgCluster(bin_dir, base)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
