"""Request handlers of the fake Feedback API: auth, faults, validation, create and list."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
import re
import socket
import struct
from http import HTTPStatus
from typing import Any, NoReturn

from aiohttp import hdrs, web

from pipeline.fake import hostile
from pipeline.fake.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_INDEX,
    MAX_PAGE_SIZE,
    InvalidRequest,
    decode_page_token,
    int_param,
    list_meta,
)
from pipeline.fake.state import FakeState

STATE_KEY = web.AppKey("fake_state", FakeState)

CREATE_FIELDS = frozenset({"session_id", "message_id", "score", "text"})
MESSAGE_ID_RE = re.compile(r"aia_msg_.+")


def twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _status_error(status: int) -> web.Response:
    # Twilio's generic HTTP-level codes are 20000 + status (20404, 20429, 20500, 20503...).
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return twilio_error(status, 20000 + status, phrase)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(username, password) from a Basic Authorization header, None if malformed.

    Parsed by hand because aiohttp 3.14 deprecates BasicAuth, and tests turn warnings
    into errors.
    """
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def _authenticate(request: web.Request, state: FakeState) -> str | None:
    """The account SID the request acts for, or None when credentials are missing/wrong."""
    credentials = _basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
    if credentials is None:
        return None
    username, password = credentials
    expected = state.credentials.get(username)
    # Constant-time compare, like a real server, so the fake never models a timing leak.
    if expected is None or not hmac.compare_digest(
        expected.encode("utf-8"), password.encode("utf-8")
    ):
        return None
    return state.account_sid_for(username)


def _unauthorized() -> web.Response:
    return twilio_error(
        401,
        20003,
        "Authentication Error - invalid username or password",
        headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="Twilio API"'},
    )


def _not_found(request: web.Request) -> web.Response:
    return twilio_error(404, 20404, f"The requested resource {request.path} was not found")


def _bad_request(message: str) -> web.Response:
    return twilio_error(400, 20001, message)


async def _prelude(request: web.Request) -> tuple[FakeState, str | None]:
    """Latency, then authentication: the steps shared by every API request."""
    state = request.app[STATE_KEY]
    latency_ms = state.faults.latency_ms
    if latency_ms > 0:
        await asyncio.sleep(latency_ms / 1000.0)
    return state, _authenticate(request, state)


def _assistant_unknown(state: FakeState, assistant_id: str) -> bool:
    return state.known_assistants is not None and assistant_id not in state.known_assistants


def _post_fault(state: FakeState) -> web.Response | None:
    """The configured outage, throttling or random failure answer for a POST, if any."""
    faults = state.faults
    if faults.error_status is not None:
        return _status_error(faults.error_status)
    once = state.take_retry_after_once()
    if once is not None:
        return twilio_error(429, 20429, "Too Many Requests", headers={hdrs.RETRY_AFTER: str(once)})
    wait = state.throttle_wait()
    if wait is not None:
        retry_after = str(max(1, math.ceil(wait)))
        return twilio_error(
            429, 20429, "Too Many Requests", headers={hdrs.RETRY_AFTER: retry_after}
        )
    if state.roll(faults.fail_rate):
        return twilio_error(503, 20503, "Service Unavailable")
    return None


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN/Infinity by default; they are not JSON and not valid scores.
    raise InvalidRequest(f"Invalid JSON body: {name} is not allowed")


async def _read_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    raw = await request.read()
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("Invalid JSON body") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return body


def validate_create(body: dict[str, Any]) -> None:
    """Check a create-feedback body against the spec; raise InvalidRequest if it fails."""
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown parameter(s): {', '.join(unknown)}")
    if "session_id" not in body:
        raise InvalidRequest("Missing required parameter session_id")
    for name in ("session_id", "message_id", "text"):
        if name in body and not isinstance(body[name], str):
            raise InvalidRequest(f"Invalid parameter {name}: must be a string")
    if "message_id" in body and not MESSAGE_ID_RE.fullmatch(body["message_id"]):
        raise InvalidRequest("Invalid parameter message_id: must match ^aia_msg_.+$")
    if "score" in body:
        score = body["score"]
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise InvalidRequest("Invalid parameter score: must be a number")
        if not 0 <= score <= 1:
            raise InvalidRequest("Invalid parameter score: must be between 0 and 1")


def _abort_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST, as a crashing proxy would, without answering."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns the close into a reset, so the client cannot mistake it for an
        # orderly end of a keep-alive connection.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def create_feedback(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.note_post()
    with state.working():
        return await _create(request)


async def _create(request: web.Request) -> web.StreamResponse:
    # Received is received: the body is read before the latency, so a request whose client
    # dies while the API works on it is still stored, late, as by a real API (the case that
    # reconcile's --settle wait is for). A client gone mid-body is handled below.
    with contextlib.suppress(ConnectionResetError):
        await request.read()
    state, account_sid = await _prelude(request)
    # A portal or a redirecting proxy answers before the API could check credentials.
    odd = hostile.intercept(request, state)
    if odd is not None:
        return odd
    if account_sid is None:
        return _unauthorized()
    fault = _post_fault(state)
    if fault is not None:
        return fault
    assistant_id = request.match_info["id"]
    if _assistant_unknown(state, assistant_id):
        return _not_found(request)
    try:
        body = await _read_body(request)
        validate_create(body)
    except InvalidRequest as exc:
        return _bad_request(str(exc))
    except ConnectionResetError:
        # The client went away mid-body (killed): nothing arrived, nothing to store or answer.
        return web.Response(status=400)
    odd = await hostile.answer_create(
        request,
        state,
        lambda: state.store(assistant_id, body, account_sid=account_sid),
        _abort_connection,
    )
    if odd is not None:
        return odd
    resource = state.store(assistant_id, body, account_sid=account_sid)
    if state.roll(state.faults.slow_rate):
        state.note_late()
        await asyncio.sleep(state.faults.slow_ms / 1000.0)
    if state.roll(state.faults.reset_rate):
        state.note_reset()
        _abort_connection(request)
        # aiohttp fails to write this on the aborted transport and drops it quietly;
        # the counting middleware sees the closed transport and records no status.
        return web.Response(status=201)
    return web.json_response(resource, status=201)


async def list_feedbacks(request: web.Request) -> web.StreamResponse:
    state, account_sid = await _prelude(request)
    odd = hostile.intercept(request, state)
    if odd is not None:
        return odd
    if account_sid is None:
        return _unauthorized()
    assistant_id = request.match_info["id"]
    if _assistant_unknown(state, assistant_id):
        return _not_found(request)
    try:
        size = int_param(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        # Page is "simply for client state" (the spec: any integer >= 0); the bound only keeps
        # int() within Python's digit limit.
        page = int_param(request, "Page", 0, 0, MAX_PAGE_INDEX)
        token = request.query.get("PageToken")
        offset = decode_page_token(token, assistant_id) if token is not None else 0
    except InvalidRequest as exc:
        return _bad_request(str(exc))
    items, total = state.page(assistant_id, offset, size)
    meta = list_meta(request, size, page, offset, total)
    hostile.rewrite_meta(request, state, meta)
    return web.json_response({"feedbacks": items, "meta": meta})
