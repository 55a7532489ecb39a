"""Hostile modes of the fake Feedback API: the misbehaviours a real deployment can meet.

Each mode models something a client must survive without losing or duplicating a record:

==================  ==========================================================================
``portal``          every API request is answered ``status`` (a 2xx) with an HTML page and
                    nothing is stored: a captive portal, a proxy, a mistyped host.
``unconfirmed``     the feedback is stored, but the answer is ``status`` (a 2xx) with a body
                    that is no feedback (``{"ok": true}``): a gateway that rewrites answers.
``redirect``        every API request is answered ``status`` (a 3xx) to ``location``; nothing
                    is stored here.
``repeat_cursor``   List pages link to themselves: ``next_page_url`` never changes.
``endless_cursor``  List pages link to a "next" page forever (the same items, a new URL).
``relative_cursor`` ``next_page_url`` is a path without scheme and host.
``drip``            the feedback is stored, then the 201 body is sent one byte per
                    ``delay_s`` seconds.
``huge``            the feedback is stored, then answered 201 with a valid feedback padded
                    to ``size`` bytes (streamed, so the fake itself stays small).
``store_late``      the connection is reset without an answer (or, given a 5xx ``status``, that
                    status is answered), and the feedback is stored ``delay_s`` seconds later
                    (what reconcile's ``--settle`` wait is for).
==================  ==========================================================================

``rate`` is the share of requests (POSTs, or List pages for the cursor modes) affected.
Like the rest of the fake, this module imports nothing from the package.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from yarl import URL

if TYPE_CHECKING:
    from pipeline.fake.state import FakeState

MODES = frozenset(
    {
        "portal",
        "unconfirmed",
        "redirect",
        "repeat_cursor",
        "endless_cursor",
        "relative_cursor",
        "drip",
        "huge",
        "store_late",
    }
)
PORTAL_PAGE = b"<!doctype html><html><body><h1>Welcome! Please sign in.</h1></body></html>"
_CHUNK = 1 << 16
_DEFAULT_STATUS = {"portal": 200, "unconfirmed": 200, "redirect": 307}


@dataclass(frozen=True, kw_only=True)
class Hostile:
    """One hostile mode and its parameters (see the module docstring)."""

    mode: str
    status: int | None = None
    location: str | None = None
    delay_s: float = 0.05
    size: int = 8 << 20
    rate: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"hostile mode must be one of {', '.join(sorted(MODES))}")
        if self.status is None and self.mode in _DEFAULT_STATUS:
            object.__setattr__(self, "status", _DEFAULT_STATUS[self.mode])
        wanted = {"portal": range(200, 300), "unconfirmed": range(200, 300)}
        wanted["redirect"] = range(300, 400)
        if self.mode == "store_late" and self.status is not None:
            wanted["store_late"] = range(500, 600)
        if self.mode in wanted and self.status not in wanted[self.mode]:
            raise ValueError(f"hostile {self.mode}: status must be in {wanted[self.mode]}")
        if not isinstance(self.delay_s, int | float) or not 0 <= self.delay_s <= 60:
            raise ValueError("hostile delay_s must be between 0 and 60")
        if not isinstance(self.size, int) or not 0 <= self.size <= 1 << 31:
            raise ValueError("hostile size must be an integer byte count")
        if not isinstance(self.rate, int | float) or not 0 <= self.rate <= 1:
            raise ValueError("hostile rate must be between 0 and 1")

    @classmethod
    def parse(cls, value: Hostile | Mapping[str, Any] | str | None) -> Hostile | None:
        """From a mode name, a JSON object (the control endpoint, ``--hostile``) or None."""
        if value is None or isinstance(value, Hostile):
            return value
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("{") else {"mode": value}
        if not isinstance(value, Mapping):
            raise ValueError("hostile must be a mode name or an object with a 'mode'")
        try:
            return cls(**value)
        except TypeError as exc:
            raise ValueError(f"hostile: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _active(state: FakeState, modes: set[str]) -> Hostile | None:
    hostile = state.faults.hostile
    if not isinstance(hostile, Hostile) or hostile.mode not in modes:
        return None
    if not state.roll(hostile.rate):
        return None
    state.hostile_stats[hostile.mode] += 1  # only the server's loop writes these counters
    return hostile


def intercept(request: web.Request, state: FakeState) -> web.StreamResponse | None:
    """An answer that replaces the API's for any API request (POST or List), or None."""
    hostile = _active(state, {"portal", "redirect"})
    if hostile is None:
        return None
    assert hostile.status is not None
    if hostile.mode == "portal":
        return web.Response(status=hostile.status, body=PORTAL_PAGE, content_type="text/html")
    location = hostile.location or str(request.url)
    return web.Response(status=hostile.status, headers={hdrs.LOCATION: location})


async def answer_create(
    request: web.Request,
    state: FakeState,
    store: Callable[[], dict[str, Any]],
    abort: Callable[[web.Request], None],
) -> web.StreamResponse | None:
    """The answer to a valid create request in a storing mode, or None for the normal one.

    ``store`` stores the feedback and returns the resource; ``abort`` resets the connection.
    """
    hostile = _active(state, {"unconfirmed", "drip", "huge", "store_late"})
    if hostile is None:
        return None
    if hostile.mode == "store_late":
        return await _store_late(request, state, hostile, store, abort)
    resource = store()
    if hostile.mode == "unconfirmed":
        assert hostile.status is not None
        return web.json_response({"ok": True}, status=hostile.status)
    if hostile.mode == "drip":
        body = json.dumps(resource).encode()
        drip = (body[i : i + 1] for i in range(len(body)))
        return await _stream(request, state, drip, len(body), hostile.delay_s)
    # No Content-Length: chunked, so a client cannot refuse it up front; it must stop reading.
    return await _stream(request, state, _padded(resource, hostile.size), None, 0.0)


async def _store_late(
    request: web.Request,
    state: FakeState,
    hostile: Hostile,
    store: Callable[[], dict[str, Any]],
    abort: Callable[[web.Request], None],
) -> web.StreamResponse:
    if hostile.status is None:
        state.note_reset()
        abort(request)
        answer: web.StreamResponse = web.Response(status=201)  # dropped: the transport is gone
    else:
        # Answered in full now; the handler goes on, to store the feedback afterwards.
        answer = web.json_response(
            {"code": 20000 + hostile.status, "message": "try later", "status": hostile.status},
            status=hostile.status,
        )
        await answer.prepare(request)
        await answer.write_eof()
    await asyncio.sleep(hostile.delay_s)
    store()
    return answer


def _padded(resource: dict[str, Any], size: int) -> Iterator[bytes]:
    """A valid feedback padded to ``size`` bytes, as chunks made on demand (not held whole)."""
    head = json.dumps(resource).encode()[:-1] + b', "padding": "'
    pad = max(0, size - len(head) - 2)
    yield head
    for start in range(0, pad, _CHUNK):
        yield b"x" * min(_CHUNK, pad - start)
    yield b'"}'


async def _stream(
    request: web.Request,
    state: FakeState,
    chunks: Iterable[bytes],
    length: int | None,
    delay: float,
) -> web.StreamResponse:
    response = web.StreamResponse(status=201, headers={hdrs.CONTENT_TYPE: "application/json"})
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    try:
        for chunk in chunks:
            await response.write(chunk)
            # Written means handed to the socket: the client read it, or its buffer holds it.
            state.hostile_stats["bytes_streamed"] += len(chunk)
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
    except ConnectionError:
        pass  # the client gave up (its timeout, its body cap): nothing more to send
    return response


def rewrite_meta(request: web.Request, state: FakeState, meta: dict[str, Any]) -> None:
    """Bend a List page's ``next_page_url`` in the cursor modes."""
    hostile = _active(state, {"repeat_cursor", "endless_cursor", "relative_cursor"})
    if hostile is None:
        return
    if hostile.mode == "repeat_cursor":
        meta["next_page_url"] = str(request.url)
    elif hostile.mode == "endless_cursor":
        page = int(request.query.get("Page", "0")) + 1
        meta["next_page_url"] = str(request.url.update_query(Page=page))
    elif meta.get("next_page_url"):
        url = request.url.join(URL(meta["next_page_url"]))
        meta["next_page_url"] = url.path_qs
