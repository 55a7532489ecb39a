"""Reconciliation: settle the records whose request may have reached the API.

A record is uncertain when a run died with it ``in_flight``, or when its request ended
ambiguously (``unknown``: reset or timeout after sending, 500/502/504). Sending it again could
duplicate it, so it is looked up instead: the assistant's feedbacks are listed (PageSize 1000,
following ``meta.next_page_url``) and matched on (session_id, message_id, score, text).
Found: ``sent`` with the API's id. Not found: ``failed`` as "not stored", which ``run`` and
``replay`` then send. Two records with the same content each need their own stored copy: ids
the ledger already holds for another record are not handed out twice.

The cursor walk is bounded: a hostile or broken API can send a ``next_page_url`` that repeats
or never ends. A page URL seen twice, a page whose items repeat an earlier page's, or more
than ``max_pages`` pages is a :class:`ReconcileError` (nothing is decided on a listing that
cannot be trusted), and every List request waits on the run's rate limiter (``acquire``),
like every POST, so even a bounded walk never outruns ``--rate``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.delivery.client import FeedbackClient, FeedbackPage
from pipeline.delivery.retry import Sleep, retry_policy
from pipeline.errors import (
    AuthError,
    BaseUrlError,
    DeliveryError,
    ReconcileError,
    SettleInterruptedError,
)
from pipeline.ledger import Ledger
from pipeline.logs import event
from pipeline.models import Accepted, Outcome, Status, content_hash

NOT_STORED = "not stored by the API (checked by reconcile); run or replay sends it"
#: Pages listed per assistant at most: 10 million feedbacks at 1000 a page. The API's pages
#: carry no total to derive a bound from; this one only stops a cursor that never ends.
MAX_LIST_PAGES = 10_000


async def _no_limit() -> None:
    return None


@dataclass
class Settled:
    found: int = 0
    missing: int = 0
    # Which records: the stages ack a queue's entries once theirs are found.
    found_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.found + self.missing


class Reconciler:
    """``settle`` seconds: how long a request that reached the API may take to be stored.

    The settle wait is a safety wait, never a courtesy: judging a record "not stored" before
    it is over can be wrong (the API may still be storing it), and the next run would send it
    again. So the wait may end early (``sleep`` may be stop-aware, so that a stopping run does
    not hang), but then nothing is judged: :meth:`_judge` refuses to run before the deadline,
    whoever calls it, and raises :class:`SettleInterruptedError` instead; the records stay
    ``in_flight``/``unknown`` for the next run.
    """

    def __init__(
        self,
        client: FeedbackClient,
        ledger: Ledger,
        *,
        settle: float,
        max_attempts: int,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        acquire: Callable[[], Awaitable[None]] = _no_limit,
        max_pages: int = MAX_LIST_PAGES,
        stopped: Callable[[], bool] = lambda: False,
        notice: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._client = client
        self._acquire = acquire
        self._max_pages = max_pages
        self._ledger = ledger
        self._settle = settle
        self._sleep = sleep
        self._clock = clock
        self._stopped = stopped
        self._notice = notice
        self._policy = retry_policy(max_attempts, sleep=sleep, idempotent=True)

    async def settle_leftovers(self) -> Settled:
        """Settle what earlier (dead) runs left in flight or unknown."""
        rows = await self._ledger.uncertain(this_run=False)
        if not rows:
            return Settled()
        runs = sorted({run for _, run in rows})
        # Every request those runs started (under their lease) has ended by then; the settle
        # wait then lets the API finish storing the last ones.
        quiet = await self._ledger.quiet_in(runs)
        deadline = self._clock() + quiet + self._settle
        whose = "an earlier run" if len(runs) == 1 else f"{len(runs)} earlier runs"
        whose += f" ({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''})"
        if quiet > 0:
            whose += f", whose last requests may be on their way for {quiet:.1f} s more"
        settled = await self._judge([r for r, _ in rows], deadline, whose, own=False)
        if settled.found or settled.missing:
            event(
                logging.WARNING,
                f"notice: reconciled {settled.found + settled.missing} records of {len(runs)} "
                f"other runs ({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''}): "
                f"{settled.found} were stored (now sent), {settled.missing} were not (now "
                "failed: sent again when their entries come back)",
                "reconciled",
                runs=runs,
                found=settled.found,
                missing=settled.missing,
            )
        return settled

    async def settle_own(self) -> Settled:
        """Settle this run's ambiguous outcomes (all of them are at most now)."""
        rows = await self._ledger.uncertain(this_run=True)
        if not rows:
            return Settled()
        deadline = self._clock() + self._settle
        return await self._judge([r for r, _ in rows], deadline, "this run", own=True)

    async def _judge(
        self, records: Sequence[Accepted], deadline: float, whose: str, *, own: bool
    ) -> Settled:
        """Look ``records`` up, but only once ``deadline`` (the end of the settle wait) is past."""
        delay = deadline - self._clock()
        if delay > 0:
            self._notice(
                f"reconcile: {len(records)} uncertain records of {whose}; waiting {delay:.1f} s "
                "(--settle) for the API to finish storing them before checking"
            )
        if not await self._wait_until(deadline):
            raise SettleInterruptedError(
                f"stopped during the settle wait: {len(records)} uncertain records of {whose} "
                "were not checked and stay uncertain; the next run settles them"
            )
        return await self._settle_records(records, own)

    async def _wait_until(self, deadline: float) -> bool:
        """Wait until ``deadline``; False if the run stopped first (the wait did not complete).

        Loops because a sleep may end early (a stop-aware one does, by design) or a hair short
        of a wall-clock deadline; only the clock says whether the wait is over.
        """
        while (delay := deadline - self._clock()) > 0:
            if self._stopped():
                return False
            await self._sleep(delay)
        return True

    async def _settle_records(self, records: Sequence[Accepted], own: bool) -> Settled:
        by_assistant: dict[str, list[Accepted]] = defaultdict(list)
        for item in records:
            by_assistant[item.record.assistant_id].append(item)
        settled = Settled()
        for assistant_id, items in sorted(by_assistant.items()):
            outcomes = await self._match(assistant_id, items)
            # Only what is still uncertain is written, and counted: several workers may
            # settle the same leftovers at once, and the first judgment stands.
            written = await self._ledger.settle(outcomes, this_run=own)
            for outcome in (o for o in outcomes if o.key in written):
                found = outcome.status is Status.SENT
                (settled.found_keys if found else settled.missing_keys).append(outcome.key)
            settled.found = len(settled.found_keys)
            settled.missing = len(settled.missing_keys)
        return settled

    async def _match(self, assistant_id: str, items: Sequence[Accepted]) -> list[Outcome]:
        wanted: dict[str, list[Accepted]] = defaultdict(list)
        for item in items:
            r = item.record
            wanted[content_hash(assistant_id, r.session_id, r.message_id, r.score, r.text)].append(
                item
            )
        stored = await self._stored_ids(assistant_id, set(wanted))
        taken = await self._ledger.recorded_ids([i for ids in stored.values() for i in ids])
        outcomes: list[Outcome] = []
        for content, group in wanted.items():
            free = [fid for fid in stored.get(content, []) if fid not in taken]
            for item, fid in zip(group, free + [None] * len(group), strict=False):
                if fid is None:
                    outcomes.append(Outcome(item.key, Status.FAILED, 0, error_message=NOT_STORED))
                else:
                    outcomes.append(Outcome(item.key, Status.SENT, 0, feedback_id=fid))
        return outcomes

    async def _stored_ids(self, assistant_id: str, contents: set[str]) -> dict[str, list[str]]:
        """Ids of the assistant's stored feedbacks whose content is one of ``contents``."""
        ids: dict[str, list[str]] = defaultdict(list)
        url: str | None = None
        seen: set[str] = set()
        digests: set[bytes] = set()  # 16 bytes a page: at most 160 KB for MAX_LIST_PAGES
        for _ in range(self._max_pages):
            page = await self._page(assistant_id, url)
            for feedback in page.feedbacks:
                if not isinstance(feedback, dict):
                    continue  # not a feedback; cannot match a record
                content = content_of(assistant_id, feedback)
                if content in contents and isinstance(feedback.get("id"), str):
                    ids[content].append(feedback["id"])
            if not page.next_page_url:
                return ids
            url = page.next_page_url
            fingerprint = _fingerprint(page)
            if url in seen or fingerprint in digests:
                # A cursor going round in circles: its ids would be counted twice, and a
                # rerun would loop the same way. Stop with what is known: nothing decided.
                raise ReconcileError(
                    f"cannot list the feedbacks of {assistant_id}: the API sent the same "
                    f"page twice (next_page_url {url})"
                )
            seen.add(url)
            digests.add(fingerprint)
        raise ReconcileError(
            f"cannot list the feedbacks of {assistant_id}: still more pages after "
            f"{self._max_pages} pages (next_page_url {url})"
        )

    async def _page(self, assistant_id: str, url: str | None) -> FeedbackPage:
        async def one() -> FeedbackPage:
            await self._acquire()  # the run's --rate covers List requests too, retries included
            return await self._client.list_page(assistant_id, url=url)

        try:
            page: FeedbackPage = await self._policy.copy()(one)
        except (AuthError, BaseUrlError):
            raise  # the run cannot go on: the caller aborts it
        except DeliveryError as exc:
            raise ReconcileError(f"cannot list the feedbacks of {assistant_id}: {exc}") from exc
        return page


def _fingerprint(page: FeedbackPage) -> bytes:
    """A digest of a page's ids: two pages with the same items (or two empty pages that still
    link on) are a cursor going round, whatever their URLs look like."""
    ids = [str(f.get("id")) for f in page.feedbacks if isinstance(f, dict)]
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=16).digest()


def content_of(assistant_id: str, feedback: dict[str, Any]) -> str | None:
    session, message, text = (feedback.get(k) for k in ("session_id", "message_id", "text"))
    score = feedback.get("score")
    if not isinstance(session, str) or isinstance(score, bool):
        return None
    return content_hash(
        assistant_id,
        session,
        message if isinstance(message, str) else None,
        float(score) if isinstance(score, int | float) else None,
        text if isinstance(text, str) else None,
    )
