"""The shared PostgreSQL ledger: many writers at once, owners and leases, replay splitting."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from pg_helpers import PG_URL, PgSchema, pg_schema
from tcp_proxy import TcpProxy, pg_proxy

from pipeline.errors import ConfigError, LedgerError
from pipeline.ledger import Decision, open_ledger
from pipeline.ledger.postgres.ledger import PostgresLedger
from pipeline.ledger.postgres.link import Link
from pipeline.models import Accepted, FeedbackRecord, Outcome, Status

__all__ = ["pg_proxy", "pg_schema"]  # fixtures, used by name


class Workers:
    """Ledgers of several runs on one schema (each its own pool), closed after the test."""

    def __init__(self, schema: PgSchema) -> None:
        self.schema = schema
        self.open: list[PostgresLedger] = []

    async def __call__(self, run_id: str, *, command: str = "run", **url: str) -> PostgresLedger:
        ledger = await open_ledger(self.schema.url(**url), run_id, command=command)
        assert isinstance(ledger, PostgresLedger)
        self.open.append(ledger)
        return ledger

    async def close(self, ledger: PostgresLedger) -> None:
        self.open.remove(ledger)
        await ledger.close()


@pytest.fixture
async def workers(pg_schema: PgSchema) -> AsyncIterator[Workers]:
    made = Workers(pg_schema)
    yield made
    for ledger in made.open:
        await ledger.close()


def item(n: int) -> Accepted:
    record = FeedbackRecord(assistant_id="aia_asst_pg", session_id=f"s{n}", score=0.5)
    return Accepted.of(f"in.csv:{n}", record)


async def expire(schema: PgSchema, run_id: str) -> None:
    """What a kill -9 leaves once the lease ran out: a run whose lease is in the past."""
    await schema.fetch("UPDATE {s}.runs SET lease_until = 0 WHERE run_id = $1", run_id)


async def test_two_claimers_never_both_get_send(workers: Workers) -> None:
    a, b = await workers("a"), await workers("b")
    for round_ in range(40):
        batch = [item(round_ * 100 + i) for i in range(25)]
        first, second = await asyncio.gather(a.claim(batch), b.claim(list(reversed(batch))))
        second.reverse()
        for one, other in zip(first, second, strict=True):
            assert sorted([one, other]) == sorted([Decision.SEND, Decision.UNCERTAIN])
        # Both fail their share; each retakes only the other's failures, one of them wins.
        await a.record(
            [
                Outcome(i.key, Status.FAILED, 1, 503)
                for i, d in zip(batch, first, strict=True)
                if d is Decision.SEND
            ]
        )
        await b.record(
            [
                Outcome(i.key, Status.FAILED, 1, 503)
                for i, d in zip(batch, second, strict=True)
                if d is Decision.SEND
            ]
        )
        c = await workers(f"c{round_}")
        d = await workers(f"d{round_}")
        third, fourth = await asyncio.gather(c.claim(batch), d.claim(batch))
        assert all(
            (x is Decision.SEND) != (y is Decision.SEND) for x, y in zip(third, fourth, strict=True)
        )
        await workers.close(c)
        await workers.close(d)


async def test_two_replays_at_once_split_the_failed_records(workers: Workers) -> None:
    first = await workers("r1")
    records = [item(i) for i in range(300)]
    await first.claim(records)
    await first.record([Outcome(r.key, Status.FAILED, 3, 503) for r in records])
    await workers.close(first)
    one, two = await workers("p1", command="replay"), await workers("p2", command="replay")

    async def replay(ledger: PostgresLedger) -> list[str]:
        sent: list[str] = []
        async for batch in ledger.failed(20):
            decisions = await ledger.claim(batch)
            assert decisions == [Decision.SEND] * len(batch)
            sent.extend(a.key for a in batch)
            await ledger.record(
                [Outcome(a.key, Status.SENT, 1, 201, f"aia_fdbk_{a.key}") for a in batch]
            )
        return sent

    left, right = await asyncio.gather(replay(one), replay(two))
    assert not set(left) & set(right)
    assert sorted(left + right) == sorted(r.key for r in records)
    assert await one.counts() == {"sent": 300}


async def test_records_taken_for_replay_but_never_claimed_go_back_to_failed(
    workers: Workers,
) -> None:
    first = await workers("r1")
    records = [item(i) for i in range(5)]
    await first.claim(records)
    await first.record([Outcome(r.key, Status.FAILED, 3, 503) for r in records])
    await workers.close(first)
    replay = await workers("p1", command="replay")
    async for _ in replay.failed(5):
        break  # replay --limit 0: took a batch, claimed nothing
    await workers.close(replay)
    again = await workers("p2", command="replay")
    assert [len(b) async for b in again.failed(10)] == [5]


async def test_a_live_owners_records_are_not_reconciled_until_its_lease_expires(
    workers: Workers, pg_schema: PgSchema
) -> None:
    slow, other = await workers("slow"), await workers("other")
    records = [item(i) for i in range(3)]
    assert await slow.claim(records) == [Decision.SEND] * 3
    before = await pg_schema.fetch("SELECT lease_until FROM {s}.runs WHERE run_id = 'slow'")
    await slow.heartbeat()
    after = await pg_schema.fetch("SELECT lease_until FROM {s}.runs WHERE run_id = 'slow'")
    assert after[0][0] > before[0][0]  # the heartbeat renews the lease
    assert await other.uncertain(this_run=False) == []
    assert await other.claim(records) == [Decision.UNCERTAIN] * 3  # never sent twice
    await expire(pg_schema, "slow")
    leftovers = await other.uncertain(this_run=False)
    assert sorted(r.key for r, _ in leftovers) == sorted(r.key for r in records)
    assert {run for _, run in leftovers} == {"slow"}
    # Only reconciliation settles them (a plain outcome of another run's claim is refused);
    # the dead owner's late write cannot undo that.
    found = [Outcome(r.key, Status.SENT, 1, 201, f"aia_fdbk_{r.key[:8]}") for r in records]
    assert await other.record(found) == {r.key for r in records}
    assert await other.counts() == {"in_flight": 3}
    assert await other.settle(found, this_run=False) == {r.key for r in records}
    late = [Outcome(r.key, Status.FAILED, 1, error_message="timed out") for r in records]
    assert await slow.record(late) == {r.key for r in records}
    assert await other.counts() == {"sent": 3}


async def test_an_owner_that_lost_its_record_cannot_overwrite_the_new_owner(
    workers: Workers, pg_schema: PgSchema
) -> None:
    old = await workers("old")
    record = item(1)
    await old.claim([record])
    await old.record([Outcome(record.key, Status.FAILED, 1, 503)])
    new = await workers("new")
    assert await new.claim([record]) == [Decision.SEND]
    await old.record([Outcome(record.key, Status.SENT, 1, 201, "aia_fdbk_late")])
    rows = await pg_schema.fetch("SELECT state, run_id FROM {s}.records")
    assert [(r["state"], r["run_id"]) for r in rows] == [("in_flight", "new")]


async def test_holder_lists_the_live_workers(workers: Workers, pg_schema: PgSchema) -> None:
    one, two = await workers("w1"), await workers("w2")
    host = socket.gethostname()
    assert await one.holder() == f"workers alive: w1@{host}, w2@{host}"
    await expire(pg_schema, "w2")
    assert await one.holder() == f"workers alive: w1@{host}"
    await workers.close(two)
    assert "w2" not in (await one.holder() or "")


async def test_many_workers_creating_the_tables_at_once(workers: Workers) -> None:
    opened = await asyncio.gather(*(workers(f"w{i}") for i in range(4)))
    assert [await ledger.counts() for ledger in opened] == [{}] * 4


async def test_newer_schema_is_refused(workers: Workers, pg_schema: PgSchema) -> None:
    await workers("w1")
    await pg_schema.fetch("UPDATE {s}.ledger_version SET version = 99")
    with pytest.raises(LedgerError, match="schema version 99 is newer"):
        await workers("w2")


@pytest.mark.parametrize(
    ("query", "message"),
    [("schema=Bad-Name", "schema must be"), ("schema=ok&lease=0.1", "lease must be")],
)
async def test_bad_url_parameters_are_configuration_errors(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await open_ledger(
            f"postgresql://postgres@127.0.0.1:5432/postgres?{query}", "r", command="run"
        )


async def test_an_unreachable_server_names_the_url_without_its_password() -> None:
    with pytest.raises(LedgerError, match="cannot connect") as caught:
        await open_ledger("postgresql://u:hunter2@127.0.0.1:1/db", "r", command="run")
    assert "hunter2" not in str(caught.value)


async def test_a_call_its_caller_gave_up_on_does_not_break_the_link(pg_schema: PgSchema) -> None:
    """A run that ends during a lease renewal cancels it: the link stays usable, so the
    run's end (and its lease's) is still written."""
    link, conn = await Link.connect(PG_URL, "ledger")
    await link.pool.release(conn)
    call = asyncio.create_task(
        link.call("sleeping", lambda: link.pool.execute("SELECT pg_sleep(0.3)"))
    )
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not link.broken
    assert await link.call("reading", lambda: link.pool.fetchval("SELECT 1")) == 1
    await link.close()


async def test_a_call_that_does_not_answer_in_time_is_abandoned_and_named() -> None:
    link, conn = await Link.connect(PG_URL, "postgresql://u:***@h/db")
    await link.pool.release(conn)
    with pytest.raises(
        LedgerError, match=r"postgresql://u:\*\*\*@h/db: sleeping: no answer within"
    ):
        await link.call("sleeping", lambda: link.pool.execute("SELECT pg_sleep(5)"), 0.2)
    assert link.broken
    await asyncio.wait_for(link.close(), 6)


async def test_a_connection_that_cannot_go_back_to_its_pool_ends_without_a_traceback(
    pg_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg hands a connection back to its pool under a shield: when the call doing it is
    abandoned (the link stalled) and the hand-back then fails as the link closes, nobody is
    left to read that error, and it must not reach stderr as a traceback."""
    caplog.set_level(logging.DEBUG, logger="pipeline.ledger.postgres.link")
    link, conn = await Link.connect(pg_proxy.url_of(PG_URL), "ledger")
    assert await conn.fetchval("SELECT 1") == 1
    pg_proxy.stall()  # the hand-back's reset query gets no answer
    with pytest.raises(LedgerError, match="returning: no answer within"):
        await link.call("returning", lambda: link.pool.release(conn), 0.3)
    await asyncio.wait_for(link.close(), 10)
    for _ in range(20):  # the shielded hand-back fails a few loop steps later
        await asyncio.sleep(0.01)
        gc.collect()
    unread = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert unread == []
    kept_back = [r for r in caplog.records if "could not be returned" in r.getMessage()]
    assert len(kept_back) == 1
    assert kept_back[0].levelno == logging.DEBUG
