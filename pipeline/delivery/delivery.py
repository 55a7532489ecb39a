"""Delivery stage: send one record with rate limiting and retries, turn it into an Outcome.

Every attempt passes, in order: the circuit breaker (``circuit.Gate``), then the limiters
(:mod:`pipeline.flow.limiter`: flow control, with the adaptive concurrency limit, the adaptive
rate cap and the fixed ``--rate``; then the ``--rate-scope`` budget); its result feeds them
all back. A 429 is flow control, not a failure: the record waits (its own Retry-After, or a
round trip) and tries again without spending an attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.delivery.circuit import Gate
from pipeline.delivery.client import Created, FeedbackClient
from pipeline.delivery.retry import after, retry_policy
from pipeline.errors import (
    Ambiguous,
    ApiError,
    AuthError,
    BaseUrlError,
    DeliveryError,
    LeaseLapsedError,
    NotSentError,
    OutageError,
    PermanentApiError,
    RetryableApiError,
    TransportError,
)
from pipeline.flow.budget import RateBudget, ScopeLimiter
from pipeline.flow.compose import FlowControl, Kind, Result
from pipeline.flow.limiter import Limiter, Limiters
from pipeline.ledger.lease import NO_LEASE, LeaseGate
from pipeline.models import Accepted, Outcome, Status
from pipeline.stopping import Stopping

#: 429s one attempt may wait through before it counts as a failed attempt.
MAX_THROTTLED = 50
_OK, _OTHER = Result(Kind.OK), Result(Kind.OTHER)


@dataclass
class Sending:
    """What a run's delivery shows while it goes: its flow control and the requests that were
    retries so far. The runner builds it before the run's monitor, which reads it live."""

    flow: FlowControl
    retries: int = 0


@dataclass
class _Sent:
    """How many requests went out for one record."""

    requests: int = 0


def _is_backpressure(exc: BaseException) -> bool:
    """The API (or the path to it) is overloaded: 429, 503, timeouts and other 5xx."""
    if isinstance(exc, ApiError):
        return exc.status in (429, 408) or exc.status >= 500
    return isinstance(exc, TransportError)


def _not_found(assistant: str) -> str:
    return f"assistant {assistant} not found (HTTP 404)"


class Delivery:
    """Sends records one request at a time each; many calls run concurrently.

    ``control`` is the runner's: once it stops (an interrupt, a 401/403 or a long outage seen
    here), no new request starts and backoff waits end early; records not sent come back as
    ``failed`` with 0 attempts so that ``replay`` or a rerun sends them.

    ``sending`` holds the flow control and the retry count, which the run's monitor reads too
    (built from ``concurrency`` and ``rate`` when not given); ``shared`` is the
    ``--rate-scope`` budget; ``on_wait`` is told True when a record starts a wait that holds
    no slot (a 429's Retry-After, a backoff between attempts) and False when it ends, so that
    the stages run a spare worker meanwhile.
    """

    def __init__(
        self,
        client: FeedbackClient,
        *,
        max_attempts: int,
        rate: float | None,
        control: Stopping,
        concurrency: int = 16,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_outage: float = 600.0,
        notice: Callable[[str], None] = lambda _: None,
        shared: RateBudget | None = None,
        lease: LeaseGate = NO_LEASE,
        sending: Sending | None = None,
        on_wait: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self._client = client
        # --rate-scope: the budget of all workers of the scope, on top of this one's limits.
        self.shared = shared
        # A shared ledger's lease: a request starts only while this worker's claims are its own.
        self._lease = lease
        self._control = control
        self._notice = notice
        self.sending = sending or Sending(FlowControl(concurrency, rate, sleep=control.pause))
        self.flow = self.sending.flow
        limiters: list[Limiter[Any]] = [self.flow]
        if shared is not None:
            limiters.append(ScopeLimiter(shared))
        self._limiters = Limiters(limiters)
        self._on_wait = on_wait
        self.gate = Gate(
            sleep=control.pause,
            stopped=lambda: control.stopped,
            notice=notice,
            max_outage=max_outage,
            target=f"--base-url {getattr(client, 'base_url', '')}".rstrip(),
            cooldown=min(1.0, max_backoff),
            max_cooldown=max_backoff,
        )
        self._missing: set[str] = set()
        self._policy = retry_policy(
            max_attempts,
            sleep=self._wait,
            initial_backoff=backoff,
            max_backoff=max_backoff,
            noise=(self.flow.calm, lambda: self.flow.retry_wait(None)),
        )

    @property
    def retries(self) -> int:
        return self.sending.retries

    async def _wait(self, seconds: float) -> None:
        self._on_wait(True)
        try:
            await self._control.pause(seconds)
        finally:
            self._on_wait(False)

    async def _request(self, item: Accepted, sent: _Sent) -> Created:
        """One attempt, through the circuit breaker and flow control."""
        if self.gate.is_open:  # else admit() returns at once: no coroutine for it
            await self.gate.admit()
        tickets = self._limiters.try_acquire() or await self._limiters.acquire()
        result = _OTHER
        try:
            if self._control.stopped:
                raise NotSentError("not sent: " + (self._control.reason or "run stopped"))
            if item.record.assistant_id in self._missing:  # found out while this one waited
                raise NotSentError(f"not sent: {_not_found(item.record.assistant_id)}")
            created = await self._post(item, sent)
            self.gate.succeeded()
            result = _OK
            return created
        except DeliveryError as exc:
            result = self._observe(exc)
            raise
        finally:
            self._limiters.release(tickets, result)

    async def _post(self, item: Accepted, sent: _Sent) -> Created:
        """The request itself, once this worker's lease lets it start (a shared ledger's: its
        claims must still be its own; checked again as the request is written, see
        ``FeedbackClient(last_check=)``)."""
        if not self._lease.valid():
            await self._lease.admit()  # waits for a renewal (the run may stop meanwhile)
            if self._control.stopped:
                raise NotSentError("not sent: " + (self._control.reason or "run stopped"))
        sent.requests += 1
        if sent.requests > 1:
            self.sending.retries += 1
        try:
            return await self._client.create(item.record.assistant_id, item.record.body())
        except LeaseLapsedError:
            sent.requests -= 1  # stopped unwritten by the last check
            if sent.requests:
                self.sending.retries -= 1
            raise

    def _observe(self, exc: DeliveryError) -> Result:
        """What a failure says about load, for flow control (and the circuit breaker)."""
        if isinstance(exc, ApiError):
            self.gate.heard()
        if isinstance(exc, ApiError) and exc.status == 429:
            # Each limiter moves on it (a scope's budget pauses every worker of the scope).
            return Result(Kind.THROTTLED, exc.retry_after)
        if _is_backpressure(exc):
            self.gate.failed(str(exc))
            return Result(Kind.OVERLOADED)
        return _OTHER

    async def _attempt(self, item: Accepted, sent: _Sent) -> Created:
        """One attempt in tenacity's eyes. A 429 is flow control, not a failure: flow control
        already slows everyone down, so this record only waits (the API's Retry-After, obeyed
        for this request alone, or a round trip) and tries again, neither growing the backoff
        nor spending an attempt (up to a bound: an API that only says 429 still ends a
        record)."""
        for _ in range(MAX_THROTTLED):
            if self._control.stopped:
                raise NotSentError("not sent: " + (self._control.reason or "run stopped"))
            try:
                return await self._request(item, sent)
            except LeaseLapsedError:
                continue  # unwritten: the next try waits for the renewal (or finds it lost)
            except RetryableApiError as exc:
                if exc.status != 429:
                    raise
                await self._wait(self.flow.retry_wait(exc.retry_after))
        return await self._request(item, sent)

    async def send(self, item: Accepted) -> Outcome:
        assistant = item.record.assistant_id
        if assistant in self._missing:
            return self.not_sent(item, _not_found(assistant))
        sent = _Sent()
        try:
            try:  # the first attempt outside tenacity (see retry.after)
                created = await self._attempt(item, sent)
            except Exception as first:  # noqa: BLE001 - the retry policy judges every error
                created = await after(self._policy, first, lambda: self._attempt(item, sent))
        except NotSentError as exc:
            stopped = self._control.stopped
            return Outcome(
                item.key, Status.FAILED, sent.requests, error_message=str(exc), stopped=stopped
            )
        except OutageError as exc:
            self._control.abort(str(exc))
            return self.not_sent(item, str(exc), stopped=True)
        except AuthError as exc:
            # A refused credential is the run's fault, not the record's: not sent (left on its
            # queue, sent by the rerun with the right token), never failed nor dead-lettered.
            reason = f"authentication refused by the API ({exc})"
            self._control.abort(reason)
            return self.not_sent(item, reason, stopped=True)
        except BaseUrlError as exc:
            # A configuration error found by talking to the API: stop before sending more.
            self._control.abort(str(exc))
            status = Status.UNKNOWN if isinstance(exc, Ambiguous) else Status.FAILED
            return self._failed(item, sent.requests, exc, status)
        except DeliveryError as exc:
            self._note_missing(assistant, exc)
            status = Status.UNKNOWN if isinstance(exc, Ambiguous) else Status.FAILED
            return self._failed(item, sent.requests, exc, status)
        return Outcome(item.key, Status.SENT, sent.requests, created.status, created.feedback_id)

    def _note_missing(self, assistant: str, exc: DeliveryError) -> None:
        if (
            isinstance(exc, PermanentApiError)
            and exc.status == 404
            and assistant not in self._missing
        ):
            self._missing.add(assistant)
            self._notice(
                f"assistant {assistant}: not found (HTTP 404, Twilio error {exc.code}); "
                "its other records fail without being sent"
            )

    @staticmethod
    def _failed(item: Accepted, attempts: int, exc: DeliveryError, status: Status) -> Outcome:
        if isinstance(exc, ApiError):
            return Outcome(item.key, status, attempts, exc.status, None, exc.code, exc.message)
        return Outcome(item.key, status, attempts, error_message=str(exc))

    @staticmethod
    def not_sent(item: Accepted, reason: str, *, stopped: bool = False) -> Outcome:
        """``stopped``: because the run stopped (else: the record's own assistant is missing)."""
        message = f"not sent: {reason}"
        return Outcome(item.key, Status.FAILED, 0, error_message=message, stopped=stopped)
