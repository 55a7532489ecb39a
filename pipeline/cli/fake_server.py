"""``fake-server``: the fake Feedback API, for demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pipeline.cli.common import (
    epilog,
    guarded,
)
from pipeline.errors import (
    ConfigError,
)


@click.command(
    "fake-server",
    epilog=epilog(
        "feedback-pipeline fake-server --port 8080 --fail-rate 0.05",
        "\b\nExit codes: 0 stopped, 2 bad option or the port cannot be listened on.",
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--assistant",
    "assistants",
    multiple=True,
    metavar="ID",
    help="An assistant that exists (repeatable); the others are not found (404). Default: any.",
)
@click.option("--fail-rate", default=0.0, type=float, help="Share of POSTs answered 503.")
@click.option("--throttle-rps", type=float, help="Token-bucket limit: 429 + Retry-After beyond.")
@click.option("--latency-ms", default=0.0, type=float, help="Added to every answer.")
@click.option(
    "--reset-rate",
    default=0.0,
    type=float,
    help="Share of POSTs stored and then answered with a connection reset.",
)
@click.option(
    "--slow-rate", default=0.0, type=float, help="Share of POSTs stored, then answered late."
)
@click.option("--slow-ms", default=2000.0, type=float, help="How late --slow-rate answers.")
@click.option("--max-inflight", type=int, help="Requests in flight beyond this get 429 (20429).")
@click.option("--shed-above", type=int, help="Requests in flight beyond this get 503 at once.")
@click.option(
    "--stall-above", type=int, help="Requests beyond this many at work are answered late."
)
@click.option("--stall-ms", default=2000.0, type=float, help="How late --stall-above answers.")
@click.option("--rate-limit", type=float, help="Requests per second beyond which POSTs get 429.")
@click.option("--burst-ms", default=1000.0, type=float, help="Token bucket burst, in ms of rate.")
@click.option("--window", type=click.Choice(["bucket", "fixed", "sliding"]), default="bucket")
@click.option("--retry-after", type=click.Choice(["present", "zero", "absent"]), default="present")
@click.option("--latency-jitter-ms", default=0.0, type=float, help="Random extra latency, 0..N.")
@click.option(
    "--hostile",
    metavar="MODE|JSON",
    help="A misbehaviour: portal, unconfirmed, redirect, repeat_cursor, endless_cursor, "
    "relative_cursor, drip, huge, store_late; or a JSON object with its parameters.",
)
@guarded
def fake_server(host: str, port: int, assistants: tuple[str, ...], **options: Any) -> None:
    """Run the fake Feedback API (for demos, tests and benchmarks). Stop it with Ctrl-C or
    SIGTERM (exit 0)."""
    from pipeline.fake import FakeState, Faults, Limits, serve

    limit_names = (
        *("max_inflight", "rate_limit", "burst_ms", "window", "retry_after"),
        *("shed_above", "stall_above", "stall_ms", "latency_jitter_ms"),
    )
    limits = {name: options.pop(name) for name in limit_names}
    try:
        known = set(assistants) if assistants else None
        state = FakeState(faults=Faults(**options), limits=Limits(**limits), known_assistants=known)
    except ValueError as exc:
        raise ConfigError(f"fake-server: {exc}") from None
    try:
        asyncio.run(serve(state, host, port))
    except OSError as exc:
        raise ConfigError(f"fake-server: cannot listen on {host}:{port}: {exc.strerror}") from None
