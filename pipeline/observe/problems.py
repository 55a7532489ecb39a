"""The problem log: per-record problem lines (capped) and run-level notices while a run goes,
as log records."""

from __future__ import annotations

import logging

from pipeline.logs import event, log
from pipeline.models import Outcome

#: Invalid or failed records are printed one line each up to this many; the ledger has all.
MAX_PROBLEM_LINES = 50
#: Problems the HTML report lists (the first ones; `failures` exports them all).
FIRST_PROBLEMS = 20


def failure_reason(outcome: Outcome) -> str:
    """A failed outcome's reason without what is particular to the record, so that equal
    failures count together: HTTP status, Twilio code, message."""
    status = f"HTTP {outcome.http_status} " if outcome.http_status else ""
    code = f"(Twilio error {outcome.error_code}) " if outcome.error_code else ""
    return f"failed: {status}{code}{outcome.error_message or 'no message'}"


class Progress:
    """Per-record problem lines (capped) and run-level notices, as log records (see
    :mod:`pipeline.logs`). What a run looks like while it goes (a live display on a terminal,
    a periodic line off one) is :mod:`pipeline.observe.monitor`'s."""

    def __init__(self) -> None:
        self._problems = 0
        #: The first problems, (location, message), for the HTML report's table.
        self.first: list[tuple[str, str]] = []

    def problem(self, location: str | None, message: str) -> None:
        self._problems += 1
        if len(self.first) < FIRST_PROBLEMS:
            self.first.append((location or "-", message))
        if self._problems <= MAX_PROBLEM_LINES:
            event(logging.WARNING, f"{location or '-'}: {message}", "problem", location=location)
        elif self._problems == MAX_PROBLEM_LINES + 1:
            log.warning("... more problems not shown; `feedback-pipeline failures` lists them all")

    def notice(self, message: str) -> None:
        """A run-level event (an outage, a missing assistant): always shown, once."""
        event(logging.WARNING, f"notice: {message}", "notice")
