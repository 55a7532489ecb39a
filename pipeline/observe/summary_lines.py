"""The summary's lines about what the API's errors showed and what a run left open (unknown,
not sent, in flight, released, on the queue), and how it ended."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.observe.summary import Summary


def error_lines(self: Summary) -> list[str]:
    """What the errors (503s, timeouts, resets) said about the API's limits."""
    lines = []
    if self.errors_noise:
        lines.append(
            f"  {self.errors_noise} errors (503, timeout, reset) at every level of requests "
            "in flight: not a limit"
        )
    if self.errors_load:
        found = self.concurrency_found
        limit = f" of {found} in flight" if found else ""
        lines.append(
            f"  {self.errors_load} errors rose with the requests in flight: a limit{limit}"
        )
    return lines


def leftover_lines(self: Summary) -> list[str]:
    """What is left open: unknown, not sent, in flight, released; and how the run ended."""
    lines: list[str] = []
    if self.unknown:
        lines.append(
            f"  {self.unknown} with an unknown outcome: the API may hold them; "
            "`reconcile` or the next run settles them"
        )
    if self.stopped_records:
        lines.append(
            f"  {self.stopped_records} not sent: the run stopped before their requests (the "
            "records are not at fault); the rerun sends them, as does replay"
        )
    if self.not_sent:
        lines.append(f"  {self.not_sent} of the failed were not sent; replay sends them")
    if self.in_flight:
        lines.append(f"  {self.in_flight} left in flight (outcome unknown)")
    if self.fenced:
        lines.append(
            f"  {self.fenced} outcomes not recorded: those records were no longer this "
            "worker's claims (its lease ran out; other workers settled them)"
        )
    return lines + queue_lines(self)


def queue_lines(self: Summary) -> list[str]:
    """What is left on the queue, and how the run ended."""
    lines: list[str] = []
    if self.released:
        lines.append(
            f"  {self.released} taken but not sent before the stop: left unacked on the "
            "queue, delivered again"
        )
    if self.read_ahead:
        lines.append(
            f"  {self.read_ahead} more read ahead and not claimed before the stop: left "
            "unacked on the queue, delivered again"
        )
    if self.dead_letters_refused:
        lines.append(
            f"  {self.dead_letters_refused} dead-letter copies refused by the broker: "
            "their entries are left unacked on the queue"
        )
    if self.stopped and not self.aborted:
        lines.append(f"  {self.stopped} (the normal end of a following run)")
    if self.aborted:
        lines.append(f"  aborted: {self.aborted}")
    return lines
