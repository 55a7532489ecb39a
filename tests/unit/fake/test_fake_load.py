"""The fake API's load modes: 503s beyond N in flight, stalls beyond N at work, answers late
at random. Judged by the server's own counts, never by timing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState, Faults
from pipeline.fake.limiters import SHED, Limiter, Limits

ASSISTANT = "aia_asst_00000000-1111-2222-3333-444444444444"
PATH = f"/v1/Assistants/{ASSISTANT}/Feedbacks"
AUTH = {"Authorization": aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)}


def test_shedding_and_stalling_count_requests_in_flight() -> None:
    shed = Limiter(Limits(shed_above=2))
    assert shed.admit(0.0) is None
    assert shed.admit(0.0) is None
    assert shed.admit(0.0) is SHED
    assert SHED.status == 503
    assert SHED.retry_after is None
    shed.done()
    assert shed.admit(0.0) is None

    stall = Limiter(Limits(stall_above=1))
    assert stall.admit(0.0) is None
    assert not stall.stalls()
    assert stall.admit(0.0) is None
    assert stall.stalls()
    stall.done()  # the stalled one gives its slot back at once
    assert stall.in_flight == 1
    with pytest.raises(ValueError, match="stall_above"):
        Limits(stall_above=0)


async def _post_many(server: FakeServer, n: int) -> list[int]:
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def one(i: int) -> int:
            async with session.post(server.url + PATH, json={"session_id": f"s{i}"}) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_beyond_n_in_flight_a_503_at_once_and_nothing_stored() -> None:
    state = FakeState(faults=Faults(latency_ms=200), limits=Limits(shed_above=2))
    with FakeServer(state) as server:
        statuses = await _post_many(server, 5)
    assert sorted(statuses) == [201, 201, 503, 503, 503]
    assert state.stored_count == 2
    assert state.responses[503] == 3


async def test_beyond_n_at_work_stored_but_answered_late() -> None:
    limits = Limits(stall_above=2, stall_ms=50)
    state = FakeState(faults=Faults(latency_ms=200), limits=limits)
    with FakeServer(state) as server:
        statuses = await _post_many(server, 5)
    assert statuses == [201] * 5
    assert state.stored_count == 5
    assert state.late == 3
    assert state.stats()["late"] == 3


async def test_a_share_answered_late_after_it_was_stored() -> None:
    state = FakeState(faults=Faults(slow_rate=1.0, slow_ms=10))
    with FakeServer(state) as server:
        statuses = await _post_many(server, 3)
    assert statuses == [201] * 3
    assert state.stored_count == 3
    assert state.late == 3
    with pytest.raises(ValueError, match="slow_rate"):
        Faults(slow_rate=1.5)
