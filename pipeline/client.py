"""The Feedback API client: create a feedback, list pages, parse Twilio's errors.

It speaks HTTP itself (Twilio's SDK dropped this resource) and knows nothing of retries or
ledgers: one call, one request, one typed result or one typed error.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from pipeline.errors import (
    AmbiguousApiError,
    AmbiguousTransportError,
    ApiError,
    AuthError,
    PermanentApiError,
    RetryableApiError,
    TransportError,
)

#: Statuses worth retrying: throttled, request timeout, and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 429})
#: Statuses after which the feedback may exist. 500: the server failed somewhere in handling,
#: possibly after storing; 502: a gateway lost or garbled the answer of a server that may have
#: stored it; 504: a gateway gave up waiting on a server that may still store it. (503 is a
#: refusal to take the work, and 408/429 are answered before any; those are safe to resend.)
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
_JSON = {"Content-Type": "application/json"}
_LARGE_BODY = 1 << 20
#: Failures that happen before the request can have left: nothing to settle, safe to resend.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
MAX_LIST_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Created:
    feedback_id: str | None
    status: int


@dataclass(frozen=True, slots=True)
class FeedbackPage:
    feedbacks: list[dict[str, Any]]
    next_page_url: str | None


class FeedbackClient:
    """Calls ``{base_url}/v1/Assistants/{id}/Feedbacks`` on a session the caller owns.

    The session carries the Basic auth; nothing here ever formats a credential into a message.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    def feedbacks_url(self, assistant_id: str) -> URL:
        # Quoted with no safe characters: the id is one path segment, whatever it holds.
        path = f"/v1/Assistants/{quote(assistant_id, safe='')}/Feedbacks"
        return URL(self._base + path, encoded=True)

    async def create(self, assistant_id: str, body: dict[str, Any]) -> Created:
        try:
            payload = json.dumps(body).encode()
            # aiohttp warns about (and blocks the loop on) bodies over 1 MiB sent as bytes.
            data = payload if len(payload) <= _LARGE_BODY else io.BytesIO(payload)
            url = self.feedbacks_url(assistant_id)
            async with self._session.post(url, data=data, headers=_JSON) as resp:
                if resp.status in (200, 201):
                    data = await _json(resp)
                    fid = data.get("id") if isinstance(data, dict) else None
                    return Created(fid if isinstance(fid, str) else None, resp.status)
                raise await api_error(resp)
        except _NOT_SENT as exc:
            raise TransportError(describe_transport(exc)) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The connection broke or went quiet after the request may have been written.
            raise AmbiguousTransportError(describe_transport(exc)) from exc

    async def list_page(
        self, assistant_id: str, *, page_size: int = MAX_LIST_PAGE_SIZE, url: str | None = None
    ) -> FeedbackPage:
        first = self.feedbacks_url(assistant_id)
        target = first.with_query(PageSize=page_size) if url is None else URL(url, encoded=True)
        if target.origin() != first.origin():
            # The session sends credentials with every request: never to another host.
            raise PermanentApiError(200, f"next page is on another host: {target.origin()}")
        try:
            async with self._session.get(target) as resp:
                if resp.status != 200:
                    raise await api_error(resp)
                data = await _json(resp)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(describe_transport(exc)) from exc
        if not isinstance(data, dict) or not isinstance(data.get("feedbacks"), list):
            raise PermanentApiError(200, "list response has no 'feedbacks' array")
        meta = data.get("meta") or {}
        next_url = meta.get("next_page_url") if isinstance(meta, dict) else None
        return FeedbackPage(data["feedbacks"], next_url if isinstance(next_url, str) else None)


async def _json(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


async def api_error(resp: aiohttp.ClientResponse) -> ApiError:
    """Build the typed error for a non-success response from Twilio's error JSON."""
    data = await _json(resp)
    code: int | None = None
    more_info: str | None = None
    message = resp.reason or "error"
    if isinstance(data, dict):
        code = data.get("code") if isinstance(data.get("code"), int) else None
        more_info = data.get("more_info") if isinstance(data.get("more_info"), str) else None
        if isinstance(data.get("message"), str):
            message = data["message"]
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    cls = error_class(resp.status)
    return cls(resp.status, message, code=code, more_info=more_info, retry_after=retry_after)


def error_class(status: int) -> type[ApiError]:
    if status in (401, 403):
        return AuthError
    if status in AMBIGUOUS_STATUSES:
        return AmbiguousApiError
    if status in RETRYABLE_STATUSES or status >= 500:
        return RetryableApiError
    return PermanentApiError


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def describe_transport(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out waiting for the API"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
