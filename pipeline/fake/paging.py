"""Paging of the fake API's List endpoint: page tokens this server makes (and only those it
accepts), the page parameters, the ``meta`` block with the page URLs."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

PAGE_TOKEN_PREFIX = "PT"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE_INDEX = 10**100


class InvalidRequest(Exception):
    """A request parameter or body failed validation; the message goes to the client."""


def encode_page_token(assistant_id: str, offset: int) -> str:
    raw = f"{assistant_id}\n{offset}".encode()
    return PAGE_TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str, assistant_id: str) -> int:
    """The offset a token stands for; InvalidRequest unless this server made it for this list."""
    if not token.startswith(PAGE_TOKEN_PREFIX):
        raise InvalidRequest("Invalid PageToken")
    data = token[len(PAGE_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("Invalid PageToken") from exc
    owner, _, offset = raw.partition("\n")
    if owner != assistant_id or not _is_decimal(offset):
        raise InvalidRequest("Invalid PageToken")
    return int(offset)


def _is_decimal(value: str) -> bool:
    # str.isdigit alone accepts non-ASCII digits such as "²" that int() rejects.
    return value.isascii() and value.isdigit()


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    if not _is_decimal(value) or not low <= int(value) <= high:
        raise InvalidRequest(f"Invalid parameter {name}: must be an integer in [{low}, {high}]")
    return int(value)


def _page_url(request: web.Request, size: int, page: int, offset: int) -> str:
    query: dict[str, str | int] = {"PageSize": size, "Page": page}
    if offset > 0:
        query["PageToken"] = encode_page_token(request.match_info["id"], offset)
    return str(request.url.with_query(query))


def list_meta(
    request: web.Request, size: int, page: int, offset: int, total: int
) -> dict[str, Any]:
    has_next = offset + size < total
    return {
        "first_page_url": _page_url(request, size, 0, 0),
        "key": "feedbacks",
        "next_page_url": _page_url(request, size, page + 1, offset + size) if has_next else None,
        "page": page,
        "page_size": size,
        "previous_page_url": (
            _page_url(request, size, max(0, page - 1), max(0, offset - size))
            if offset > 0
            else None
        ),
        "url": str(request.url),
    }
