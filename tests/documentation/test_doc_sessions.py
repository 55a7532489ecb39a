"""The tutorial's and the how-to guides' shell sessions run as written, against the fake API
(and the brokers' pages against the real Redis, RabbitMQ and NATS, and the tests' own moto
SQS server): documentation that cannot drift.

Only what a reader's machine has differently is replaced: the fake API's port (8080 in the
pages, a free one here), the local SQS endpoint (the tests' moto server), and the names of
streams and queues (each run's own, deleted after).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from amqp_helpers import Queue, require_rabbitmq
from nats_helpers import JsStream, require_nats
from paths import ROOT
from redis_helpers import REDIS_URL, free_port, require_redis, unavailable
from sqs_helpers import endpoint

import pipeline
from documentation.blocks import Command, fences, matches, run_session, sessions

DOCS = ROOT / "docs"
#: The pages a reader follows step by step: every shell block there runs, or says why not.
GUIDES = sorted(
    [DOCS / "tutorial.md", *(DOCS / "how-to").glob("*.md"), *(DOCS / "brokers").glob("*.md")]
)
#: ... and the README's quick start.
RUNNABLE = [p for p in [*GUIDES, ROOT / "README.md"] if sessions(p.read_text(encoding="utf-8"))]
SHELLS = {"sh", "bash", "shell", "console"}


def _name(page: Path) -> str:
    return str(page.relative_to(DOCS if page.is_relative_to(DOCS) else ROOT))


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """Stream and queue names of this run's own; deleted afterwards."""
    own = {
        "stream=feedback": f"stream=docs-{uuid.uuid4().hex[:10]}",
        "queue=feedback": f"queue=docs-{uuid.uuid4().hex[:10]}",
        "sqs://feedback?": f"sqs://docs-{uuid.uuid4().hex[:10]}?",
    }
    yield own
    stream = own["stream=feedback"].split("=", 1)[1]
    queue = own["queue=feedback"].split("=", 1)[1]
    # Nothing was made where a broker is not up: no cleaning to do there.
    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(stream, f"{stream}:dead")
        client.close()
    with contextlib.suppress(Exception):
        Queue(queue).delete()
    with contextlib.suppress(Exception):  # NATS: the stream and its dead letters' stream
        JsStream(name=stream).delete()
    # SQS: the queues live on the test process's own moto server, gone when it ends.


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_PIPELINE_", "TWILIO_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["COLUMNS"] = "200"
    return env


def _replace(text: str, port: int, names: dict[str, str]) -> str:
    text = text.replace("8080", str(port))
    for old, new in names.items():
        text = text.replace(old, new)
    return text.replace("redis://127.0.0.1:6379/0", REDIS_URL)


@pytest.mark.parametrize("page", RUNNABLE, ids=_name)
def test_the_page_runs_as_written(page: Path, tmp_path: Path, names: dict[str, str]) -> None:
    text = page.read_text(encoding="utf-8")
    if "redis://" in text:
        require_redis()
    if "amqp://" in text:
        require_rabbitmq()
    if "nats://" in text:
        require_nats()
    if "sqs://" in text:  # the pages' local SQS endpoint is the tests' own moto server
        text = text.replace("http://127.0.0.1:5000", endpoint())
    if "promtool" in text and shutil.which("promtool") is None:
        unavailable("promtool (Debian's prometheus package)")
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    shutil.copytree(ROOT / "config", tmp_path / "config")
    port = free_port()
    commands = [
        Command(_replace(c.line, port, names), [_replace(e, port, names) for e in c.expected])
        for c in sessions(text)
    ]

    ran = run_session(commands, tmp_path, _env(), timeout=240, port=port)

    for each in ran:
        shown = f"{_name(page)}: $ {each.command.line}\n--- printed:\n{each.output}"
        assert each.code == 0, shown
        for line in each.command.expected:
            assert matches(line, each.output), f"{shown}\n--- not printed: {line}"


@pytest.mark.parametrize("page", GUIDES, ids=_name)
def test_every_shell_block_runs_or_says_why_not(page: Path) -> None:
    for language, info, body in fences(page.read_text(encoding="utf-8")):
        if language in SHELLS and language != "console":
            by = re.search(r'title="run by (tests/\S+\.py)', info)
            if by:  # a test of its own runs it (it needs hosts replaced, files made)
                assert _name(page) in (ROOT / by.group(1)).read_text(encoding="utf-8")
                continue
            assert 'title="not run: ' in info, f"{_name(page)}: a shell block not run:\n{body}"


def _python_blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for n, (language, _, body) in enumerate(fences(page.read_text(encoding="utf-8"))):
            if language in ("python", "py"):
                found.append((f"{_name(page)}#{n}", body))
    return found


@pytest.mark.parametrize(("where", "body"), _python_blocks(), ids=lambda x: str(x)[:40])
def test_python_examples_compile_and_use_the_api_as_it_is(where: str, body: str) -> None:
    tree = ast.parse(body, filename=where)
    compile(tree, where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            for alias in node.names:
                assert alias.name in pipeline.__all__, f"{where}: pipeline has no {alias.name}"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "pipeline"
        ):
            assert node.attr in pipeline.__all__, f"{where}: pipeline has no {node.attr}"


def test_the_tutorial_is_among_the_pages_run() -> None:
    assert DOCS / "tutorial.md" in RUNNABLE
    assert len(sessions((DOCS / "tutorial.md").read_text(encoding="utf-8"))) >= 8
