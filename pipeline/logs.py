"""Diagnostics through the standard :mod:`logging` module: one place that configures them.

Every diagnostic of a run (a record's problem, a run-level notice, the periodic progress line,
the abort reason) is a record of the ``pipeline`` logger, on standard error, with a level and
a timestamp; the final summary is the command's output and stays on standard output.

- ``text``: ``2026-11-24T06:03:27.123Z WARNING file.csv:3: invalid: score: ...``
- ``json``: one JSON object per event (python-json-logger), with ``timestamp``, ``level``,
  ``logger``, ``message`` and the event's own fields (``event``, counts, ...), for a log
  shipper to parse.

Levels: DEBUG (``-v``), INFO (default: progress, start and end), WARNING (``-qq``: record
problems, notices), ERROR (``-qqq``: the abort reason). No secret is ever logged: the
credentials live only in the HTTP session's Authorization header, which nothing logs.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

LOGGER = "pipeline"
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
#: -v / -q counted: what ``-q`` once, twice, three times (or ``-v``) means.
_BY_VERBOSITY: dict[int, LogLevel] = {1: "debug", 0: "info", -1: "info", -2: "warning"}

log = logging.getLogger(LOGGER)


def level_for(verbose: int, quiet: int) -> LogLevel | None:
    """The level that ``-v``/``-q`` ask for; None when neither is given (the setting rules)."""
    if not verbose and not quiet:
        return None
    return _BY_VERBOSITY.get(max(-3, min(1, verbose - quiet)), "error")


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is *now*: a live display redirects it above itself,
    and a test runner swaps it per command."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed or sys.stderr
        super().emit(record)


class _TextFormatter(logging.Formatter):
    """``ISO-8601 UTC timestamp, level, message``: one line per event."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-7s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))


def _json_formatter() -> logging.Formatter:
    # The library builds the JSON (json.dumps) and adds an ISO-8601 UTC "timestamp".
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        json_ensure_ascii=False,
    )


def setup(
    level: LogLevel = "info", fmt: LogFormat = "text", *, stream: TextIO | None = None
) -> None:
    """(Re)configure the ``pipeline`` logger: one handler on standard error (or ``stream``).

    Called once per command; calling it again replaces the handler, never adds a second."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    handler = _Stderr(stream)
    handler.setFormatter(_json_formatter() if fmt == "json" else _TextFormatter())
    log.addHandler(handler)
    log.setLevel(level.upper())
    # Records stop here: a host application's root handlers would print them twice.
    log.propagate = False


def event(level: int, message: str, name: str, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (JSON logs carry them as keys)."""
    log.log(level, message, extra={"event": name, **fields})
