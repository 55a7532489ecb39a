"""The Feedback API client: create a feedback, list pages, parse Twilio's errors.

It speaks HTTP itself (Twilio's SDK dropped this resource) and knows nothing of retries or
ledgers: one call, one request, one typed result or one typed error.

Success cannot be faked: :class:`Created` is built in one place only, from a ``201`` whose
body (read up to :data:`MAX_BODY` bytes) is JSON holding an ``aia_fdbk_`` id. Any other
answer is an error of :mod:`pipeline.errors`; a 2xx without a feedback is ambiguous
(:class:`UnconfirmedError`), a 3xx is never followed (:class:`RedirectError`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesIOPayload, BytesPayload
from yarl import URL

from pipeline.delivery.answers import (
    api_error,
    describe_transport,
    feedback_id_of,
    loads,
    one_line,
    read_capped,
)
from pipeline.errors import (
    AmbiguousTransportError,
    LeaseLapsedError,
    NotTheApiError,
    PermanentApiError,
    RedirectError,
    TransportError,
    UnconfirmedError,
)

#: At most this much of an answer (a feedback or an error) is read, beyond the size of what we
#: sent (a feedback echoes the request's fields back). A feedback's own fields are well under
#: 10 KB; a body that does not fit is not one, and must not cost the run its memory.
MAX_BODY = 1 << 20
#: At most this much of a List page is read: 1000 feedbacks with long texts fit easily.
MAX_PAGE_BODY = 64 << 20
#: After this many 2xx answers without a feedback, with not one real feedback seen yet, the
#: base URL is taken for something else (a captive portal, a proxy, a mistyped host) and the
#: run aborts instead of leaving every record of a large input ``unknown``. Once one real
#: feedback came back, the base URL is the API, and a stray bad 2xx is only ambiguous.
NOT_THE_API_AFTER = 10
_JSON_TYPE = "application/json"
_JSON = {"Content-Type": _JSON_TYPE}
#: Assistant ids whose URL is kept (a file names a few; a hostile one, no end of them).
_MAX_URLS = 1024
_LARGE_BODY = 1 << 20
_MAX_LOCATION = 300
#: Failures that happen before the request can have left: nothing to settle, safe to resend.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
MAX_LIST_PAGE_SIZE = 1000


# Not frozen (one per record): see pipeline.models.RawRecord. Never mutated.
@dataclass(slots=True, unsafe_hash=True)
class Created:
    feedback_id: str
    status: int


@dataclass(frozen=True, slots=True)
class FeedbackPage:
    feedbacks: list[dict[str, Any]]
    #: Absolute: a relative ``next_page_url`` is resolved against the page it came from.
    next_page_url: str | None


class _Checked:
    """A request body that runs ``check`` right before it is written. aiohttp holds the
    request's headers back until its body's first write, so nothing of the request is on the
    socket yet; a check that raises leaves it unwritten (aiohttp then drops the connection)."""

    def __init__(self, value: Any, check: Callable[[], None]) -> None:
        super().__init__(value, content_type=_JSON_TYPE)  # type: ignore[call-arg]
        self._check = check

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._check()
        await super().write_with_length(writer, content_length)  # type: ignore[misc]


class _CheckedBytes(_Checked, BytesPayload):
    pass


class _CheckedBytesIO(_Checked, BytesIOPayload):  # a body over 1 MiB, as aiohttp wants it
    pass


class FeedbackClient:
    """Calls ``{base_url}/v1/Assistants/{id}/Feedbacks`` on a session the caller owns.

    The session carries the Basic auth; nothing here ever formats a credential into a message.
    Redirects are never followed (``allow_redirects=False`` on every request).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        last_check: Callable[[], None] | None = None,
    ) -> None:
        """``last_check``: called right before a POST is written (its headers and body go out
        together); a :class:`LeaseLapsedError` it raises stops the request unwritten."""
        self._session = session
        self._last_check = last_check
        self._base = base_url.rstrip("/")
        self._confirmed = False  # a real feedback came back at least once
        self._urls: dict[str, URL] = {}  # by assistant id: a URL costs a quote and a parse
        self._unconfirmed = 0  # 2xx answers without a feedback

    @property
    def base_url(self) -> str:
        return self._base

    def feedbacks_url(self, assistant_id: str) -> URL:
        # Quoted with no safe characters: the id is one path segment, whatever it holds.
        path = f"/v1/Assistants/{quote(assistant_id, safe='')}/Feedbacks"
        return URL(self._base + path, encoded=True)

    def _url_of(self, assistant_id: str) -> URL:
        url = self.feedbacks_url(assistant_id)
        if len(self._urls) < _MAX_URLS:
            self._urls[assistant_id] = url
        return url

    async def create(self, assistant_id: str, body: dict[str, Any]) -> Created:
        try:
            payload = orjson.dumps(body)
            # aiohttp warns about (and blocks the loop on) bodies over 1 MiB sent as bytes.
            check, large = self._last_check, len(payload) > _LARGE_BODY
            headers = None  # the payload's own: no header merge per request
            if check is not None:  # checked as it is written (see _Checked)
                data: Any = (
                    _CheckedBytesIO(io.BytesIO(payload), check)
                    if large
                    else _CheckedBytes(payload, check)
                )
            elif not large:
                data = BytesPayload(payload, content_type=_JSON_TYPE)
            else:
                data, headers = io.BytesIO(payload), _JSON
            url = self._urls.get(assistant_id) or self._url_of(assistant_id)
            async with self._session.post(
                url, data=data, headers=headers, allow_redirects=False
            ) as resp:
                if 300 <= resp.status < 400:
                    raise self._redirect(resp, "POST")
                if not 200 <= resp.status < 300:
                    raise await api_error(resp, MAX_BODY)
                raw = await read_capped(resp, MAX_BODY + len(payload))
        except _NOT_SENT as exc:
            raise TransportError(describe_transport(exc)) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc.__cause__, LeaseLapsedError):
                raise exc.__cause__ from None  # stopped by the last check: never written
            # The connection broke or went quiet after the request may have been written.
            raise AmbiguousTransportError(describe_transport(exc)) from exc
        return self._created(resp.status, raw)

    def _created(self, status: int, raw: bytes | None) -> Created:
        """The one place a success is made: a 201 holding a feedback, else an error."""
        feedback_id, why = feedback_id_of(status, raw)
        if feedback_id is not None:
            self._confirmed = True
            return Created(feedback_id, status)
        self._unconfirmed += 1
        if not self._confirmed and self._unconfirmed >= NOT_THE_API_AFTER:
            raise NotTheApiError(
                status,
                f"--base-url {self._base} is not the Feedback API: {self._unconfirmed} "
                f"answers were HTTP 2xx without a feedback (the last: HTTP {status}, {why}) "
                "and none held one (a captive portal, a proxy, a mistyped host?)",
            )
        raise UnconfirmedError(status, f"answered without a feedback ({why}); it may be stored")

    def _redirect(self, resp: aiohttp.ClientResponse, method: str) -> RedirectError:
        location = one_line(resp.headers.get("Location") or "(no Location)", _MAX_LOCATION)
        return RedirectError(
            resp.status,
            f"--base-url {self._base}: {method} {resp.url.path} was redirected "
            f"(HTTP {resp.status}) to {location}; redirects are not followed, "
            "set --base-url to the API's own address",
        )

    async def list_page(
        self, assistant_id: str, *, page_size: int = MAX_LIST_PAGE_SIZE, url: str | None = None
    ) -> FeedbackPage:
        first = self.feedbacks_url(assistant_id)
        target = first.with_query(PageSize=page_size) if url is None else _join(first, url)
        if _origin(target) != _origin(first):
            # The session sends credentials with every request: never to another host.
            raise PermanentApiError(200, f"next page is on another host: {_origin(target)}")
        try:
            async with self._session.get(target, allow_redirects=False) as resp:
                if 300 <= resp.status < 400:
                    raise self._redirect(resp, "GET")
                if resp.status != 200:
                    raise await api_error(resp, MAX_BODY)
                raw = await read_capped(resp, MAX_PAGE_BODY)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(describe_transport(exc)) from exc
        if raw is None:
            raise PermanentApiError(200, f"list page larger than {MAX_PAGE_BODY} bytes")
        data = loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("feedbacks"), list):
            raise PermanentApiError(200, "list response has no 'feedbacks' array")
        meta = data.get("meta") or {}
        next_url = meta.get("next_page_url") if isinstance(meta, dict) else None
        if not isinstance(next_url, str) or not next_url:
            return FeedbackPage(data["feedbacks"], None)
        return FeedbackPage(data["feedbacks"], str(_join(target, next_url)))


def _join(base: URL, reference: str) -> URL:
    """``reference`` (absolute, or relative as some APIs send it) resolved against ``base``."""
    try:
        return base.join(URL(reference, encoded=True))
    except ValueError:
        raise PermanentApiError(
            200, f"next_page_url is not a URL: {one_line(reference, 100)}"
        ) from None


def _origin(url: URL) -> str:
    try:
        return str(url.origin())
    except ValueError:
        return one_line(str(url), 100)
