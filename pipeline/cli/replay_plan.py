"""What ``replay`` will send, and what it leaves out: the planning half of the command.

By default a replay sends only what the API may still take: records that ran out of
attempts (429, 5xx, timeouts), were not sent (the run stopped) or not stored (reconcile).
A permanent rejection (a 4xx other than 408 and 429: a bad field, an assistant that does not
exist) fails again the same way until a person fixes it (``failures``, then ``run``) or
retires it; ``--include-rejected`` sends those too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.cli.failures import reading
from pipeline.ledger.base import LedgerRecord, RecordFilter

#: Records ``replay --dry-run`` prints one line each.
SHOWN = 10


@dataclass
class Plan:
    to_send: int = 0
    left_out: int = 0  # permanent rejections a default replay does not send
    first: list[LedgerRecord] = field(default_factory=list)

    def lines(self, *, dry_run: bool) -> list[str]:
        """What to tell the user before (dry run: instead of) sending."""
        lines: list[str] = []
        if dry_run:
            lines.append(f"replay --dry-run: would send {self.to_send} failed records")
            lines.extend(
                f"  {r.location or r.key}: {r.http_status or '-'} {r.reason or ''}".rstrip()
                for r in self.first
            )
            if self.to_send > len(self.first):
                lines.append(f"  ... and {self.to_send - len(self.first)} more")
        if self.left_out:
            lines.append(
                f"replay: {self.left_out} failed records were rejected by the API for good "
                "(4xx) and are not sent: fix them (`failures --state failed`, then `run`), "
                "retire them (`retire`), or force them with --include-rejected"
            )
        return lines


async def plan(url: str, *, include_rejected: bool, limit: int | None) -> Plan:
    """Count (and show the first of) what a replay would send, reading the ledger only."""
    result = Plan()
    sendable = RecordFilter(("failed",), retryable_only=not include_rejected)
    async with reading(url, "replay") as ledger:
        async for batch in ledger.records(sendable):
            result.to_send += len(batch)
            result.first.extend(batch[: max(0, SHOWN - len(result.first))])
        if not include_rejected:
            async for batch in ledger.records(RecordFilter(("failed",))):
                result.left_out += len(batch)
            result.left_out -= result.to_send
    if limit is not None:
        result.to_send = min(result.to_send, limit)
        result.first = result.first[:limit]
    return result
