"""`make demo`: the main job on samples/ against the fake API, then the same run again.

The fake API runs in this process (a background thread, a real socket on 127.0.0.1); the
pipeline runs as the real command, in a subprocess, exactly as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("demo-out")
SOURCES = ["samples/ratings.csv", "samples/ratings.jsonl.gz", "samples/with-errors.csv"]


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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
