"""Reconciliation's cursor walk over a scripted List endpoint: bounded, and rate limited."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pipeline.delivery.client import FeedbackClient, FeedbackPage
from pipeline.engine.reconcile import Reconciler
from pipeline.errors import ReconcileError, RetryableApiError
from pipeline.ledger import Ledger
from pipeline.models import content_hash

ASSISTANT = "aia_asst_1"
BASE = "https://api.test/v1/Assistants/aia_asst_1/Feedbacks"


def feedback(i: int) -> dict[str, Any]:
    return {"id": f"aia_fdbk_{i}", "session_id": f"s{i}", "score": 0.5}


class ScriptedList:
    """``list_page`` answers from a script: a page, or an error to raise."""

    def __init__(self, *answers: FeedbackPage | Exception) -> None:
        self.answers = list(answers)
        self.urls: list[str | None] = []

    async def list_page(self, assistant_id: str, *, url: str | None = None) -> FeedbackPage:
        self.urls.append(url)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def no_sleep(_: float) -> None:
    return None


def reconciler(client: ScriptedList, **kwargs: Any) -> Reconciler:
    return Reconciler(
        cast(FeedbackClient, client),
        cast(Ledger, None),
        settle=0,
        max_attempts=3,
        sleep=no_sleep,
        **kwargs,
    )


async def walk(r: Reconciler) -> dict[str, list[str]]:
    wanted = {content_hash(ASSISTANT, f"s{i}", None, 0.5, None) for i in range(10)}
    return await r._stored_ids(ASSISTANT, wanted)


async def test_every_list_request_waits_on_the_rate_limiter_retries_included() -> None:
    client = ScriptedList(
        FeedbackPage([feedback(1)], f"{BASE}?Page=1"),
        RetryableApiError(503, "unavailable"),
        FeedbackPage([feedback(2)], None),
    )
    acquired = []

    async def acquire() -> None:
        acquired.append(len(client.urls))

    found = await walk(reconciler(client, acquire=acquire))

    assert sorted(i for ids in found.values() for i in ids) == ["aia_fdbk_1", "aia_fdbk_2"]
    assert len(client.urls) == 3
    assert acquired == [0, 1, 2]  # one wait before each of the three requests


async def test_a_next_page_url_seen_twice_is_an_error() -> None:
    client = ScriptedList(
        FeedbackPage([feedback(1)], f"{BASE}?Page=1"),
        FeedbackPage([feedback(2)], f"{BASE}?Page=2"),
        FeedbackPage([feedback(3)], f"{BASE}?Page=1"),
    )
    with pytest.raises(ReconcileError, match="same page twice"):
        await walk(reconciler(client))
    assert len(client.urls) == 3


async def test_a_cursor_going_round_two_pages_under_new_urls_is_an_error() -> None:
    pages = [FeedbackPage([feedback(n % 2)], f"{BASE}?Page={n}") for n in range(1, 100)]
    client = ScriptedList(*pages)
    with pytest.raises(ReconcileError, match="same page twice"):
        await walk(reconciler(client))
    assert len(client.urls) == 3


@pytest.mark.parametrize("items", [[feedback(1), feedback(2)], []])
async def test_a_cursor_that_moves_but_serves_the_same_page_is_an_error(
    items: list[dict[str, Any]],
) -> None:
    pages = [FeedbackPage(items, f"{BASE}?Page={n}") for n in range(1, 100)]
    client = ScriptedList(*pages)
    with pytest.raises(ReconcileError, match="same page twice"):
        await walk(reconciler(client))
    assert len(client.urls) == 2


async def test_the_walk_stops_after_max_pages() -> None:
    pages = [FeedbackPage([feedback(n)], f"{BASE}?Page={n}") for n in range(1, 100)]
    client = ScriptedList(*pages)
    with pytest.raises(ReconcileError, match="still more pages after 5 pages"):
        await walk(reconciler(client, max_pages=5))
    assert len(client.urls) == 5


async def test_non_feedback_items_are_ignored() -> None:
    page = FeedbackPage(cast(list[dict[str, Any]], ["junk", 3, feedback(4)]), None)
    found = await walk(reconciler(ScriptedList(page)))
    assert [i for ids in found.values() for i in ids] == ["aia_fdbk_4"]
