"""The "Scale out" how-to's shell block (docs/how-to/scale-out.md), run as written: only the
hosts (`q`, `db`) and the names (stream, ledger schema) are replaced by the test's own, and the
API is the fake one (``FEEDBACK_PIPELINE_BASE_URL``). A block that does not work as pasted
fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import assert_exactly_once, make_rows, write_csv
from paths import ROOT
from pg_helpers import PgSchema, pg_schema
from redis_helpers import REDIS_URL, Stream, stream

from pipeline.fake import FakeServer, FakeState, Faults

__all__ = ["pg_schema", "stream"]  # fixtures, used by name
PAGE = ROOT / "docs" / "how-to" / "scale-out.md"
OK = "aia_asst_test"


def scale_out_block() -> str:
    text = PAGE.read_text()
    section = text[text.index("**Fanning a backfill out.**") :]
    found = re.search(r"```sh[^\n]*\n(.*?)```", section, re.S)
    assert found, "no shell block in the how-to's fanning-out section"
    return found.group(1)


def test_the_scale_out_block_runs_as_written(
    clean_env: None, stream: Stream, pg_schema: PgSchema, tmp_path: Path
) -> None:
    block = scale_out_block()
    assert "%H" not in block  # systemd's specifier: a shell leaves it as it is
    redis_host = REDIS_URL.split("://", 1)[1].split("/", 1)[0]
    script = (
        block.replace("q:6379", redis_host)
        .replace("stream=backfill", f"stream={stream.name}")
        .replace("postgresql://feedback@db:5432/feedback", pg_schema.url())
    )
    rows = make_rows(150, assistant=OK)
    write_csv(tmp_path / "ratings-1.csv", rows[:80])
    write_csv(tmp_path / "ratings-2.csv", rows[80:])
    with FakeServer(FakeState(faults=Faults(seed=5), known_assistants=[OK])) as api:
        env = {
            **os.environ,
            "FEEDBACK_PIPELINE_BASE_URL": api.url,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert_exactly_once(api, rows)
    hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert f"consumer {hostname}-1" in done.stdout + done.stderr  # the shell named it
    assert "complete: every record settled" in done.stdout
    assert stream.pending() == 0
