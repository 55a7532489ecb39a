"""The retry policy on a fake clock, and Delivery.send against a scripted client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from itertools import pairwise
from typing import Any, cast

import pytest

from pipeline.delivery.client import Created, FeedbackClient
from pipeline.delivery.delivery import Delivery
from pipeline.delivery.retry import MAX_RETRY_AFTER, retry_policy
from pipeline.engine.control import RunControl
from pipeline.errors import (
    AuthError,
    PermanentApiError,
    RetryableApiError,
    TransportError,
)
from pipeline.flow.aimd import make_limiter
from pipeline.models import Accepted, FeedbackRecord, Status

ASSISTANT = "aia_asst_retry"


class FakeSleep:
    """Records the delays asked for; never sleeps."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Flaky:
    """An async callable that raises the scripted errors, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def always(exc: BaseException, times: int = 100) -> Flaky:
    return Flaky(*[exc] * times)


async def run(
    fn: Callable[[], Awaitable[str]],
    *,
    max_attempts: int = 4,
    initial_backoff: float = 0.01,
    max_backoff: float = 30.0,
) -> tuple[str, FakeSleep]:
    sleep = FakeSleep()
    policy = retry_policy(
        max_attempts, sleep=sleep, initial_backoff=initial_backoff, max_backoff=max_backoff
    )
    result: str = await policy.copy()(fn)
    return result, sleep


def unavailable(retry_after: float | None = None) -> RetryableApiError:
    return RetryableApiError(503, "Service Unavailable", retry_after=retry_after)


# --- retry_policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        unavailable(),
        RetryableApiError(429, "Too Many Requests", code=20429),
        RetryableApiError(408, "Request Timeout"),
        TransportError("ClientConnectionError: refused"),
    ],
    ids=["503", "429", "408", "transport"],
)
async def test_retryable_errors_are_retried_up_to_max_attempts(exc: Exception) -> None:
    fn = always(exc)
    sleep = FakeSleep()
    policy = retry_policy(4, sleep=sleep, initial_backoff=0.01)

    with pytest.raises(type(exc)) as info:
        await policy.copy()(fn)

    assert info.value is exc  # reraised as is, not wrapped in tenacity's RetryError
    assert fn.calls == 4
    assert len(sleep.delays) == 3


async def test_success_after_retries_returns_the_result() -> None:
    fn = Flaky(unavailable(), TransportError("reset"))

    result, sleep = await run(fn)

    assert result == "ok"
    assert fn.calls == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(
    "exc",
    [
        PermanentApiError(400, "Invalid score", code=20001),
        PermanentApiError(404, "Not Found"),
        AuthError(401, "Authenticate", code=20003),
        AuthError(403, "Forbidden"),
        ValueError("a bug, not a network problem"),
    ],
    ids=["400", "404", "401", "403", "ValueError"],
)
async def test_other_errors_are_never_retried(exc: Exception) -> None:
    fn = always(exc)
    sleep = FakeSleep()
    policy = retry_policy(5, sleep=sleep, initial_backoff=0.01)

    with pytest.raises(type(exc)):
        await policy.copy()(fn)

    assert fn.calls == 1
    assert sleep.delays == []


async def test_single_attempt_policy_does_not_retry() -> None:
    fn = always(unavailable())
    sleep = FakeSleep()
    with pytest.raises(RetryableApiError):
        await retry_policy(1, sleep=sleep).copy()(fn)
    assert fn.calls == 1
    assert sleep.delays == []


async def test_retry_after_is_a_minimum() -> None:
    fn = Flaky(unavailable(retry_after=7))

    _, sleep = await run(fn, initial_backoff=0.01)

    (delay,) = sleep.delays
    assert 7 <= delay < 7.1


async def test_retry_after_below_the_backoff_does_not_shorten_it() -> None:
    fn = Flaky(unavailable(retry_after=0.5))

    _, sleep = await run(fn, initial_backoff=4.0)

    (delay,) = sleep.delays
    assert 4.0 <= delay <= 8.0


async def test_retry_after_is_capped() -> None:
    fn = Flaky(unavailable(retry_after=86_400), unavailable(retry_after=float("inf")))

    _, sleep = await run(fn)

    assert sleep.delays == [MAX_RETRY_AFTER, MAX_RETRY_AFTER]


async def test_backoff_grows_exponentially() -> None:
    fn = always(unavailable())
    sleep = FakeSleep()
    policy = retry_policy(6, sleep=sleep, initial_backoff=1.0, max_backoff=1000.0)

    with pytest.raises(RetryableApiError):
        await policy.copy()(fn)

    assert len(sleep.delays) == 5
    assert all(later > earlier for earlier, later in pairwise(sleep.delays))
    for n, delay in enumerate(sleep.delays):
        # initial * 2**n plus a jitter of at most one initial backoff
        assert 2**n <= delay <= 2**n + 1.0


async def test_backoff_is_capped_at_max_backoff() -> None:
    fn = always(TransportError("reset"))
    sleep = FakeSleep()
    policy = retry_policy(10, sleep=sleep, initial_backoff=1.0, max_backoff=3.0)

    with pytest.raises(TransportError):
        await policy.copy()(fn)

    assert len(sleep.delays) == 9
    assert max(sleep.delays) <= 3.0
    assert sleep.delays[-1] == 3.0


async def test_policy_copies_are_independent() -> None:
    sleep = FakeSleep()
    policy = retry_policy(3, sleep=sleep, initial_backoff=0.01)
    first, second = always(unavailable()), Flaky(unavailable())

    with pytest.raises(RetryableApiError):
        await policy.copy()(first)
    assert await policy.copy()(second) == "ok"

    assert first.calls == 3
    assert second.calls == 2


# --- Delivery.send -----------------------------------------------------------------------------

Result = Created | BaseException


class ScriptedClient:
    """Stands in for FeedbackClient: answers create() from a script, records the calls."""

    def __init__(self, *script: Result, on_call: Callable[[], None] | None = None) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.on_call = on_call

    async def create(self, assistant_id: str, body: dict[str, Any]) -> Created:
        self.calls.append((assistant_id, body))
        if self.on_call is not None:
            self.on_call()
        result = self.script.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result


def delivery(
    client: ScriptedClient, *, max_attempts: int = 5, control: RunControl | None = None
) -> Delivery:
    return Delivery(
        cast(FeedbackClient, client),
        max_attempts=max_attempts,
        rate=None,
        control=control or RunControl(),
        backoff=0.001,
        max_backoff=0.002,
    )


RECORD = Accepted.of(
    "in.csv:2",
    FeedbackRecord(assistant_id=ASSISTANT, session_id="s1", score=0.5, text="good"),
)


async def test_send_retries_until_created() -> None:
    client = ScriptedClient(
        unavailable(),
        RetryableApiError(429, "Too Many Requests", code=20429),
        Created("aia_fdbk_1", 201),
    )
    control = RunControl()
    sender = delivery(client, control=control)

    outcome = await sender.send(RECORD)

    assert outcome.key == RECORD.key
    assert outcome.status is Status.SENT
    assert outcome.attempts == 3
    assert outcome.http_status == 201
    assert outcome.feedback_id == "aia_fdbk_1"
    assert outcome.error_message is None
    assert sender.retries == 2
    assert client.calls == [(ASSISTANT, RECORD.record.body())] * 3
    assert not control.stopped


async def test_send_permanent_error_fails_at_once() -> None:
    client = ScriptedClient(
        PermanentApiError(400, "Invalid score", code=20001, more_info="https://twilio.com/docs")
    )
    control = RunControl()
    sender = delivery(client, control=control)

    outcome = await sender.send(RECORD)

    assert outcome.status is Status.FAILED
    assert outcome.attempts == 1
    assert outcome.http_status == 400
    assert outcome.error_code == 20001
    assert outcome.error_message == "Invalid score"
    assert outcome.feedback_id is None
    assert len(client.calls) == 1
    assert not control.stopped
    assert control.reason is None


async def test_send_auth_error_is_not_the_records_fault_and_stops_the_run() -> None:
    client = ScriptedClient(AuthError(401, "Authenticate", code=20003))
    control = RunControl()
    sender = delivery(client, control=control)

    outcome = await sender.send(RECORD)

    # Released, not failed: "not sent", no HTTP status of its own (nothing to dead-letter).
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 0
    assert outcome.http_status is None
    assert (outcome.error_message or "").startswith("not sent: authentication refused")
    assert control.stopped
    assert control.reason is not None
    assert "authentication" in control.reason

    after = await sender.send(RECORD)
    assert after.status is Status.FAILED
    assert after.attempts == 0
    assert after.error_message is not None
    assert "authentication" in after.error_message
    assert len(client.calls) == 1


async def test_send_after_stop_sends_nothing() -> None:
    control = RunControl()
    control.abort("interrupted")
    client = ScriptedClient(Created("aia_fdbk_1", 201))
    sender = delivery(client, control=control)

    outcome = await sender.send(RECORD)

    assert outcome.status is Status.FAILED
    assert outcome.attempts == 0
    assert outcome.http_status is None
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("not sent")
    assert client.calls == []


async def test_send_retries_exhausted() -> None:
    client = ScriptedClient(unavailable(), unavailable(), Created("never", 201))
    sender = delivery(client, max_attempts=2)

    outcome = await sender.send(RECORD)

    assert outcome.status is Status.FAILED
    assert outcome.attempts == 2
    assert outcome.http_status == 503
    assert outcome.error_message == "Service Unavailable"
    assert len(client.calls) == 2


async def test_send_transport_errors_exhausted() -> None:
    client = ScriptedClient(
        TransportError("timed out waiting for the API"), TransportError("reset")
    )
    sender = delivery(client, max_attempts=2)

    outcome = await sender.send(RECORD)

    assert outcome.status is Status.FAILED
    assert outcome.attempts == 2
    assert outcome.http_status is None
    assert outcome.error_message == "reset"


async def test_stop_cuts_a_long_backoff_short() -> None:
    control = RunControl()
    # The server asks for a minute's pause, and the run is interrupted meanwhile.
    client = ScriptedClient(unavailable(retry_after=60), on_call=control.stop.set)
    sender = delivery(client, control=control)

    # A deadline, not a speed check: without the stop the send would wait out the minute.
    outcome = await asyncio.wait_for(sender.send(RECORD), timeout=30)

    assert outcome.status is Status.FAILED
    assert outcome.attempts == 1
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("not sent")
    assert len(client.calls) == 1


def test_abort_keeps_the_first_reason() -> None:
    control = RunControl()
    control.abort("first")
    control.abort("second")
    assert control.reason == "first"
    assert control.stopped


def test_not_sent_outcome() -> None:
    outcome = Delivery.not_sent(RECORD, "interrupted")
    assert outcome.key == RECORD.key
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 0
    assert outcome.error_message == "not sent: interrupted"


@pytest.mark.parametrize("rate", [None, 0])
def test_no_rate_means_no_limiter(rate: float | None) -> None:
    assert make_limiter(rate) is None


def test_rate_limiter_allows_the_rate() -> None:
    limiter = make_limiter(1000)
    assert limiter is not None
    assert limiter.max_rate / limiter.time_period == pytest.approx(1000)
