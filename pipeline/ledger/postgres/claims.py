"""The shared ledger's claims: which records of a batch this run takes, in one statement.

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` per batch (see
:data:`pipeline.ledger.postgres.sql.CLAIM`); each record taken gets a fencing token, kept
until its outcome is written. What is not taken is decided from the row as it stands.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import orjson

from pipeline.ledger.base import Decision
from pipeline.ledger.postgres import sql
from pipeline.ledger.postgres.link import LedgerParts
from pipeline.ledger.postgres.reads import now_iso
from pipeline.models import Accepted, Rejection, Status, invalid_key


class PostgresClaims(LedgerParts):
    """Claims of the ledger (:class:`pipeline.ledger.postgres.ledger.PostgresLedger` is one)."""

    _taken: set[str]
    _dry: set[str]
    _fences: dict[str, int]

    async def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        first: dict[str, Accepted] = {}
        for item in batch:
            if isinstance(item, Accepted):
                first.setdefault(item.key, item)

        async def claim() -> list[Decision]:
            if self._read_only:
                taken = await self._dry_claim(list(first))
            else:
                taken = await self._write_claims(batch, first)
            return await self._decide(batch, first, taken)

        return await self._link.call("claim", claim)

    async def sent_earlier(self, records: Sequence[tuple[str, str]]) -> set[str]:
        if self._empty or not records:
            return set()

        async def look_up() -> set[str]:
            rows = await self._pool.fetch(
                f"SELECT key FROM {self._s}.records WHERE key = ANY($1::text[]) "
                "AND state = 'sent' AND run_id <> $2",
                [key for key, _ in records],
                self.run_id,
            )
            found = {r["key"] for r in rows}
            fixed = [invalid_key(loc) for key, loc in records if loc and key in found]
            if fixed and not self._read_only:  # as in a claim
                await self._pool.execute(sql.DROP_FIXED.format(s=self._s), fixed)
            return found

        return await self._link.call("looking up what was sent", look_up)

    async def _write_claims(
        self, batch: Sequence[Accepted | Rejection], first: dict[str, Accepted]
    ) -> set[str]:
        # In key order: two runs lock the rows they both claim in the same order, so they
        # wait on each other instead of deadlocking.
        items = sorted(first.values(), key=lambda a: a.key)
        rejections = [i for i in batch if isinstance(i, Rejection)]
        now = now_iso()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                sql.CLAIM.format(s=self._s),
                [i.key for i in items],
                [i.record.assistant_id for i in items],
                [orjson.dumps(i.record.body()).decode() for i in items],
                [i.location for i in items],
                self.run_id,
                now,
                list(self._taken & first.keys()),
            )
            if rejections:
                await conn.execute(
                    sql.INVALID.format(s=self._s),
                    [r.key for r in rejections],
                    [r.location for r in rejections],
                    [r.reason for r in rejections],
                    [
                        None if r.fields is None else json.dumps(r.fields, default=str)
                        for r in rejections
                    ],
                    self.run_id,
                    now,
                )
            # A row that was invalid once and is fixed now: its location-keyed row goes.
            fixed = [invalid_key(i.location) for i in items if i.location]
            if fixed:
                await conn.execute(sql.DROP_FIXED.format(s=self._s), fixed)
        self._fences.update((r["key"], r["fence"]) for r in rows)
        taken = {r["key"] for r in rows}
        self._taken -= taken
        return taken

    async def _dry_claim(self, keys: list[str]) -> set[str]:
        known = await self._states(keys)
        taken = {
            k
            for k in keys
            if k not in self._dry
            and (k not in known or (known[k][0] in ("failed", "retired") and not known[k][2]))
        }
        self._dry |= taken
        return taken

    async def _states(self, keys: list[str]) -> dict[str, tuple[str, str, bool]]:
        """key -> (state, owner, whether the row lacks the body it needs)."""
        if self._empty or not keys:
            return {}
        rows = await self._pool.fetch(
            f"SELECT key, state, run_id, {sql.BODILESS} AS gone FROM {self._s}.records "
            "WHERE key = ANY($1::text[])",
            keys,
        )
        return {r["key"]: (r["state"], r["run_id"], r["gone"]) for r in rows}

    async def _decide(
        self, batch: Sequence[Accepted | Rejection], first: dict[str, Accepted], taken: set[str]
    ) -> list[Decision]:
        known = await self._states([k for k in first if k not in taken])
        decisions: list[Decision] = []
        seen: set[str] = set()
        for item in batch:
            if isinstance(item, Rejection):
                decisions.append(Decision.INVALID)
            elif item.key in seen or (item.key in self._dry and item.key not in taken):
                decisions.append(Decision.DUPLICATE)
            elif item.key in taken:
                decisions.append(Decision.SEND)
            else:
                decisions.append(self._verdict(known.get(item.key)))
            seen.add(item.key)
        await self._heal([first[k] for k, (_, _, gone) in known.items() if gone])
        return decisions

    async def _heal(self, items: list[Accepted]) -> None:
        """Rows without the body they need get it back from the input (see sql.HEAL)."""
        if items and not self._read_only:
            await self._pool.execute(
                sql.HEAL.format(s=self._s),
                [i.key for i in items],
                [i.record.assistant_id for i in items],
                [orjson.dumps(i.record.body()).decode() for i in items],
            )

    def _verdict(self, known: tuple[str, str, bool] | None) -> Decision:
        if known is None:
            # Not taken, yet not there: only a read-only ledger ends here (see _dry_claim).
            return Decision.DUPLICATE
        state, owner, gone = known
        if owner == self.run_id:
            return Decision.DUPLICATE
        if state == Status.SENT:
            return Decision.SKIP
        # In flight in another worker (alive: it finishes it; dead: reconciliation settles
        # it), unknown, or failed without its body (it may be stored): never sent twice,
        # never acked here.
        return Decision.UNCERTAIN
