"""The lease as a worker knows it: requests start only while it holds (less a margin), a
refused or missing renewal loses it for good, and delivery asks before every request."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from pipeline.delivery.client import FeedbackClient
from pipeline.delivery.delivery import Delivery
from pipeline.engine.control import RunControl
from pipeline.errors import LeaseLapsedError, LeaseLostError, LedgerError, PermanentApiError
from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState
from pipeline.ledger.lease import Lease
from pipeline.models import Accepted, FeedbackRecord, Status


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ledger:
    """Renewals as the test says: granted, refused, failing, or never answered."""

    def __init__(self) -> None:
        self.answer: bool | Exception | None = True  # None: never answers
        self.renewals = 0

    async def renew(self) -> bool:
        self.renewals += 1
        if self.answer is None:
            await asyncio.Event().wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return bool(self.answer)


def _lease(clock: Clock, ledger: Ledger, lost: list[str], seconds: float = 10.0) -> Lease:
    return Lease(seconds, ledger.renew, on_lost=lost.append, clock=clock)


async def test_requests_start_only_while_the_lease_holds_less_its_margin() -> None:
    clock, ledger, lost = Clock(), Ledger(), list[str]()
    lease = _lease(clock, ledger, lost)
    assert lease.margin == 2.0
    assert lease.valid()
    clock.now += 10.0 - 2.0 - 0.01
    assert lease.valid()
    clock.now += 0.02
    assert not lease.valid()
    assert not lost
    clock.now += 2.0
    with pytest.raises(LeaseLostError, match="no renewal reached the ledger"):
        await lease.admit()
    assert len(lost) == 1
    assert "lease lost" in lost[0]


async def test_a_waiting_request_goes_once_a_renewal_gets_through() -> None:
    clock, ledger, lost = Clock(), Ledger(), list[str]()
    lease = _lease(clock, ledger, lost)
    clock.now += 9.0
    waiting = asyncio.create_task(lease.admit())
    await asyncio.sleep(0)
    assert not waiting.done()
    keeper = asyncio.create_task(lease.keep(3600))
    await asyncio.wait_for(waiting, 5)
    assert lease.valid()
    assert not lost
    assert ledger.renewals == 1
    keeper.cancel()


async def test_a_refused_renewal_loses_the_lease_for_good() -> None:
    clock, ledger, lost = Clock(), Ledger(), list[str]()
    lease = _lease(clock, ledger, lost)
    ledger.answer = False
    await asyncio.wait_for(lease.keep(0), 5)  # ends: nothing more to renew
    assert not lease.valid()
    assert lost
    assert "refused" in lost[0]
    ledger.answer = True
    with pytest.raises(LeaseLostError):
        await lease.admit()


async def test_a_renewal_granted_after_a_pause_longer_than_the_lease_still_loses_it() -> None:
    clock, ledger, lost = Clock(), Ledger(), list[str]()
    lease = _lease(clock, ledger, lost)

    async def paused_renewal() -> bool:
        clock.now += 11.0  # the process was stopped while the renewal was on its way
        return True

    lease._renew = paused_renewal
    await asyncio.wait_for(lease.keep(0), 5)
    assert lost
    assert "not running for 11.0 s" in lost[0]


async def test_a_failing_ledger_is_tolerated_while_the_lease_holds_then_lost() -> None:
    clock, ledger, lost = Clock(), Ledger(), list[str]()
    notices: list[str] = []
    lease = Lease(10.0, ledger.renew, on_lost=lost.append, notice=notices.append, clock=clock)
    ledger.answer = LedgerError("ledger postgresql://u:***@h/db: renewing the lease failed")

    async def tick(_: float) -> None:
        clock.now += 1.0

    lease._sleep = tick
    await asyncio.wait_for(lease.keep(1.0), 5)
    # Said once as renewals fail, and once more as the lease is lost (as it happens).
    assert len(notices) == 2
    assert "renewal failed" in notices[0]
    assert "***" in notices[0]
    assert notices[1].startswith("lease lost: ")
    assert lost
    assert "no renewal reached the ledger for 10.0 s" in lost[0]
    assert 9 <= ledger.renewals <= 11


async def test_a_renewal_that_never_answers_cannot_hold_the_lease_up() -> None:
    # A real (short) clock: the renewal hangs for good, as on a blackholed link.
    ledger, lost = Ledger(), list[str]()
    ledger.answer = None
    lease = Lease(0.3, ledger.renew, on_lost=lost.append)
    await asyncio.wait_for(lease.keep(0.01), 5)
    assert lost
    assert "no renewal reached the ledger" in lost[0]
    assert ledger.renewals == 1  # the stuck renewal is not piled upon


async def test_delivery_never_starts_a_request_once_the_lease_is_lost() -> None:
    clock, ledger = Clock(), Ledger()
    control = RunControl()
    lease = Lease(10.0, ledger.renew, on_lost=control.lose_lease, clock=clock)
    record = FeedbackRecord(assistant_id="aia_asst_x", session_id="s1", score=0.5)
    with FakeServer(FakeState()) as server:
        auth = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
            delivery = Delivery(
                FeedbackClient(session, server.url), max_attempts=3, rate=None,
                control=control, lease=lease,
            )  # fmt: skip
            first = await delivery.send(Accepted.of("in.csv:2", record))
            clock.now += 10.0  # no renewal since: the lease ran out
            second = await delivery.send(Accepted.of("in.csv:3", record))
        assert first.status is Status.SENT
        assert second.status is Status.FAILED
        assert second.attempts == 0
        assert (second.error_message or "").startswith("not sent: lease lost")
        assert server.state.posts_received == 1
    assert control.lease_lost
    assert (control.reason or "").startswith("lease lost")


class _LapsesOnce:
    """Valid when delivery asks; due a renewal at the last check, as the request is written,
    once (the process was held up between the two), then renewed."""

    def __init__(self) -> None:
        self.checks = 0

    def valid(self) -> bool:
        return True

    async def admit(self) -> None:
        return None

    def check(self) -> None:
        self.checks += 1
        if self.checks == 1:
            raise LeaseLapsedError("not sent: the lease is due a renewal")


async def test_the_last_check_as_the_request_is_written_stops_it_unwritten() -> None:
    gate = _LapsesOnce()
    record = FeedbackRecord(assistant_id="aia_asst_x", session_id="s1", score=0.5)
    with FakeServer(FakeState()) as server:
        auth = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
            client = FeedbackClient(session, server.url, last_check=gate.check)
            delivery = Delivery(client, max_attempts=1, rate=None, control=RunControl(),
                                lease=gate)  # fmt: skip
            outcome = await delivery.send(Accepted.of("in.csv:2", record))
            # A List request carries no check: reconciliation reads whatever the lease says.
            await client.list_page("aia_asst_x")
        assert outcome.status is Status.SENT
        assert outcome.attempts == 1
        assert server.state.posts_received == 1
        assert gate.checks == 2
        assert delivery.retries == 0


async def test_a_body_over_a_mebibyte_is_checked_as_it_is_written_too() -> None:
    checks: list[int] = []
    record = FeedbackRecord(assistant_id="aia_asst_x", session_id="s1", text="x" * (1 << 21))
    with FakeServer(FakeState()) as server:
        auth = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
            client = FeedbackClient(session, server.url, last_check=lambda: checks.append(1))
            # The fake API takes at most 1 MiB (as aiohttp's servers do): the request went out.
            with pytest.raises(PermanentApiError, match="413"):
                await client.create("aia_asst_x", record.body())
        assert checks == [1]  # checked as it was written, with no warning about its size
