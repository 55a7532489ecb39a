"""Before a night's run: ``validate`` (the input, offline) and ``check`` (the API, one read each).

``validate`` reads and validates files exactly as ``run`` would, and touches neither the
network nor the ledger. ``check`` asks the API for one feedback of each assistant (the List
endpoint, PageSize=1): the cheapest read that proves the credentials and the assistant id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import click

from pipeline.cli.common import (
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    config_option,
    default,
    epilog,
    guarded,
    parse_map,
)
from pipeline.config import Settings
from pipeline.credentials import Credentials
from pipeline.delivery.client import FeedbackClient
from pipeline.engine.columns import check_files
from pipeline.engine.control import RunControl
from pipeline.engine.reading import source_batches
from pipeline.engine.validate import Validator
from pipeline.errors import (
    ApiError,
    AuthError,
    BaseUrlError,
    ConfigError,
    DeliveryError,
)
from pipeline.models import Accepted
from pipeline.sources import is_queue, open_source, source_options
from pipeline.version import __version__

#: Problems ``validate`` prints one line each by default (all are counted).
SHOWN = 20
#: Distinct assistant ids ``check`` takes from the sources at most (one request each).
MAX_ASSISTANTS = 100

_VALIDATE_EXITS = "\b\nExit codes: 0 every record is valid, 1 some are invalid, 2 usage error."
_CHECK_EXITS = (
    "\b\nExit codes: 0 credentials and every assistant id accepted; 1 an assistant id is not\n"
    "found (404) or could not be checked; 2 usage or configuration error (no credentials, no\n"
    "assistant id); 3 credentials refused (401/403) or --base-url is not the Feedback API."
)


_format = click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="As run.")
_map = click.option(
    "--map", "columns", multiple=True, callback=parse_map, metavar="FIELD=COLUMN", help="As run."
)
_ignore_extra = click.option(
    "--ignore-extra-columns",
    flag_value=True,
    default=None,
    help="Leave out columns no record field is read from (else they are an error), as run.",
)


@dataclass
class Checked:
    read: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)
    assistants: set[str] = field(default_factory=set)


async def read_sources(settings: Settings, paths: Sequence[str], shown: int) -> Checked:
    """Read and validate ``paths`` as ``run`` does; no ledger, no network."""
    for path in paths:
        if is_queue(path):
            raise ConfigError(
                f"{path}: validate and check read files (or -), not queues: reading a queue "
                "would take its entries"
            )
    check_files(
        paths, settings.format, settings.columns, ignore_extra=settings.ignore_extra_columns
    )
    validator = Validator(
        default_assistant_id=settings.assistant_id,
        columns=settings.columns,
        ignore_extra=settings.ignore_extra_columns,
    )
    result = Checked()
    control = RunControl()
    sources = [await open_source(path, source_options(settings)) for path in paths]
    try:
        async for batch in source_batches(sources, validator, control):
            for item in batch:
                result.read += 1
                if isinstance(item, Accepted):
                    result.assistants.add(item.record.assistant_id)
                    continue
                result.invalid += 1
                if len(result.problems) < shown:
                    result.problems.append(f"{item.location}: invalid: {item.reason}")
    finally:
        for source in sources:
            await source.close()
    if control.reason:
        result.problems.append(f"stopped: {control.reason}")
        result.invalid = max(result.invalid, 1)
    return result


@click.command(
    epilog=epilog("feedback-pipeline validate ratings.csv more.jsonl.gz --show 50", _VALIDATE_EXITS)
)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@config_option
@click.option("--assistant-id", metavar="ID", help="For records without an assistant_id.")
@_format
@_map
@_ignore_extra
@click.option(
    "--show",
    type=click.IntRange(min=0),
    default=SHOWN,
    show_default=True,
    metavar="N",
    help="Print the first N problems.",
)
@guarded
def validate(
    sources: tuple[str, ...],
    config_file: str | None,
    assistant_id: str | None,
    fmt: str | None,
    columns: dict[str, str],
    ignore_extra_columns: bool | None,
    show: int,
) -> None:
    """Read and validate SOURCE files as `run` would; send nothing, write no ledger."""
    settings = Settings.load(
        config_file,
        assistant_id=assistant_id,
        format=fmt,
        columns=columns or None,
        ignore_extra_columns=ignore_extra_columns,
    )
    result = asyncio.run(read_sources(settings, sources, show))
    for line in result.problems:
        click.echo(line, err=True)
    if result.invalid > len(result.problems):
        click.echo(f"... {result.invalid - len(result.problems)} more invalid records", err=True)
    click.echo(
        f"validate: read {result.read}, valid {result.read - result.invalid}, "
        f"invalid {result.invalid}"
    )
    raise SystemExit(EXIT_PROBLEMS if result.invalid else EXIT_OK)


@click.command(
    epilog=epilog(
        "feedback-pipeline check --assistant-id aia_asst_123 --base-url http://127.0.0.1:8080",
        _CHECK_EXITS,
    )
)
@click.argument("sources", nargs=-1, metavar="[SOURCE]...")
@config_option
@click.option("--assistant-id", "assistant_ids", multiple=True, metavar="ID", help="Repeatable.")
@click.option("--base-url", metavar="URL", help=f"API base [{default('base_url')}].")
@click.option("--timeout", type=float, help=f"Seconds per request [{default('timeout')}].")
@_format
@_map
@_ignore_extra
@guarded
def check(
    sources: tuple[str, ...],
    config_file: str | None,
    assistant_ids: tuple[str, ...],
    base_url: str | None,
    timeout: float | None,
    fmt: str | None,
    columns: dict[str, str],
    ignore_extra_columns: bool | None,
) -> None:
    """Check the credentials and assistant ids against the API: one cheap read each.

    The ids come from --assistant-id and from the records of SOURCE files (read, not sent).
    """
    settings = Settings.load(
        config_file,
        base_url=base_url,
        timeout=timeout,
        format=fmt,
        columns=columns or None,
        ignore_extra_columns=ignore_extra_columns,
        assistant_id=assistant_ids[0] if assistant_ids else None,
    )
    auth = Credentials().basic_auth()
    wanted = set(assistant_ids)
    if sources:
        wanted |= asyncio.run(read_sources(settings, sources, 0)).assistants
    if not wanted:
        raise ConfigError("check: no assistant id to check: pass --assistant-id ID or a SOURCE")
    if len(wanted) > MAX_ASSISTANTS:
        raise ConfigError(f"check: {len(wanted)} assistant ids; pass at most {MAX_ASSISTANTS}")
    code = asyncio.run(_check(settings, auth, sorted(wanted)))
    raise SystemExit(code)


async def _check(settings: Settings, auth: tuple[str, str], assistants: list[str]) -> int:
    headers = {
        # Only ever in this header: never printed.
        "Authorization": aiohttp.encode_basic_auth(*auth),
        "User-Agent": f"feedback-pipeline/{__version__}",
    }
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    code = EXIT_OK
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        client = FeedbackClient(session, settings.base_url)
        for assistant in assistants:
            verdict, line = await _check_one(client, assistant)
            click.echo(line)
            if verdict == EXIT_ABORTED:
                click.echo("check: credentials or --base-url refused; nothing else checked")
                return verdict
            code = max(code, verdict)
    if code == EXIT_OK:
        click.echo(f"check: credentials accepted by {settings.base_url}")
    return code


async def _check_one(client: FeedbackClient, assistant: str) -> tuple[int, str]:
    """One List read: the exit code it stands for, and the line that says so."""
    try:
        await client.list_page(assistant, page_size=1)
    except (AuthError, BaseUrlError) as exc:
        return EXIT_ABORTED, f"check: {assistant}: {exc}"
    except DeliveryError as exc:
        status = exc.status if isinstance(exc, ApiError) else None
        if status == 200:  # a 200 that is no list of feedbacks: a portal, a proxy, ...
            return EXIT_ABORTED, f"check: {assistant}: not the Feedback API: {exc}"
        what = "not found" if status == 404 else "could not be checked"
        return EXIT_PROBLEMS, f"check: {assistant}: {what}: {exc}"
    return EXIT_OK, f"check: {assistant}: ok"
