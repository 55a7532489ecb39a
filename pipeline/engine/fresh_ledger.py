"""A new ledger: the mistake that sends everything twice, caught before it does.

The ledger is the only memory of what was sent (the API has no idempotency key), so a
mistyped ``--ledger backfil.sqlite3``, or the default relative ledger from another directory,
sends every record again. Three guards, cheapest first:

- a run that creates its ledger says so before sending, with the ledger's absolute path;
- ``ledger_must_exist`` (a scheduled job's setting) refuses to start without one (exit 2);
- a new ledger (one that holds no record) is checked against what the API already holds:
  the first batch's records are looked up in their assistants' List pages, bounded by
  :data:`MAX_PAGES` pages per assistant and :data:`MAX_SECONDS` in all. Found records stop
  the run before anything is sent (exit 2, ``new_ledger = "check"``), are recorded as sent
  in the new ledger and not sent again (``"adopt"``), or are sent anyway (``"send"``, which
  also skips the lookup). A ledger that holds records by the time they are found is no
  longer new (another worker of a shared ledger started meanwhile): the run goes on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.delivery.client import FeedbackClient
from pipeline.engine.reconcile import content_of
from pipeline.engine.stages import Batches, Item
from pipeline.errors import AuthError, BaseUrlError, ConfigError, DeliveryError
from pipeline.ledger import Ledger
from pipeline.models import Accepted, Outcome, Skipped, Status, content_hash
from pipeline.urls import local_path, mask_url

Notice = Callable[[str], None]

#: List pages read per assistant at most (1000 feedbacks a page): the check is a guard, not
#: a reconciliation, and must not hold a run's start for long on an assistant with millions.
MAX_PAGES = 10
#: Seconds the whole lookup may take; past it, the run goes on with what was checked.
MAX_SECONDS = 30.0


def created_path(url: str) -> Path | None:
    """The absolute path of a file ledger that does not exist yet (this run creates it)."""
    path = local_path(url)
    if path is None or Path(path).exists():
        return None
    return Path(path).absolute()


def refuse_missing(url: str, origin: str) -> None:
    """``ledger_must_exist``: no run starts on a ledger file that is not there."""
    path = created_path(url)
    if path is not None:
        raise ConfigError(
            f"configuration error: --ledger: {path} does not exist, and {origin} says a run "
            "must not create one (a mistyped ledger sends everything again); nothing was sent"
        )


async def announce(
    url: str, ledger: Ledger, created: Path | None, must_exist: str | None, notice: Notice
) -> bool:
    """Whether the run's ledger is new (holds no record), said before anything is sent.
    ``must_exist``: the setting that refuses a new ledger, as named to the user (a server
    ledger is found empty only once it is open)."""
    if any((await ledger.counts()).values()):
        return False
    if must_exist is not None:
        raise ConfigError(
            f"configuration error: --ledger: {mask_url(url)} holds no record, and {must_exist} "
            "says a run must not start on a new ledger; nothing was sent"
        )
    if created is not None:
        notice(
            f"new ledger {created}: created by this run, it knows of nothing sent before (a "
            "mistyped --ledger sends everything again)"
        )
    else:
        notice(f"new ledger {mask_url(url)}: it holds no record, so it knows of nothing sent")
    return True


@dataclass
class Found:
    """Records of a batch the API already holds, with the ids it holds them under."""

    checked: int = 0
    items: list[tuple[Accepted, str]] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # why a part was not looked up


async def look_up(
    client: FeedbackClient,
    batch: Sequence[object],
    acquire: Callable[[], Awaitable[None]],
    *,
    max_pages: int = MAX_PAGES,
    max_seconds: float = MAX_SECONDS,
) -> Found:
    """Which records of ``batch`` the API already holds (bounded: see the module)."""
    wanted: dict[str, dict[str, list[Accepted]]] = defaultdict(lambda: defaultdict(list))
    found = Found()
    for item in batch:
        if isinstance(item, Accepted):
            r = item.record
            digest = content_hash(r.assistant_id, r.session_id, r.message_id, r.score, r.text)
            wanted[r.assistant_id][digest].append(item)
            found.checked += 1
    try:
        async with asyncio.timeout(max_seconds):
            for assistant_id, contents in sorted(wanted.items()):
                await _walk(client, assistant_id, contents, acquire, max_pages, found)
    except TimeoutError:
        found.unchecked.append(f"the lookup took longer than {max_seconds:.0f} s")
    return found


async def _walk(
    client: FeedbackClient,
    assistant_id: str,
    contents: dict[str, list[Accepted]],
    acquire: Callable[[], Awaitable[None]],
    max_pages: int,
    found: Found,
) -> None:
    url: str | None = None
    for _ in range(max_pages):
        await acquire()  # List requests count against --rate, as reconciliation's do
        try:
            page = await client.list_page(assistant_id, url=url)
        except (AuthError, BaseUrlError):
            raise  # the run cannot go on: the caller aborts it, as for a POST
        except DeliveryError as exc:
            found.unchecked.append(f"{assistant_id}: {exc}")
            return
        for feedback in page.feedbacks:
            if not isinstance(feedback, dict) or not isinstance(feedback.get("id"), str):
                continue
            group = contents.get(content_of(assistant_id, feedback) or "")
            if group:
                found.items.append((group.pop(0), feedback["id"]))
        if not page.next_page_url:
            return
        url = page.next_page_url
    found.unchecked.append(f"{assistant_id}: more than {max_pages} pages, the rest not read")


def refusal(url: str, found: Found) -> ConfigError:
    """The run stops before sending: what was found, and the three ways on."""
    path = local_path(url)
    where = str(Path(path).absolute()) if path is not None else mask_url(url)
    first = found.items[0][0]
    return ConfigError(
        f"--ledger {where} is new, but {len(found.items)} of the first {found.checked} records "
        f"are already at the API (e.g. {first.location or first.key}): were they sent with "
        "another ledger? Pass that one with --ledger; or --new-ledger adopt to record them as "
        "sent in this ledger and send only the rest; or --new-ledger send to send them again. "
        "Nothing was sent"
    )


async def adopt(ledger: Ledger, found: Found) -> int:
    """Record the found records as sent (with the API's ids): the run then skips them."""
    items = list({item.key: (item, fid) for item, fid in found.items}.values())
    await ledger.claim([item for item, _ in items])
    await ledger.record([Outcome(i.key, Status.SENT, 0, feedback_id=fid) for i, fid in items])
    return len(items)


async def guard(
    batches: Batches,
    *,
    url: str,
    mode: str,
    ledger: Ledger,
    client: FeedbackClient,
    acquire: Callable[[], Awaitable[None]],
    notice: Notice,
) -> Batches:
    """``batches`` once their first batch was looked up at the API (a new ledger's check):
    a ConfigError when some are there and ``mode`` is "check"; with "adopt", those recorded
    as sent first (the run then skips them)."""
    first = await anext(batches, None)
    if first is None:
        return batches
    found = await look_up(client, first, acquire)
    for why in found.unchecked:
        notice(f"new ledger: not all of the API was checked for these records: {why}")
    if found.items and mode == "adopt":
        adopted = await adopt(ledger, found)
        # Handed on as sent earlier: the run counts them as skipped, and claims them no more.
        keys = {item.key for item, _ in found.items}
        first = [
            Skipped(x.location or "", x.key, x.handle)
            if isinstance(x, Accepted) and x.key in keys
            else x
            for x in first
        ]
        notice(
            f"new ledger: {adopted} of the first {found.checked} records are already at the "
            "API: recorded as sent in this ledger (--new-ledger adopt), not sent again"
        )
    elif found.items and not any((await ledger.counts()).values()):
        await _close(batches)
        raise refusal(url, found)
    # Found, but the ledger holds records now: another worker of this (shared) ledger started
    # meanwhile and sent them, as a run starting a moment later would have seen (and checked
    # nothing): the claims tell which are sent.
    return _prepend(first, batches)


async def _close(batches: AsyncIterator[object]) -> None:
    aclose = getattr(batches, "aclose", None)
    if aclose is not None:
        await aclose()


async def _prepend(first: list[Item], rest: Batches) -> Batches:
    """The batch looked at first, then the others, as one stream of batches."""
    try:
        yield first
        async for batch in rest:
            yield batch
    finally:
        await _close(rest)
