"""The Feedback API client over a mocked HTTP layer: URLs, bodies and Twilio error parsing."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest.mock import Mock

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from pipeline.delivery.answers import parse_retry_after, read_capped
from pipeline.delivery.client import NOT_THE_API_AFTER, FeedbackClient
from pipeline.delivery.retry import is_retryable
from pipeline.errors import (
    Ambiguous,
    AmbiguousApiError,
    AmbiguousTransportError,
    ApiError,
    AuthError,
    BaseUrlError,
    NotTheApiError,
    PermanentApiError,
    RedirectError,
    RetryableApiError,
    TransportError,
    UnconfirmedError,
)

BASE = "https://assistants.test"
ASSISTANT = "aia_asst_00000000-1111-2222-3333-444444444444"
FEEDBACKS = f"{BASE}/v1/Assistants/{ASSISTANT}/Feedbacks"
ANY = re.compile(r".*")


class MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", Mock(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[FeedbackClient]:
    async with aiohttp.ClientSession() as session:
        yield FeedbackClient(session, BASE + "/")


def reply(
    mock: aioresponses,
    status: int,
    *,
    url: str | re.Pattern[str] = ANY,
    method: str = "POST",
    **kwargs: Any,
) -> None:
    mock.add(url, method, status=status, response_class=MockResponse, **kwargs)


def sent_requests(mock: aioresponses) -> list[tuple[str, URL, dict[str, Any]]]:
    return [(m, u, call.kwargs) for (m, u), calls in mock.requests.items() for call in calls]


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


async def create_error(client: FeedbackClient) -> ApiError:
    with pytest.raises(ApiError) as info:
        await client.create(ASSISTANT, {"session_id": "s"})
    return info.value


# --- create ------------------------------------------------------------------------------------


async def test_create_returns_the_feedback_id(mock: aioresponses, client: FeedbackClient) -> None:
    reply(mock, 201, url=FEEDBACKS, payload={"id": "aia_fdbk_123", "score": 0.5})
    body = {"session_id": "s1", "score": 0.5, "text": "good"}

    created = await client.create(ASSISTANT, body)

    assert created.feedback_id == "aia_fdbk_123"
    assert created.status == 201
    ((method, url, kwargs),) = sent_requests(mock)
    assert method == "POST"
    assert str(url) == FEEDBACKS
    # A payload of its own type: no header merge per request.
    assert json.loads(kwargs["data"].decode()) == body
    assert kwargs["data"].content_type == "application/json"


@pytest.mark.parametrize(
    ("status", "kwargs", "why"),
    [
        (201, {"body": "created", "content_type": "text/plain"}, "no 'aia_fdbk_' id"),
        (201, {"payload": {"ok": True}}, "no 'aia_fdbk_' id"),
        (201, {"payload": {"id": "FB123"}}, "no 'aia_fdbk_' id"),
        (201, {"payload": {"id": 7}}, "no 'aia_fdbk_' id"),
        (201, {"payload": ["aia_fdbk_1"]}, "no 'aia_fdbk_' id"),
        (201, {"body": "[" * 100_000}, "no 'aia_fdbk_' id"),
        (200, {"body": "<html>Sign in</html>", "content_type": "text/html"}, "not 201"),
        (200, {"payload": {"id": "aia_fdbk_1"}}, "not 201"),
        (202, {"payload": {"id": "aia_fdbk_1"}}, "not 201"),
        (204, {}, "not 201"),
    ],
)
async def test_a_2xx_without_a_feedback_is_not_success(
    mock: aioresponses, client: FeedbackClient, status: int, kwargs: dict[str, Any], why: str
) -> None:
    reply(mock, status, **kwargs)
    with pytest.raises(UnconfirmedError, match=re.escape(why)) as caught:
        await client.create(ASSISTANT, {"session_id": "s"})
    error = caught.value
    # May be stored: never resent blindly, settled by reconciliation.
    assert isinstance(error, Ambiguous)
    assert not is_retryable(error)
    assert error.status == status


async def test_an_oversized_201_is_not_read_whole(
    mock: aioresponses, client: FeedbackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioresponses cannot serve a body over aiohttp's buffer; the cap is made small instead
    # (the real one meets a 64 MiB body in test_integration_hostile).
    monkeypatch.setattr("pipeline.delivery.client.MAX_BODY", 1024)
    padding = "x" * 1100
    reply(mock, 201, payload={"id": "aia_fdbk_1", "padding": padding})
    with pytest.raises(UnconfirmedError, match="a body too large"):
        await client.create(ASSISTANT, {"session_id": "s"})


async def test_a_201_echoing_a_long_text_is_read(
    mock: aioresponses, client: FeedbackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.delivery.client.MAX_BODY", 1024)
    text = "y" * 5000  # over MAX_BODY, but the feedback only echoes what was sent
    reply(mock, 201, payload={"id": "aia_fdbk_1", "session_id": "s", "text": text})
    created = await client.create(ASSISTANT, {"session_id": "s", "text": text})
    assert created.feedback_id == "aia_fdbk_1"


async def test_read_capped_stops_at_the_limit() -> None:
    class Stream:
        def __init__(self) -> None:
            self.served = 0

        async def read(self, n: int) -> bytes:
            self.served += min(n, 1000)
            return b"x" * min(n, 1000)  # an endless body, 1000 bytes at a time

        def at_eof(self) -> bool:
            return False

    resp = Mock(content_length=None, content=Stream())
    assert await read_capped(resp, 10_000) is None
    assert resp.content.served == 10_001
    resp = Mock(content_length=10_001, content=Stream())
    assert await read_capped(resp, 10_000) is None
    assert resp.content.served == 0  # a declared length over the cap is not even started


async def test_read_capped_takes_a_body_that_came_whole_in_one_read() -> None:
    class Whole:
        def __init__(self) -> None:
            self.reads = 0

        async def read(self, n: int) -> bytes:
            self.reads += 1
            return b'{"id": "aia_fdbk_1"}' if self.reads == 1 else b""

        def at_eof(self) -> bool:
            return self.reads >= 1

    resp = Mock(content_length=None, content=Whole())
    assert await read_capped(resp, 10_000) == b'{"id": "aia_fdbk_1"}'
    assert resp.content.reads == 1
    resp = Mock(content_length=None, content=Whole())
    assert await read_capped(resp, 5) is None  # over the cap, even when whole


async def test_a_huge_error_body_is_not_read_whole(
    mock: aioresponses, client: FeedbackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.delivery.client.MAX_BODY", 1024)
    reply(mock, 400, payload={"code": 20001, "message": "x" * 1100}, reason="Bad")
    with pytest.raises(PermanentApiError) as caught:
        await client.create(ASSISTANT, {"session_id": "s"})
    assert caught.value.code is None
    assert caught.value.message == "Bad"


async def test_many_2xx_without_a_feedback_and_none_with_one_is_not_the_api(
    mock: aioresponses, client: FeedbackClient
) -> None:
    for _ in range(NOT_THE_API_AFTER):
        reply(mock, 200, body="<html>portal</html>", content_type="text/html")
    for _ in range(NOT_THE_API_AFTER - 1):
        with pytest.raises(UnconfirmedError):
            await client.create(ASSISTANT, {"session_id": "s"})
    with pytest.raises(NotTheApiError) as caught:
        await client.create(ASSISTANT, {"session_id": "s"})
    message = str(caught.value)
    assert message.startswith(f"--base-url {BASE} is not the Feedback API")
    assert "\n" not in message
    assert isinstance(caught.value, Ambiguous | BaseUrlError)


async def test_after_one_real_feedback_a_bad_2xx_is_only_ambiguous(
    mock: aioresponses, client: FeedbackClient
) -> None:
    reply(mock, 201, payload={"id": "aia_fdbk_1"})
    for _ in range(NOT_THE_API_AFTER * 2):
        reply(mock, 200, body="<html>portal</html>", content_type="text/html")
    assert (await client.create(ASSISTANT, {"session_id": "s"})).feedback_id == "aia_fdbk_1"
    for _ in range(NOT_THE_API_AFTER * 2):
        with pytest.raises(UnconfirmedError) as caught:
            await client.create(ASSISTANT, {"session_id": "s"})
        assert not isinstance(caught.value, NotTheApiError)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_redirect_is_never_followed(
    mock: aioresponses, client: FeedbackClient, status: int, method: str
) -> None:
    location = "https://elsewhere.test/v1/Assistants/x/Feedbacks"
    reply(mock, status, method=method, headers={"Location": location})
    reply(mock, 201, url=re.compile(r"https://elsewhere.*"), method=method)
    reply(mock, 200, url=re.compile(r"https://elsewhere.*"), method="GET")

    async def request() -> object:
        if method == "POST":
            return await client.create(ASSISTANT, {"session_id": "s"})
        return await client.list_page(ASSISTANT)

    with pytest.raises(RedirectError) as caught:
        await request()

    message = str(caught.value)
    assert message.startswith(f"--base-url {BASE}: {method} ")
    assert location in message
    assert f"HTTP {status}" in message
    assert [u.host for _, u, _ in sent_requests(mock)] == ["assistants.test"]
    assert isinstance(caught.value, BaseUrlError)
    assert not isinstance(caught.value, Ambiguous)


async def test_a_redirect_location_is_printed_on_one_line(
    mock: aioresponses, client: FeedbackClient
) -> None:
    reply(mock, 302, headers={"Location": "https://x.test/\x1b[31m" + "a" * 1000})
    with pytest.raises(RedirectError) as caught:
        await client.create(ASSISTANT, {"session_id": "s"})
    message = str(caught.value)
    assert "\x1b" not in message
    assert "..." in message
    assert len(message) < 600


async def test_assistant_id_is_one_quoted_path_segment(
    mock: aioresponses, client: FeedbackClient
) -> None:
    reply(mock, 201, payload={"id": "aia_fdbk_1"})

    await client.create("a/b c?d#e%f", {"session_id": "s"})

    ((_, url, _),) = sent_requests(mock)
    assert url.raw_path == "/v1/Assistants/a%2Fb%20c%3Fd%23e%25f/Feedbacks"
    assert url.raw_query_string == ""
    assert url.host == "assistants.test"


def test_feedbacks_url_quotes_everything(client: FeedbackClient) -> None:
    url = client.feedbacks_url("x/../y")
    assert url.raw_path == "/v1/Assistants/x%2F..%2Fy/Feedbacks"
    assert str(url).startswith(BASE + "/v1/")


async def test_permanent_error_is_parsed(mock: aioresponses, client: FeedbackClient) -> None:
    reply(mock, 400, payload=twilio_error(20001, "Invalid parameter: score", 400))

    error = await create_error(client)

    assert type(error) is PermanentApiError
    assert error.status == 400
    assert error.code == 20001
    assert error.message == "Invalid parameter: score"
    assert error.more_info == "https://www.twilio.com/docs/errors/20001"
    assert error.retry_after is None
    assert str(error) == "HTTP 400 (Twilio error 20001): Invalid parameter: score"


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_other_4xx_are_permanent(
    mock: aioresponses, client: FeedbackClient, status: int
) -> None:
    reply(mock, status, payload=twilio_error(20000 + status, "nope", status))
    error = await create_error(client)
    assert type(error) is PermanentApiError
    assert error.status == status


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors(mock: aioresponses, client: FeedbackClient, status: int) -> None:
    reply(mock, status, payload=twilio_error(20003, "Authenticate", status))

    error = await create_error(client)

    assert type(error) is AuthError
    assert error.status == status
    assert error.code == 20003


async def test_429_retry_after_seconds(mock: aioresponses, client: FeedbackClient) -> None:
    reply(
        mock,
        429,
        payload=twilio_error(20429, "Too Many Requests", 429),
        headers={"Retry-After": "7"},
    )

    error = await create_error(client)

    assert type(error) is RetryableApiError
    assert error.status == 429
    assert error.code == 20429
    assert error.retry_after == 7.0


async def test_429_retry_after_http_date(mock: aioresponses, client: FeedbackClient) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    reply(mock, 429, payload=twilio_error(20429, "Too Many", 429), headers={"Retry-After": when})

    error = await create_error(client)

    assert type(error) is RetryableApiError
    assert error.retry_after is not None
    assert 110 <= error.retry_after <= 121


async def test_429_without_retry_after(mock: aioresponses, client: FeedbackClient) -> None:
    reply(mock, 429, payload=twilio_error(20429, "Too Many", 429))
    error = await create_error(client)
    assert type(error) is RetryableApiError
    assert error.retry_after is None


@pytest.mark.parametrize("status", [408, 503, 501, 505])
async def test_server_refusals_are_retryable(
    mock: aioresponses, client: FeedbackClient, status: int
) -> None:
    reply(mock, status, payload=twilio_error(20500, "Internal error", status))
    error = await create_error(client)
    assert type(error) is RetryableApiError
    assert error.status == status
    assert error.message == "Internal error"


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_errors_after_which_the_feedback_may_exist_are_ambiguous(
    mock: aioresponses, client: FeedbackClient, status: int
) -> None:
    reply(mock, status, payload=twilio_error(20500, "Internal error", status))
    error = await create_error(client)
    assert type(error) is AmbiguousApiError
    assert isinstance(error, Ambiguous)
    assert not is_retryable(error)
    assert error.status == status


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (aiohttp.ClientConnectorError(Mock(), OSError(111, "Connection refused")), False),
        (aiohttp.ConnectionTimeoutError("connect timeout"), False),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.SocketTimeoutError("read timeout"), True),
        (TimeoutError(), True),
        (aiohttp.ClientPayloadError("truncated"), True),
    ],
    ids=[
        "refused",
        "connect-timeout",
        "disconnected",
        "reset",
        "read-timeout",
        "total-timeout",
        "payload",
    ],
)
async def test_transport_failures_are_classified_by_whether_the_request_left(
    mock: aioresponses, client: FeedbackClient, exc: Exception, ambiguous: bool
) -> None:
    mock.post(ANY, exception=exc)
    with pytest.raises(TransportError) as info:
        await client.create(ASSISTANT, {"session_id": "s"})
    assert isinstance(info.value, AmbiguousTransportError) is ambiguous
    assert is_retryable(info.value) is not ambiguous


async def test_non_json_error_body(mock: aioresponses, client: FeedbackClient) -> None:
    reply(mock, 502, body="<html>upstream down</html>", content_type="text/html")

    error = await create_error(client)

    assert type(error) is AmbiguousApiError
    assert error.status == 502
    assert error.code is None
    assert error.more_info is None
    assert error.message == "Bad Gateway"


async def test_error_json_with_wrong_types(mock: aioresponses, client: FeedbackClient) -> None:
    reply(
        mock,
        400,
        payload={"code": "20001", "message": ["x"], "more_info": 5},
        reason="Bad Request",
    )

    error = await create_error(client)

    assert type(error) is PermanentApiError
    assert error.code is None
    assert error.more_info is None
    assert error.message == "Bad Request"


async def test_connection_error_is_a_transport_error(
    mock: aioresponses, client: FeedbackClient
) -> None:
    mock.post(ANY, exception=aiohttp.ClientConnectionError("Connection refused"))

    with pytest.raises(TransportError, match="Connection refused") as info:
        await client.create(ASSISTANT, {"session_id": "s"})
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError)


@pytest.mark.parametrize(
    "exc", [TimeoutError(), aiohttp.ServerTimeoutError("read timeout")], ids=["timeout", "server"]
)
async def test_timeout_is_a_transport_error(
    mock: aioresponses, client: FeedbackClient, exc: Exception
) -> None:
    mock.post(ANY, exception=exc)

    with pytest.raises(TransportError, match="timed out"):
        await client.create(ASSISTANT, {"session_id": "s"})


async def test_transport_error_on_list(mock: aioresponses, client: FeedbackClient) -> None:
    mock.get(ANY, exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(TransportError):
        await client.list_page(ASSISTANT)


# --- list_page ---------------------------------------------------------------------------------


async def test_list_page_follows_next_page_url(mock: aioresponses, client: FeedbackClient) -> None:
    next_url = f"{FEEDBACKS}?PageSize=2&Page=1&PageToken=PT123"
    reply(
        mock,
        200,
        method="GET",
        url=f"{FEEDBACKS}?PageSize=2",
        payload={
            "feedbacks": [{"id": "aia_fdbk_1"}, {"id": "aia_fdbk_2"}],
            "meta": {"page": 0, "page_size": 2, "next_page_url": next_url},
        },
    )
    reply(
        mock,
        200,
        method="GET",
        url=next_url,
        payload={"feedbacks": [{"id": "aia_fdbk_3"}], "meta": {"next_page_url": None}},
    )

    first = await client.list_page(ASSISTANT, page_size=2)
    assert [f["id"] for f in first.feedbacks] == ["aia_fdbk_1", "aia_fdbk_2"]
    assert first.next_page_url == next_url

    second = await client.list_page(ASSISTANT, url=first.next_page_url)
    assert [f["id"] for f in second.feedbacks] == ["aia_fdbk_3"]
    assert second.next_page_url is None

    # aioresponses keys requests by URL with the query sorted: compare parsed queries.
    requested = [(method, url.path, dict(url.query)) for method, url, _ in sent_requests(mock)]
    path = URL(FEEDBACKS).path
    assert requested == [
        ("GET", path, {"PageSize": "2"}),
        ("GET", path, {"PageSize": "2", "Page": "1", "PageToken": "PT123"}),
    ]


@pytest.mark.parametrize(
    ("next_page_url", "resolved"),
    [
        (
            "/v1/Assistants/a/Feedbacks?PageToken=PT1",
            f"{BASE}/v1/Assistants/a/Feedbacks?PageToken=PT1",
        ),
        ("?PageToken=PT1", f"{FEEDBACKS}?PageToken=PT1"),
        (f"{FEEDBACKS}?PageToken=PT1", f"{FEEDBACKS}?PageToken=PT1"),
    ],
)
async def test_a_relative_next_page_url_is_resolved(
    mock: aioresponses, client: FeedbackClient, next_page_url: str, resolved: str
) -> None:
    meta = {"next_page_url": next_page_url}
    reply(mock, 200, method="GET", payload={"feedbacks": [], "meta": meta})
    page = await client.list_page(ASSISTANT)
    assert page.next_page_url == resolved
    reply(mock, 200, method="GET", payload={"feedbacks": []})
    await client.list_page(ASSISTANT, url=page.next_page_url)
    assert str(sent_requests(mock)[-1][1]) == resolved


async def test_a_next_page_on_another_origin_is_refused(client: FeedbackClient) -> None:
    for url in ("https://evil.test/v1/x", "//evil.test/v1/x", "http://assistants.test/v1/x"):
        with pytest.raises(PermanentApiError, match="another host"):
            await client.list_page(ASSISTANT, url=url)


async def test_list_page_default_page_size(mock: aioresponses, client: FeedbackClient) -> None:
    reply(mock, 200, method="GET", payload={"feedbacks": []})

    page = await client.list_page(ASSISTANT)

    assert page.feedbacks == []
    assert page.next_page_url is None
    ((_, url, _),) = sent_requests(mock)
    assert url.query["PageSize"] == "1000"


async def test_list_page_without_feedbacks_array(
    mock: aioresponses, client: FeedbackClient
) -> None:
    reply(mock, 200, method="GET", payload={"items": []})
    with pytest.raises(PermanentApiError, match="feedbacks"):
        await client.list_page(ASSISTANT)


async def test_list_page_error_status(mock: aioresponses, client: FeedbackClient) -> None:
    reply(mock, 401, method="GET", payload=twilio_error(20003, "Authenticate", 401))
    with pytest.raises(AuthError):
        await client.list_page(ASSISTANT)


# --- Retry-After parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("7", 7.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_against_a_given_now() -> None:
    now = 1_700_000_000.0
    value = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(value, now=now) == pytest.approx(30.0)
