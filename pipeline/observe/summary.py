"""The run's summary: counts, top failure reasons, exit code; text and JSON. Its lines about
what is left open are :mod:`pipeline.observe.summary_lines`'; the problem lines while a run
goes are :mod:`pipeline.observe.problems`'."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.ledger import Decision
from pipeline.models import Outcome, Status
from pipeline.observe.problems import failure_reason
from pipeline.observe.summary_lines import error_lines, leftover_lines

#: Assistants a summary names at most (those records were sent to).
MAX_ASSISTANTS = 50
#: Failure reasons counted per run (the rest go to "other"), and shown in the summary.
MAX_REASONS, TOP_REASONS = 1000, 5
_REASON_CHARS = 160


@dataclass
class Summary:
    """The run's counts. ``read == sent + skipped + duplicate + invalid + failed + unknown +
    released + stopped_records`` at the end."""

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
    #: Read from a queue but not claimed before the run stopped (the batch read ahead): not
    #: part of ``read`` (no decision was made), left unacked on the queue, delivered again.
    read_ahead: int = 0
    #: Claimed, then not sent because the run stopped first (a signal, a refused credential,
    #: an abort): not a failure of the record. The ledger holds them as failed "not sent"; the
    #: rerun (or replay) sends them.
    stopped_records: int = 0
    #: Outcomes the ledger refused: the record was no longer this run's claim (its lease ran
    #: out and another worker settled it). Not counted anywhere else; the ledger has the state.
    fenced: int = 0
    #: Invalid or failed entries whose dead-letter copy the broker refused: left unacked on
    #: their queue (the run exits 1: its work is not all done).
    dead_letters_refused: int = 0
    would_send: int = 0  # dry runs only: what a real run would have sent
    unknown: int = 0  # outcome unknown (ambiguous failure, or left uncertain by a dead run)
    reconciled_found: int = 0  # uncertain records of earlier runs found stored: now sent
    reconciled_missing: int = 0  # ... found not stored: now failed, so sent again
    # This run's own unknown outcomes (resets, 5xx), settled at its end: part of sent / failed.
    reconciled_own_found: int = 0
    reconciled_own_missing: int = 0
    attempts: int = 0
    retries: int = 0
    aborted: str | None = None
    stopped: str | None = None  # a following run's normal end (a signal)
    concurrency: int | None = None  # the adaptive concurrency limit it converged to
    concurrency_range: tuple[int, int] | None = None  # lowest and highest it reached
    pauses: int = 0  # times every request held back (only refusals came back for a while)
    rate_cap: float | None = None  # the request-rate cap in force at the end (either below)
    rate_limit: float | None = None  # the user's --rate (None: no limit)
    rate_cap_found: float | None = None  # the cap the API showed by refusing, if any
    concurrency_found: int | None = None  # the in-flight limit the API showed, if any
    errors_noise: int = 0  # 503s, timeouts, resets at every level: no evidence of load
    errors_load: int = 0  # ... that rose with the requests in flight: a limit
    dry_run: bool = False
    max_invalid: int = 0  # exit 0 with up to this many invalid records (--max-invalid)
    max_failed: int = 0  # ... and up to this many failed ones (--max-failed)
    assistants: list[str] = field(default_factory=list)  # sent to (the first MAX_ASSISTANTS)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    duration_s: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)
    _reasons: Counter[str] = field(default_factory=Counter, repr=False)

    def decided(self, decision: Decision, reason: str | None = None) -> None:
        """One record read and claimed; ``reason``: why it is invalid, if it is."""
        self.read += 1
        if decision is Decision.SKIP:
            self.skipped += 1
        elif decision is Decision.DUPLICATE:
            self.duplicate += 1
        elif decision is Decision.INVALID:
            self.invalid += 1
            self.reason(f"invalid: {reason or 'unknown reason'}")
        elif decision is Decision.UNCERTAIN:
            self.unknown += 1
        elif self.dry_run:
            self.would_send += 1

    def note_assistants(self, ids: Iterable[str]) -> None:
        """The assistants records were sent to (the first :data:`MAX_ASSISTANTS`), for the
        report's "what was run"."""
        if len(self.assistants) < MAX_ASSISTANTS:
            for assistant in ids:
                if assistant not in self.assistants and len(self.assistants) < MAX_ASSISTANTS:
                    self.assistants.append(assistant)

    def skipped_earlier(self, count: int) -> None:
        """``count`` records read and skipped without a claim (a rerun's, sent before)."""
        self.read += count
        self.skipped += count

    def delivered(self, outcome: Outcome) -> None:
        self.attempts += outcome.attempts
        if outcome.status is Status.SENT:
            self.sent += 1
        elif outcome.status is Status.UNKNOWN:
            self.unknown += 1
        else:
            self.failed += 1
            self.reason(failure_reason(outcome))
            if outcome.attempts == 0:
                self.not_sent += 1

    def reason(self, text: str) -> None:
        """Count a reason for the top-reasons table (bounded: a run may last for days)."""
        text = text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
        if text in self._reasons or len(self._reasons) < MAX_REASONS:
            self._reasons[text] += 1
        else:
            self._reasons["other reasons"] += 1

    def top_reasons(self, n: int = TOP_REASONS) -> list[tuple[str, int]]:
        return self._reasons.most_common(n)

    @property
    def in_flight(self) -> int:
        """Records read and claimed whose outcome is not known (yet)."""
        settled = self.sent + self.skipped + self.duplicate + self.invalid + self.failed
        settled += self.released + self.fenced + self.stopped_records
        return self.read - settled - self.unknown - self.would_send

    def settled_own(self, found: int, missing: int) -> None:
        """This run's unknown outcomes, settled by reconciliation at its end."""
        self.unknown -= found + missing
        self.sent += found
        self.failed += missing
        self.reconciled_own_found += found
        self.reconciled_own_missing += missing

    def finish(self) -> None:
        self.duration_s = round(time.monotonic() - self._t0, 3)

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 3
        over = self.failed > self.max_failed or self.invalid > self.max_invalid
        left = self.unknown or self.in_flight or self.dead_letters_refused
        return 1 if over or left else 0

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        rate = self.sent / self.duration_s if self.duration_s else 0.0
        data.update(in_flight=self.in_flight, records_per_second=round(rate, 1))
        data["next_time"] = self.next_time
        data["exit_code"] = self.exit_code
        data["failure_reasons"] = [
            {"reason": reason, "count": count} for reason, count in self.top_reasons(20)
        ]
        if self.command == "enqueue":
            # Published to a queue, nothing sent to the API; and no ledger to skip with.
            data["published"] = data.pop("sent")
            for name in ("skipped", "duplicate"):
                data.pop(name, None)
        return data

    @property
    def next_time(self) -> str | None:
        """The options that start a run at the limits the API showed: an in-flight limit
        (refusals or errors that rose with the requests in flight), a rate it refused above.
        Never a limit that noise, an outage or a pause drove the run down to."""
        if self.concurrency_range is None:
            return None
        options = []
        found = self.concurrency_found
        if found is not None and found < self.concurrency_range[1]:
            options.append(f"--concurrency {found}")
        if self.rate_cap_found and (not self.rate_limit or self.rate_cap_found < self.rate_limit):
            options.append(f"--rate {int(self.rate_cap_found)}")
        return " ".join(options) or None

    def write_json(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.as_dict(), fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)

    def line(self) -> str:
        """The counts so far, in one line (a following run logs it every --log-every)."""
        verb, sent = ("would send", self.would_send) if self.dry_run else ("sent", self.sent)
        if self.command == "enqueue":
            # To a queue: nothing reaches the API here, and no ledger tells what was sent.
            return f"enqueue: read {self.read}, published {self.sent}, invalid {self.invalid}" + (
                f", failed {self.failed}" if self.failed else ""
            )
        line = (
            f"{self.command}: read {self.read}, {verb} {sent}, skipped {self.skipped} (sent "
            f"earlier), duplicate {self.duplicate}, invalid {self.invalid}, failed {self.failed}"
        )
        return line + (
            f", stopped {self.stopped_records} (not sent)" if self.stopped_records else ""
        )

    def text(self) -> str:
        return "\n".join([self.line(), *self.details()])

    def details(self, *, reasons: bool = True) -> list[str]:
        """The lines after the counts; ``reasons``: with the top failure reasons."""
        lines = []
        rate = self.sent / self.duration_s if self.duration_s else 0.0
        if self.command == "enqueue":
            lines.append(f"  in {self.duration_s:.2f}s, {rate:.0f} records/s")
        elif not self.dry_run:
            lines.append(
                f"  {self.attempts} requests ({self.retries} retries) in {self.duration_s:.2f}s, "
                f"{rate:.0f} records/s"
            )
        if self.concurrency_range is not None:
            low, high = self.concurrency_range
            mine = f"{self.rate_limit:.0f}/s (--rate)" if self.rate_limit else "none (--rate 0)"
            theirs = f"{self.rate_cap_found:.0f}/s" if self.rate_cap_found else "none found"
            lines.append(
                f"  flow control converged to: concurrency limit {self.concurrency} (ranged "
                f"{low}-{high}); rate limit {mine}, API rate cap {theirs}; everyone held back "
                f"{self.pauses} times"
            )
            lines.extend(error_lines(self))
            if self.next_time:
                lines.append(f"  to start there next time: {self.next_time}")
        if self.reconciled_found or self.reconciled_missing:
            lines.append(
                f"  reconciled {self.reconciled_found + self.reconciled_missing} uncertain records"
                f" of earlier runs: {self.reconciled_found} were stored (now sent), "
                f"{self.reconciled_missing} were not (sent if in the input, or by replay)"
            )
        own = self.reconciled_own_found + self.reconciled_own_missing
        if own:
            lines.append(
                f"  reconciled {own} outcomes of this run left unknown (resets, 5xx): "
                f"{self.reconciled_own_found} were stored (counted as sent), "
                f"{self.reconciled_own_missing} were not (counted as failed; replay sends them)"
            )
        lines.extend(leftover_lines(self))
        top = self.top_reasons() if reasons else []
        if top:
            lines.append("  top failure reasons:")
            lines.extend(f"  {count:>8}  {reason}" for reason, count in top)
        if self.max_invalid or self.max_failed:
            lines.append(
                f"  accepted without going red: up to {self.max_invalid} invalid, "
                f"{self.max_failed} failed (--max-invalid, --max-failed)"
            )
        return lines
