"""``stop``: ask every worker of a shared ledger (or of one job) to end gracefully.

The request is a mark on each live run's row in the ledger; each worker reads it with its
next heartbeat (every second) and ends as a following run ends on SIGTERM: it takes no new
record, lets the requests on the wire finish (``--timeout`` at most), and leaves what it had
not sent on the queue (see :mod:`pipeline.engine.fleet`).
"""

from __future__ import annotations

import asyncio
import time

import click

from pipeline.cli import fleet_view as view_
from pipeline.cli.common import EXIT_PROBLEMS, config_option, epilog, guarded, ledger_option
from pipeline.cli.failures import reading
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ledger.fleet import FleetLedger, FleetRun

POLL_S = 0.5

_EXITS = (
    "\b\nExit codes: 0 asked (with --wait: every worker asked has ended), 1 --wait ran out\n"
    "first, 2 no ledger there, not a shared ledger, or a bad setting, 3 the ledger is unusable."
)


@click.command(epilog=epilog("feedback-pipeline stop --ledger postgresql://... --wait 60", _EXITS))
@config_option
@ledger_option
@click.option("--job", metavar="NAME", help="Only the workers of this --job.")
@click.option(
    "--reason", default="asked by `feedback-pipeline stop`", show_default=True, help="Logged."
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=86400),
    metavar="S",
    help="Wait up to S seconds for every worker asked to end; exit 1 if one has not.",
)
@guarded
def stop(
    config_file: str | None, ledger: str | None, job: str | None, reason: str, wait: float | None
) -> None:
    """Ask every live worker of the shared ledger to end gracefully (each within a heartbeat,
    1 s, plus its requests on the wire, --timeout at most)."""
    settings = Settings.load(config_file, ledger=ledger)
    asked, left = asyncio.run(_stop(settings.ledger, job, reason, wait))
    if not asked:
        click.echo("no worker is alive" + (f" in job {job}" if job else ""))
        return
    for run in asked:
        click.echo(f"asked to stop: run {run.run_id} {run.host}:{run.pid}")
    if wait is None:
        return
    if left:
        names = ", ".join(f"{r.run_id} {r.host}:{r.pid}" for r in left)
        click.echo(f"still running after {wait:g} s: {names}")
        raise SystemExit(EXIT_PROBLEMS)
    click.echo(f"all {len(asked)} workers ended")


async def _stop(
    url: str, job: str | None, reason: str, wait: float | None
) -> tuple[list[FleetRun], list[FleetRun]]:
    async with reading(url, "stop") as ledger:
        if not isinstance(ledger, FleetLedger):
            holder = await ledger.holder()
            raise ConfigError(
                "stop: an SQLite ledger has one run at a time"
                + (f" ({holder}): send it SIGTERM" if holder else " and none holds it now")
            )
        asked = await ledger.request_stop(reason, job)
        left = asked
        deadline = time.monotonic() + (wait or 0.0)
        while wait is not None and left:
            view = await ledger.fleet(job, max(100, len(asked) * 4))
            states = {r.run_id: view_.judge(r, view.now, 86400)[0] for r in view.runs}
            left = [r for r in asked if states.get(r.run_id, "ended") in view_.ALIVE]
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
    return asked, left
