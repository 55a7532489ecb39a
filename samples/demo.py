"""`make demo`: the main job on samples/ against the fake API, then the same run again; then a
queue run: the samples enqueued to a Redis stream twice, drained, and nothing sent twice.

The fake API runs in this process (a background thread, a real socket on 127.0.0.1); the
pipeline runs as the real command, in a subprocess, exactly as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("demo-out")
SOURCES = ["samples/ratings.csv", "samples/ratings.jsonl.gz", "samples/with-errors.csv"]
REDIS = os.environ.get("DEMO_REDIS", "redis://127.0.0.1:6379/0")


def main() -> int:
    os.chdir(ROOT)
    OUT.mkdir(exist_ok=True)
    for stale in OUT.glob("ledger.sqlite3*"):
        stale.unlink()
    env = dict(
        os.environ, TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID, TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN
    )
    with FakeServer() as server:
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            *SOURCES,
            "--config",
            "config/pipeline.toml",
            "--base-url",
            server.url,
            "--assistant-id",
            "aia_asst_demo",
            "--ledger",
            str(OUT / "ledger.sqlite3"),
        ]
        for label, report in (("first run", "first"), ("rerun", "rerun")):
            print(f"\n$ feedback-pipeline run {' '.join(SOURCES)} ...   # {label}", flush=True)
            done = subprocess.run(
                [*command, "--report", str(OUT / f"{report}.json")], cwd=ROOT, env=env, check=False
            )
            print(f"(exit code {done.returncode})")
            stats = server.state.stats()
            print(
                f"fake API has received {stats['posts_received']} POSTs, stored "
                f"{stats['stored']}, duplicates {stats['duplicates']}"
            )
        print("\n$ feedback-pipeline status", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pipeline", "status", "--ledger", str(OUT / "ledger.sqlite3")],
            cwd=ROOT,
            check=True,
        )
        stats = server.state.stats()
    # Exit 1 from each run is expected: samples/with-errors.csv holds 4 invalid rows on purpose.
    ok = stats["stored"] == stats["distinct"] and stats["duplicates"] == 0
    print("\ndemo " + ("ok: the rerun sent nothing, nothing was stored twice" if ok else "FAILED"))
    queue_ok = queue_demo(env)
    return 0 if ok and queue_ok else 1


def _shell(args: list[str]) -> str:
    return "$ feedback-pipeline " + " ".join(f"'{a}'" if "?" in a else a for a in args)


def queue_demo(env: dict[str, str]) -> bool:
    """Enqueue the samples twice to a fresh stream, drain it: each record reaches the API once.
    Skipped (one line) when no Redis answers: the demo needs only Python and the registries."""
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        print(f"\nqueue demo skipped: no Redis answers at {REDIS}")
        return True
    stream = f"demo-{os.getpid()}"
    to = f"{REDIS}?stream={stream}"
    ledger = str(OUT / "queue-ledger.sqlite3")
    for stale in OUT.glob("queue-ledger.sqlite3*"):
        stale.unlink()
    try:
        with FakeServer(FakeState()) as server:
            common = ["--config", "config/pipeline.toml", "--assistant-id", "aia_asst_demo"]
            steps = [["enqueue", *SOURCES[:2], *common, "--to", to]] * 2
            steps.append(
                [
                    "run",
                    f"{to}&group=demo",
                    "--drain",
                    *common,
                    "--base-url",
                    server.url,
                    "--ledger",
                    ledger,
                ]
            )
            for args in steps:
                print(f"\n{_shell(args)}", flush=True)
                done = subprocess.run(
                    [sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, check=False
                )
                print(f"(exit code {done.returncode})")
            stats: dict[str, int] = server.state.stats()
    finally:
        redis.Redis.from_url(REDIS).delete(stream, f"{stream}:dead")
    print(
        f"fake API has received {stats['posts_received']} POSTs, stored {stats['stored']}, "
        f"duplicates {stats['duplicates']}"
    )
    ok = bool(stats["posts_received"] == stats["stored"] == stats["distinct"] > 0)
    print("queue demo " + ("ok: enqueued twice, sent once" if ok else "FAILED"))
    return ok


if __name__ == "__main__":
    sys.exit(main())
