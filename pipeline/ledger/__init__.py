"""Ledgers: the durable record of every input record's state, chosen by URL.

A path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path`` (SQLAlchemy's form), is a
SQLite file; ``postgresql://USER@HOST:PORT/DB[?schema=NAME]`` is the ledger many workers
share (pipeline.ledger.postgres.ledger). Adding a backend is one module exporting
``open_ledger(url, run_id, *, command, read_only, request_bound) -> Ledger`` plus one line in
``_BACKENDS``;
it is imported only when used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipeline.errors import ConfigError
from pipeline.extras import load
from pipeline.ledger.base import Decision, Ledger
from pipeline.ledger.sqlite.ledger import SqliteLedger
from pipeline.urls import local_path, mask_url, scheme

__all__ = ["Decision", "Ledger", "SqliteLedger", "local_path", "open_ledger"]

#: URL scheme -> module exporting ``open_ledger``. A plain path is "sqlite".
_BACKENDS: dict[str, str] = {
    "sqlite": "pipeline.ledger.sqlite.ledger",
    "postgresql": "pipeline.ledger.postgres.ledger",
    "postgres": "pipeline.ledger.postgres.ledger",
}


async def open_ledger(
    url: str, run_id: str, *, command: str, read_only: bool = False, request_bound: float = 0.0
) -> Ledger:
    """Open the ledger ``url`` names for run ``run_id`` of ``command``; ``request_bound``: how
    long one of the run's requests may take (its --timeout), which reconciliation of its
    records waits out once its lease ran out."""
    name = scheme(url) or "sqlite"
    module = _BACKENDS.get(name)
    if module is None:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise ConfigError(
            f"ledger: {mask_url(url)}: no ledger backend for {name}:// (known: {known}, "
            "or a file path)"
        )
    opener: Callable[..., Awaitable[Ledger]] = load(module, what=f"ledger {name}://").open_ledger
    return await opener(
        url, run_id, command=command, read_only=read_only, request_bound=request_bound
    )
