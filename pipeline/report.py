"""Progress while a run goes, and the summary (text and JSON) when it ends."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from tqdm import tqdm

from pipeline.ledger import Decision
from pipeline.models import Outcome, Status

#: Invalid or failed records are printed one line each up to this many; the ledger has all.
MAX_PROBLEM_LINES = 50


@dataclass
class Summary:
    """The run's counts. ``read == sent + skipped + duplicate + invalid + failed + released``
    at the end."""

    command: str
    run_id: str
    read: int = 0
    sent: int = 0
    skipped: int = 0
    duplicate: int = 0
    invalid: int = 0
    failed: int = 0
    not_sent: int = 0  # part of ``failed``: claimed, but the run stopped before its request
    #: Claimed, then not sent because a following run ended normally (a signal): not a failure.
    #: The ledger holds them as failed "not sent" (a later run sends them), the queue still
    #: holds them unacked (delivered again).
    released: int = 0
    would_send: int = 0  # dry runs only: what a real run would have sent
    unknown: int = 0  # outcome unknown (ambiguous failure, or left uncertain by a dead run)
    reconciled_found: int = 0  # uncertain records of earlier runs found stored: now sent
    reconciled_missing: int = 0  # ... found not stored: now failed, so sent again
    attempts: int = 0
    retries: int = 0
    aborted: str | None = None
    stopped: str | None = None  # a following run's normal end (a signal)
    concurrency: int | None = None  # the adaptive limit at the end
    concurrency_range: tuple[int, int] | None = None  # lowest and highest it reached
    pauses: int = 0  # times a 429's Retry-After paused every worker
    rate_cap: float | None = None  # the adaptive request-rate cap at the end, if any
    dry_run: bool = False
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    duration_s: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def decided(self, decision: Decision) -> None:
        self.read += 1
        if decision is Decision.SKIP:
            self.skipped += 1
        elif decision is Decision.DUPLICATE:
            self.duplicate += 1
        elif decision is Decision.INVALID:
            self.invalid += 1
        elif decision is Decision.UNCERTAIN:
            self.unknown += 1
        elif self.dry_run:
            self.would_send += 1

    def delivered(self, outcome: Outcome) -> None:
        self.attempts += outcome.attempts
        if outcome.status is Status.SENT:
            self.sent += 1
        elif outcome.status is Status.UNKNOWN:
            self.unknown += 1
        else:
            self.failed += 1
            if outcome.attempts == 0:
                self.not_sent += 1

    @property
    def in_flight(self) -> int:
        """Records read and claimed whose outcome is not known (yet)."""
        settled = self.sent + self.skipped + self.duplicate + self.invalid + self.failed
        settled += self.released
        return self.read - settled - self.unknown - self.would_send

    def settled_own(self, found: int, missing: int) -> None:
        """This run's unknown outcomes, settled by reconciliation at its end."""
        self.unknown -= found + missing
        self.sent += found
        self.failed += missing

    def finish(self) -> None:
        self.duration_s = round(time.monotonic() - self._t0, 3)

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        return 1 if self.failed or self.invalid or self.unknown or self.in_flight else 0

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        rate = self.sent / self.duration_s if self.duration_s else 0.0
        data.update(in_flight=self.in_flight, records_per_second=round(rate, 1))
        data["exit_code"] = self.exit_code
        return data

    def write_json(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.as_dict(), fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)

    def line(self) -> str:
        """The counts so far, in one line (a following run logs it every --log-every)."""
        verb, sent = ("would send", self.would_send) if self.dry_run else ("sent", self.sent)
        return (
            f"{self.command}: read {self.read}, {verb} {sent}, skipped {self.skipped} (sent "
            f"earlier), duplicate {self.duplicate}, invalid {self.invalid}, failed {self.failed}"
        )

    def text(self) -> str:
        lines = [self.line()]
        if not self.dry_run:
            rate = self.sent / self.duration_s if self.duration_s else 0.0
            lines.append(
                f"  {self.attempts} requests ({self.retries} retries) in {self.duration_s:.2f}s, "
                f"{rate:.0f} records/s"
            )
        if self.concurrency_range is not None:
            low, high = self.concurrency_range
            cap = f"{self.rate_cap:.0f}/s" if self.rate_cap else "none"
            lines.append(
                f"  concurrency limit {self.concurrency} (ranged {low}-{high}), rate cap {cap}, "
                f"{self.pauses} Retry-After pauses"
            )
        if self.reconciled_found or self.reconciled_missing:
            lines.append(
                f"  reconciled {self.reconciled_found + self.reconciled_missing} uncertain records"
                f" of earlier runs: {self.reconciled_found} were stored (now sent), "
                f"{self.reconciled_missing} were not (sent if in the input, or by replay)"
            )
        if self.unknown:
            lines.append(
                f"  {self.unknown} with an unknown outcome: the API may hold them; "
                "`reconcile` or the next run settles them"
            )
        if self.not_sent:
            lines.append(f"  {self.not_sent} of the failed were not sent; replay sends them")
        if self.in_flight:
            lines.append(f"  {self.in_flight} left in flight (outcome unknown)")
        if self.released:
            lines.append(
                f"  {self.released} taken but not sent before the stop: left unacked on the "
                "queue, delivered again"
            )
        if self.stopped and not self.aborted:
            lines.append(f"  {self.stopped} (the normal end of a following run)")
        if self.aborted:
            lines.append(f"  aborted: {self.aborted}")
        return "\n".join(lines)


class Progress:
    """A tqdm counter on stderr (only on a terminal) and capped per-record problem lines."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar = tqdm(
            desc="records",
            unit="rec",
            file=self._stream,
            dynamic_ncols=True,
            disable=None if enabled else True,
            leave=False,
        )
        self._problems = 0

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, **values: int | str) -> None:
        self._bar.set_postfix(values, refresh=False)

    def problem(self, location: str | None, message: str) -> None:
        self._problems += 1
        if self._problems <= MAX_PROBLEM_LINES:
            self._bar.write(f"{location or '-'}: {message}", file=self._stream)
        elif self._problems == MAX_PROBLEM_LINES + 1:
            self._bar.write(
                "... more problems not shown; `feedback-pipeline failures` lists them all",
                file=self._stream,
            )

    def notice(self, message: str) -> None:
        """A run-level event (an outage, a missing assistant): always shown, once."""
        self._bar.write(f"notice: {message}", file=self._stream)

    def close(self) -> None:
        self._bar.close()
