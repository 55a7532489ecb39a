"""URLs that name sources and ledgers: their scheme, and a form safe to print or store."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from pipeline.errors import ConfigError

# RFC 3986's scheme, followed by "://": anything else (a path, "-") is a file.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_PREFIX = "sqlite:///"


def scheme(spec: str) -> str | None:
    """The lower-cased scheme of a URL, or None for a file path or ``-``."""
    match = _SCHEME.match(spec)
    return match.group(1).lower() if match else None


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: for logs, errors, reports and the ledger.

    Anything that does not parse as a URL with credentials is returned as it is."""
    if scheme(url) is None:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port or IPv6 literal: hide everything before the host
        _, sep, tail = url.rpartition("@")
        return f"{url.split('://', 1)[0]}://***@{tail}" if sep else url
    if password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def local_path(url: str) -> str | None:
    """The file a ledger URL names: a plain path, or ``sqlite:///relative/path`` and
    ``sqlite:////absolute/path`` (SQLAlchemy's form); None for a ledger that is no local file."""
    name = scheme(url)
    if name is None:
        return url
    if name != "sqlite":
        return None
    if not url.lower().startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
        raise ConfigError(
            f"ledger: {mask_url(url)}: expected sqlite:///relative/path or sqlite:////absolute/path"
        )
    return unquote(url[len(_SQLITE_PREFIX) :])


def check_scope_url(url: str) -> str:
    """``url`` if it names a Redis for a ``--rate-scope``, else ValueError (the password masked)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{mask_url(url)}: expected redis://HOST:PORT/DB[?key=NAME]")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise ValueError(f"{mask_url(url)}: the port is not a number") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"key"})
    if unknown:
        raise ValueError(f"{mask_url(url)}: unknown parameter {unknown[0]!r}; only key=NAME")
    if "key" in query and not query["key"][-1].strip():
        raise ValueError(f"{mask_url(url)}: key must not be empty")
    return url


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
