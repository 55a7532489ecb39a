"""The fake Feedback API, exercised over real sockets like the pipeline uses it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.fake import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    FakeServer,
    FakeState,
    Faults,
    serve,
)
from pipeline.fake.hostile import Hostile
from pipeline.fake.state import TokenBucket

ASSISTANT = "aia_asst_00000000-1111-2222-3333-444444444444"
PATH = f"/v1/Assistants/{ASSISTANT}/Feedbacks"
GOOD_AUTH = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(FakeState()) as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": GOOD_AUTH}) as s:
        yield s


async def post(
    session: aiohttp.ClientSession, server: FakeServer, body: Any, path: str = PATH
) -> tuple[int, Any, str]:
    async with session.post(server.url + path, json=body) as resp:
        text = await resp.text()
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data, text


def assert_twilio_error(data: Any, status: int, code: int) -> None:
    assert data["status"] == status
    assert data["code"] == code
    assert data["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert isinstance(data["message"], str)
    assert data["message"]


async def test_auth_required_and_token_never_echoed(server: FakeServer) -> None:
    secret = "wrong-secret-1234567890"
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, secret)},
        {"Authorization": aiohttp.encode_basic_auth("AC" + "1" * 32, DEFAULT_AUTH_TOKEN)},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer " + DEFAULT_AUTH_TOKEN},
    ]
    async with aiohttp.ClientSession() as s:
        for headers in attempts:
            url = server.url + PATH
            async with s.post(url, json={"session_id": "s"}, headers=headers) as resp:
                text = await resp.text()
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Basic")
                assert_twilio_error(await resp.json(), 401, 20003)
                assert secret not in text
                assert DEFAULT_AUTH_TOKEN not in text
        async with s.get(server.url + PATH) as resp:
            assert resp.status == 401
    async with aiohttp.ClientSession(headers={"Authorization": GOOD_AUTH}) as s:
        status, _, text = await post(s, server, {"session_id": "s"})
        assert status == 201
        assert DEFAULT_AUTH_TOKEN not in text
    state = server.state
    assert state.stored_count == 1
    assert state.posts_received == len(attempts) + 1
    assert state.responses == {401: len(attempts) + 1, 201: 1}


async def test_api_key_acts_for_the_account(server: FakeServer) -> None:
    server.state.add_api_key("SK" + "a" * 32, "key-secret")
    headers = {"Authorization": aiohttp.encode_basic_auth("SK" + "a" * 32, "key-secret")}
    async with aiohttp.ClientSession(headers=headers) as s:
        status, data, _ = await post(s, server, {"session_id": "s"})
    assert status == 201
    assert data["account_sid"] == DEFAULT_ACCOUNT_SID


async def test_created_resource_shape(server: FakeServer, session: aiohttp.ClientSession) -> None:
    body = {"session_id": "sess-1", "message_id": "aia_msg_42", "score": 1, "text": "great"}
    status, data, _ = await post(session, server, body)
    assert status == 201
    assert set(data) == {
        "id",
        "assistant_id",
        "account_sid",
        "user_sid",
        "session_id",
        "message_id",
        "score",
        "text",
        "date_created",
        "date_updated",
    }
    assert re.fullmatch(
        r"aia_fdbk_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", data["id"]
    )
    assert re.fullmatch(r"AC[0-9a-fA-F]{32}", data["account_sid"])
    assert re.fullmatch(r"US[0-9a-fA-F]{32}", data["user_sid"])
    assert ISO_UTC.match(data["date_created"])
    assert ISO_UTC.match(data["date_updated"])
    assert (data["assistant_id"], data["session_id"], data["message_id"]) == (
        ASSISTANT,
        "sess-1",
        "aia_msg_42",
    )
    assert (data["score"], data["text"]) == (1.0, "great")
    assert server.state.feedbacks(ASSISTANT) == [data]

    status, minimal, _ = await post(session, server, {"session_id": "sess-2"})
    assert status == 201
    assert (minimal["message_id"], minimal["score"], minimal["text"]) == (None, None, None)
    assert minimal["id"] != data["id"]


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("missing session_id", b'{"score": 0.5}', "application/json"),
    ("session_id not a string", b'{"session_id": 7}', "application/json"),
    ("session_id null", b'{"session_id": null}', "application/json"),
    ("message_id wrong prefix", b'{"session_id": "s", "message_id": "msg_1"}', "application/json"),
    (
        "message_id prefix only",
        b'{"session_id": "s", "message_id": "aia_msg_"}',
        "application/json",
    ),
    ("message_id null", b'{"session_id": "s", "message_id": null}', "application/json"),
    ("score above 1", b'{"session_id": "s", "score": 1.5}', "application/json"),
    ("score below 0", b'{"session_id": "s", "score": -0.1}', "application/json"),
    ("score bool", b'{"session_id": "s", "score": true}', "application/json"),
    ("score string", b'{"session_id": "s", "score": "0.5"}', "application/json"),
    ("score NaN", b'{"session_id": "s", "score": NaN}', "application/json"),
    ("text not a string", b'{"session_id": "s", "text": 5}', "application/json"),
    ("unknown field", b'{"session_id": "s", "rating": 5}', "application/json"),
    ("array body", b'[{"session_id": "s"}]', "application/json"),
    ("string body", b'"s"', "application/json"),
    ("invalid JSON", b'{"session_id": ', "application/json"),
    ("empty body", b"", "application/json"),
    ("form encoded", b"session_id=s", "application/x-www-form-urlencoded"),
    ("not utf-8", b'{"session_id": "\xff"}', "application/json"),
]


@pytest.mark.parametrize(
    ("raw", "content_type"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
async def test_invalid_bodies_are_400(
    server: FakeServer, session: aiohttp.ClientSession, raw: bytes, content_type: str
) -> None:
    url = server.url + PATH
    async with session.post(url, data=raw, headers={"Content-Type": content_type}) as resp:
        assert resp.status == 400
        assert_twilio_error(await resp.json(), 400, 20001)
    assert server.state.stored_count == 0
    assert server.state.responses == {400: 1}


async def test_unknown_assistant_is_404(session: aiohttp.ClientSession) -> None:
    with FakeServer(FakeState(known_assistants={ASSISTANT})) as srv:
        status, data, _ = await post(
            session, srv, {"session_id": "s"}, "/v1/Assistants/other/Feedbacks"
        )
        assert status == 404
        assert_twilio_error(data, 404, 20404)
        async with session.get(srv.url + "/v1/Assistants/other/Feedbacks") as resp:
            assert resp.status == 404
        status, _, _ = await post(session, srv, {"session_id": "s"})
        assert status == 201
        assert srv.state.stored_count == 1


async def test_fail_rate_one_answers_503_without_storing(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.faults.fail_rate = 1.0
    for _ in range(3):
        status, data, _ = await post(session, server, {"session_id": "s"})
        assert status == 503
        assert_twilio_error(data, 503, 20503)
    assert server.state.stored_count == 0
    assert server.state.responses == {503: 3}


async def test_fail_rate_is_reproducible_with_a_seed(session: aiohttp.ClientSession) -> None:
    outcomes: list[list[int]] = []
    for _ in range(2):
        with FakeServer(FakeState(faults=Faults(fail_rate=0.5, seed=7))) as srv:
            statuses = [(await post(session, srv, {"session_id": "s"}))[0] for _ in range(20)]
            outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {201, 503}


async def test_throttle_answers_429_with_retry_after(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.faults.throttle_rps = 0.5  # burst of 1, then one token per 2 s
    first, _, _ = await post(session, server, {"session_id": "s"})
    assert first == 201
    async with session.post(server.url + PATH, json={"session_id": "s"}) as resp:
        assert resp.status == 429
        assert_twilio_error(await resp.json(), 429, 20429)
        assert 1 <= int(resp.headers["Retry-After"]) <= 2
    assert server.state.stored_count == 1


async def test_throttle_allows_a_burst(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.state.faults.throttle_rps = 3
    results = await asyncio.gather(*(post(session, server, {"session_id": "s"}) for _ in range(12)))
    statuses = [r[0] for r in results]
    assert statuses.count(201) >= 3
    assert statuses.count(429) >= 1
    assert server.state.stored_count == statuses.count(201)


def test_token_bucket_refills_over_time() -> None:
    now = [100.0]
    bucket = TokenBucket(2.0, clock=lambda: now[0])
    assert bucket.take() is None
    assert bucket.take() is None
    wait = bucket.take()
    assert wait == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() is None
    assert TokenBucket(0.25, clock=lambda: now[0]).capacity == 1.0


async def test_reset_fault_stores_then_drops_the_connection(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.faults.reset_rate = 1.0
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await post(session, server, {"session_id": "lost-answer"})
    state = server.state
    assert state.stored_count == 1
    assert state.feedbacks()[0]["session_id"] == "lost-answer"
    assert state.resets == 1
    assert state.posts_received == 1
    assert state.responses == {}
    state.faults.reset_rate = 0.0
    status, _, _ = await post(session, server, {"session_id": "next"})
    assert status == 201


@pytest.mark.parametrize("error_status", [500, 502, 503, 504])
async def test_error_status_outage(
    server: FakeServer, session: aiohttp.ClientSession, error_status: int
) -> None:
    server.state.faults.error_status = error_status
    status, data, _ = await post(session, server, {"session_id": "s"})
    assert status == error_status
    assert_twilio_error(data, error_status, 20000 + error_status)
    assert server.state.stored_count == 0
    async with aiohttp.ClientSession() as anonymous:
        status, _, _ = await post(anonymous, server, {"session_id": "s"})
    assert status == 401  # auth is checked before the outage


async def test_latency_delays_answers(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.state.faults.latency_ms = 200
    started = time.monotonic()
    status, _, _ = await post(session, server, {"session_id": "s"})
    assert status == 201
    assert time.monotonic() - started >= 0.19


async def test_list_paginates_in_creation_order(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    for i in range(7):
        assert (await post(session, server, {"session_id": f"s{i}"}))[0] == 201
    await post(session, server, {"session_id": "other"}, "/v1/Assistants/other/Feedbacks")

    url: str | None = server.url + PATH + "?PageSize=3"
    pages: list[dict[str, Any]] = []
    while url is not None:
        async with session.get(url) as resp:
            assert resp.status == 200
            pages.append(await resp.json())
        url = pages[-1]["meta"]["next_page_url"]

    assert [len(p["feedbacks"]) for p in pages] == [3, 3, 1]
    sessions = [f["session_id"] for p in pages for f in p["feedbacks"]]
    assert sessions == [f"s{i}" for i in range(7)]
    metas = [p["meta"] for p in pages]
    assert [m["page"] for m in metas] == [0, 1, 2]
    assert all(m["page_size"] == 3 and m["key"] == "feedbacks" for m in metas)
    assert all(m["first_page_url"].startswith(server.url + PATH) for m in metas)
    assert metas[0]["previous_page_url"] is None
    assert metas[2]["previous_page_url"] == metas[0]["next_page_url"]
    async with session.get(metas[1]["previous_page_url"]) as resp:
        assert [f["session_id"] for f in (await resp.json())["feedbacks"]] == ["s0", "s1", "s2"]
    async with session.get(server.url + PATH) as resp:
        default = await resp.json()
    assert default["meta"]["page_size"] == 50
    assert len(default["feedbacks"]) == 7


@pytest.mark.parametrize(
    "query",
    ["PageSize=0", "PageSize=1001", "PageSize=abc", "Page=-1", "PageToken=bogus", "PageToken=PT!!"],
)
async def test_list_rejects_bad_query(
    server: FakeServer, session: aiohttp.ClientSession, query: str
) -> None:
    async with session.get(f"{server.url}{PATH}?{query}") as resp:
        assert resp.status == 400
        assert_twilio_error(await resp.json(), 400, 20001)


async def test_control_endpoints(server: FakeServer, session: aiohttp.ClientSession) -> None:
    await post(session, server, {"session_id": "s"})
    async with aiohttp.ClientSession() as control:  # no credentials needed
        async with control.post(server.url + "/_fake/faults", json={"fail_rate": 1}) as resp:
            assert resp.status == 200
            assert (await resp.json())["fail_rate"] == 1
        assert (await post(session, server, {"session_id": "s"}))[0] == 503
        async with control.post(server.url + "/_fake/faults", json={"nope": 1}) as resp:
            assert resp.status == 400
        async with control.post(server.url + "/_fake/faults", json={"fail_rate": 2}) as resp:
            assert resp.status == 400
        assert server.state.faults.fail_rate == 1
        async with control.get(server.url + "/_fake/stats") as resp:
            stats = await resp.json()
        assert stats["posts_received"] == 2
        assert stats["stored"] == 1
        assert stats["responses"] == {"201": 1, "503": 1}
        assert stats["duplicates"] == 0
        async with control.post(server.url + "/_fake/reset") as resp:
            assert resp.status == 200
        assert server.state.stored_count == 0
        assert server.state.posts_received == 0
        assert server.state.responses == {}


async def test_duplicates_counting(server: FakeServer, session: aiohttp.ClientSession) -> None:
    same = {"session_id": "s", "message_id": "aia_msg_1", "score": 0.5, "text": "ok"}
    for body in (same, same, same, {"session_id": "s"}, {"session_id": "t"}):
        assert (await post(session, server, body))[0] == 201
    key = (ASSISTANT, "s", "aia_msg_1", 0.5, "ok")
    assert server.state.duplicates() == {key: 3}
    assert server.state.content_counts()[(ASSISTANT, "t", None, None, None)] == 1
    assert server.state.stats()["duplicates"] == 2


def test_faults_validation() -> None:
    with pytest.raises(ValueError, match="fail_rate must be between 0 and 1"):
        Faults(fail_rate=1.5)
    with pytest.raises(ValueError, match="throttle_rps must be > 0"):
        Faults(throttle_rps=0)
    with pytest.raises(ValueError, match="error_status must be an HTTP error status"):
        Faults(error_status=200)
    faults = Faults()
    with pytest.raises(ValueError, match="reset_rate must be between 0 and 1"):
        faults.update({"latency_ms": 5, "reset_rate": -1})
    assert faults.latency_ms == 0  # nothing applied when any change is invalid


def test_usable_from_sync_code_and_stops_cleanly() -> None:
    async def create(url: str) -> int:
        async with (
            aiohttp.ClientSession(headers={"Authorization": GOOD_AUTH}) as s,
            s.post(url + PATH, json={"session_id": "s"}) as resp,
        ):
            return resp.status

    srv = FakeServer()
    srv.start()
    url = srv.url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert asyncio.run(create(url)) == 201
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(create(url))
    with pytest.raises(RuntimeError):
        _ = srv.url


async def announced(task: asyncio.Task[None], capsys: pytest.CaptureFixture[str]) -> str:
    """What serve() printed once its announcement appears (polled, bounded by a deadline)."""
    deadline = time.monotonic() + 10
    out = ""
    while "listening on" not in out and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
    return out


async def test_serve_announces_url_and_stops_on_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    state = FakeState()
    task = asyncio.create_task(serve(state, "127.0.0.1", 0))
    try:
        out = await announced(task, capsys)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) ", out)
        assert match is not None, out
        assert DEFAULT_ACCOUNT_SID in out
        async with (
            aiohttp.ClientSession(headers={"Authorization": GOOD_AUTH}) as s,
            s.post(match.group(1) + PATH, json={"session_id": "s"}) as resp,
        ):
            assert resp.status == 201
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert state.stored_count == 1


async def test_serve_hides_a_real_token(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(serve(FakeState(auth_token="real-looking-secret"), "127.0.0.1", 0))
    try:
        out = await announced(task, capsys)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "listening on" in out
    assert "real-looking-secret" not in out


# --- hostile modes -----------------------------------------------------------------------------


async def set_hostile(server: FakeServer, hostile: Any) -> Any:
    async with (
        aiohttp.ClientSession() as control,
        control.post(server.url + "/_fake/faults", json={"hostile": hostile}) as resp,
    ):
        return resp.status, await resp.json()


async def test_hostile_modes_are_set_and_checked_through_the_control_endpoint(
    server: FakeServer,
) -> None:
    status, faults = await set_hostile(server, "portal")
    assert status == 200
    assert faults["hostile"]["mode"] == "portal"
    assert faults["hostile"]["status"] == 200
    for bad in ("nope", {"mode": "redirect", "status": 200}, {"mode": "drip", "x": 1}, 5):
        status, body = await set_hostile(server, bad)
        assert status == 400
        assert "hostile" in body["error"]
    assert server.state.faults.hostile == Hostile(mode="portal")
    assert (await set_hostile(server, None))[1]["hostile"] is None


async def test_portal_answers_html_before_checking_credentials(server: FakeServer) -> None:
    server.state.update_faults({"hostile": {"mode": "portal", "status": 202}})
    async with aiohttp.ClientSession() as anonymous:
        for method in ("POST", "GET"):
            async with anonymous.request(method, server.url + PATH, json={}) as resp:
                assert resp.status == 202
                assert resp.content_type == "text/html"
                assert b"<html>" in await resp.read()
    assert server.state.stored_count == 0
    assert server.state.stats()["hostile"] == {"portal": 2}


async def test_redirect_names_its_location(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    hostile = {"mode": "redirect", "status": 308, "location": "https://elsewhere.test/x"}
    server.state.update_faults({"hostile": hostile})
    async with session.post(
        server.url + PATH, json={"session_id": "s"}, allow_redirects=False
    ) as r:
        assert (r.status, r.headers["Location"]) == (308, "https://elsewhere.test/x")
    assert server.state.stored_count == 0


async def test_unconfirmed_stores_and_answers_without_a_feedback(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.update_faults({"hostile": "unconfirmed"})
    status, data, _ = await post(session, server, {"session_id": "s"})
    assert (status, data) == (200, {"ok": True})
    assert server.state.stored_count == 1


async def test_huge_streams_a_valid_feedback_of_the_given_size(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.update_faults({"hostile": {"mode": "huge", "size": 300_000}})
    status, data, text = await post(session, server, {"session_id": "s"})
    assert status == 201
    assert len(text) == 300_000
    assert data["id"] == server.state.feedbacks()[0]["id"]
    assert server.state.hostile_stats["bytes_streamed"] == 300_000


async def test_drip_trickles_the_body(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.state.update_faults({"hostile": {"mode": "drip", "delay_s": 0.001}})
    async with session.post(server.url + PATH, json={"session_id": "s"}) as resp:
        first = await resp.content.read(1000)
        assert len(first) < 50  # one byte at a time, not the whole body at once
        rest = await resp.read()
    assert json.loads(first + rest)["id"] == server.state.feedbacks()[0]["id"]


async def test_store_late_resets_then_stores(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.update_faults({"hostile": {"mode": "store_late", "delay_s": 0.2}})
    with pytest.raises(aiohttp.ClientError):
        await post(session, server, {"session_id": "s"})
    assert server.state.stored_count == 0  # answered (with a reset) before storing
    deadline = time.monotonic() + 10
    while server.state.stored_count == 0:
        assert time.monotonic() < deadline, "never stored"
        await asyncio.sleep(0.01)
    assert server.state.resets == 1


async def test_store_late_can_answer_a_5xx_first(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.state.update_faults({"hostile": {"mode": "store_late", "delay_s": 0.2, "status": 504}})
    status, data, _ = await post(session, server, {"session_id": "s"})
    assert (status, data["status"]) == (504, 504)
    assert server.state.stored_count == 0
    deadline = time.monotonic() + 10
    while server.state.stored_count == 0:
        assert time.monotonic() < deadline, "never stored"
        await asyncio.sleep(0.01)
    with pytest.raises(ValueError, match="status"):
        server.state.update_faults({"hostile": {"mode": "store_late", "status": 201}})


async def list_meta(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        assert resp.status == 200
        meta: dict[str, Any] = (await resp.json())["meta"]
        return meta


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("repeat_cursor", "{url}"),
        ("endless_cursor", "{url}&Page=1"),
        ("relative_cursor", "{path}?PageSize=1&Page=1&PageToken="),
    ],
)
async def test_cursor_modes_bend_next_page_url(
    server: FakeServer, session: aiohttp.ClientSession, mode: str, expected: str
) -> None:
    for i in range(2):
        await post(session, server, {"session_id": f"s{i}"})
    server.state.update_faults({"hostile": mode})
    url = f"{server.url}{PATH}?PageSize=1"
    meta = await list_meta(session, url)
    assert meta["next_page_url"].startswith(expected.format(url=url, path=PATH))
    if mode == "endless_cursor":  # even the last page links on
        last = await list_meta(session, f"{server.url}{PATH}?PageSize=5")
        assert last["next_page_url"] is not None


def test_fake_server_command_refuses_a_bad_hostile_mode_in_one_line() -> None:
    result = CliRunner().invoke(cli, ["fake-server", "--port", "0", "--hostile", "nope"])
    assert result.exit_code == 2
    assert result.output.startswith("feedback-pipeline: fake-server: hostile mode must be")
    assert result.output.count("\n") == 1
