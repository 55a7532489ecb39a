"""``retire``: close failed or invalid records that have been dealt with.

Dealt with means fixed and sent under another key (or from another place), or given up on
purpose. A retired record leaves the ``failed``/``invalid`` counts (``status``), ``replay`` and
``failures``, and keeps what it was and why (``status`` counts it as ``retired``). Should the
same record come in again, it is handled as a new one: validated, and sent if valid.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import click

from pipeline.cli.common import (
    EXIT_USAGE,
    config_option,
    epilog,
    fail,
    guarded,
    ledger_option,
    require_ledger,
)
from pipeline.config import Settings
from pipeline.ledger import open_ledger
from pipeline.ledger.base import LedgerRecord, RecordFilter

RETIRABLE = ("failed", "invalid")
#: Records printed one line each, at most (all of them are retired).
SHOWN = 20
#: Exact locations per retire (one SQL ``IN``); a prefix selects more.
MAX_LOCATIONS = 500

_EXITS = (
    "\b\nExit codes: 0 done (also when nothing matched), 2 usage error (nothing selected),\n"
    "3 the ledger is in use by a run or unusable."
)


@click.command(
    epilog=epilog(
        'feedback-pipeline retire --state invalid --location-prefix old.csv: --reason "fixed in '
        'fix.csv" --dry-run',
        _EXITS,
    )
)
@config_option
@ledger_option
@click.option("--state", "states", multiple=True, type=click.Choice(RETIRABLE), help="Repeatable.")
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="K",
    help="A failed record's key (the key column of `failures`); repeatable.",
)
@click.option(
    "--location",
    "locations",
    multiple=True,
    metavar="L",
    help="A record's exact location (file.csv:12, as `failures` shows it); repeatable.",
)
@click.option(
    "--location-prefix", metavar="P", help="Records read from a place starting so (a file:)."
)
@click.option("--all", "everything", is_flag=True, help="Every failed and invalid record.")
@click.option("--reason", required=True, metavar="TEXT", help="Why (kept in the ledger).")
@click.option("--dry-run", is_flag=True, help="Show what would be retired; change nothing.")
@guarded
def retire(
    config_file: str | None,
    ledger: str | None,
    states: tuple[str, ...],
    keys: tuple[str, ...],
    locations: tuple[str, ...],
    location_prefix: str | None,
    everything: bool,
    reason: str,
    dry_run: bool,
) -> None:
    """Retire failed or invalid records that have been dealt with.

    Conditions combine (a record must meet all); one of --state, --key, --location,
    --location-prefix or --all is required, so that nothing is retired by accident. Prints
    what it retires.
    """
    if not (states or keys or locations or location_prefix or everything):
        fail(
            "retire: say what to retire: --state, --key, --location, --location-prefix or --all",
            EXIT_USAGE,
        )
    if len(locations) > MAX_LOCATIONS:
        fail(f"retire: at most {MAX_LOCATIONS} --location (use --location-prefix)", EXIT_USAGE)
    if not reason.strip():
        fail("retire: --reason must not be empty", EXIT_USAGE)
    settings = Settings.load(config_file, ledger=ledger)
    require_ledger(settings.ledger)
    which = RecordFilter(states or RETIRABLE, keys, location_prefix, locations=locations)
    shown, count = asyncio.run(_retire(settings.ledger, which, reason, dry_run=dry_run))
    for record in shown:
        click.echo(f"{record.location or record.key}: {record.state}: {record.reason}")
    if count > len(shown):
        click.echo(f"... and {count - len(shown)} more")
    verb = "would retire" if dry_run else "retired"
    click.echo(f"retire: {verb} {count} records ({reason})")


async def _retire(
    url: str, which: RecordFilter, reason: str, *, dry_run: bool
) -> tuple[list[LedgerRecord], int]:
    # A writer holds the ledger's lock: no run can change these records meanwhile.
    ledger = await open_ledger(url, uuid.uuid4().hex[:16], command="retire", read_only=dry_run)
    summary: dict[str, object] = {"command": "retire", "reason": reason, "exit_code": 0}
    try:
        shown: list[LedgerRecord] = []
        count = 0
        async for batch in ledger.records(which):
            count += len(batch)
            shown.extend(batch[: max(0, SHOWN - len(shown))])
        if not dry_run:
            summary["retired"] = await ledger.retire(which, reason)
            count = int(summary["retired"])  # type: ignore[call-overload]
        return shown, count
    finally:
        await ledger.close(json.dumps(summary))
