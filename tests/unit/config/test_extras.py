"""A broker's or the shared ledger's client library is an extra: ``import pipeline`` loads
none of them, and a scheme whose library is missing is one line naming the install command
(exit 2, no traceback). A missing library is simulated with ``sys.modules[name] = None``,
which makes every import of it fail as if it were not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT

from pipeline.engine.control import RunControl
from pipeline.errors import MissingExtraError
from pipeline.flow.budget import shared_rate

SAMPLE = str(ROOT / "samples" / "ratings.csv")
CLIENT_LIBRARIES = ("redis", "aio_pika", "aiormq", "asyncpg", "nats", "aiobotocore", "botocore")


def _without(missing: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh interpreter in which ``missing`` cannot be imported."""
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None\n"
        "from pipeline.cli import main\n"
        f"sys.argv = ['feedback-pipeline', *{list(args)!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_import_pipeline_loads_no_client_library() -> None:
    code = (
        "import sys, pipeline, pipeline.cli\n"
        f"print(sorted(name for name in {CLIENT_LIBRARIES!r} if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    ("missing", "extra", "args"),
    [
        ("redis", "redis", ("enqueue", SAMPLE, "--to", "redis://127.0.0.1:6379/0?stream=x")),
        ("aio_pika", "amqp", ("enqueue", SAMPLE, "--to", "amqp://guest:guest@127.0.0.1/?queue=x")),
        ("asyncpg", "postgres", ("status", "--ledger", "postgresql://postgres@127.0.0.1/x")),
        ("nats", "nats", ("enqueue", SAMPLE, "--to", "nats://127.0.0.1:4222?stream=x")),
        ("aiobotocore", "sqs", ("enqueue", SAMPLE, "--to", "sqs://x?region=us-east-1")),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_install_command(
    missing: str, extra: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    done = _without(missing, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pip install 'feedback-pipeline[{extra}]'" in lines[0]
    assert "Traceback" not in done.stderr


async def test_a_rate_scope_without_the_redis_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "pipeline.flow.shared", raising=False)
    scope = shared_rate(
        "redis://127.0.0.1:6379/0",
        "AC1",
        rate=1.0,
        max_outage=1.0,
        control=RunControl(),
        notice=lambda _: None,
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'feedback-pipeline\[redis\]'"):
        async with scope:
            pass
