"""The API's answers read: a body up to a cap, a feedback's id, Twilio's error JSON to a typed
error, a Retry-After header, a transport failure in one line."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import aiohttp
import orjson

from pipeline.errors import (
    AmbiguousApiError,
    ApiError,
    AuthError,
    PermanentApiError,
    RetryableApiError,
)

#: Statuses worth retrying: throttled, request timeout, and server-side failures.
RETRYABLE_STATUSES = frozenset({408, 429})
#: Statuses after which the feedback may exist. 500: the server failed somewhere in handling,
#: possibly after storing; 502: a gateway lost or garbled the answer of a server that may have
#: stored it; 504: a gateway gave up waiting on a server that may still store it. (503 is a
#: refusal to take the work, and 408/429 are answered before any; those are safe to resend.)
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
FEEDBACK_ID_PREFIX = "aia_fdbk_"


def feedback_id_of(status: int, raw: bytes | None) -> tuple[str | None, str]:
    """The id of the feedback a 2xx answer holds, or None and why it holds none."""
    if raw is None:
        return None, "a body too large to be a feedback"
    if status != 201:
        # The API answers 201 Created and nothing else; a 200 comes from something else.
        return None, "not 201 Created"
    data = loads(raw)
    feedback_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(feedback_id, str) or not feedback_id.startswith(FEEDBACK_ID_PREFIX):
        return None, f"no '{FEEDBACK_ID_PREFIX}' id in the body"
    return feedback_id, ""


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None once it proves longer than ``limit`` (the rest is never read).

    Leaving the body unread closes the connection instead of returning it to the pool.
    """
    if resp.content_length is not None and resp.content_length > limit:
        return None
    first = await resp.content.read(limit + 1)
    if len(first) > limit:
        return None
    if resp.content.at_eof():  # the usual: all of it in the first read
        return first
    buf = bytearray(first)
    while chunk := await resp.content.read(limit + 1 - len(buf)):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def loads(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # a ValueError: not JSON, not UTF-8, nested too deep
        return None


def one_line(text: str, limit: int) -> str:
    """``text`` printable on one line and at most ``limit`` characters (it came from afar)."""
    flat = "".join(c if c.isprintable() else "?" for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


async def api_error(resp: aiohttp.ClientResponse, limit: int) -> ApiError:
    """Build the typed error for a non-success response from Twilio's error JSON (its body
    read up to ``limit`` bytes)."""
    data = loads(await read_capped(resp, limit))
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
