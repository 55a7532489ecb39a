"""The contract every queue source passes, over a real broker and real worker processes.

Each test publishes a few records, runs ``run --drain`` workers on one PostgreSQL ledger
against the fake API, does something hostile (a consumer that holds entries, a kill at each
stage, resets on two live workers, the same record twice, poison, a refused dead letter, an
outage, a refused credential) and judges by the API's own counts (each record stored exactly
once), by the broker (nothing left unacked that should not be) and by the clock: every drain
ends within the documented bound (docs/explanation/drain-bound.md,
:data:`brokers.workers.BOUND`) once it can.

Each test prints one ``FIGURES`` line (``pytest -s`` shows them): records, kills, duplicates,
never sent, and the longest time to end.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import content_of, make_rows
from pg_helpers import PgSchema
from tcp_proxy import TcpProxy

from brokers.corpus import corpus_lines
from brokers.workers import BOUND, CLAIM_IDLE, LEASE, SLACK, TIMEOUT, Workers
from pipeline.fake import FakeServer, FakeState, Faults

OK = "aia_asst_contract"
ROWS = 12
#: --claim-idle of workers handed entries before they start (longer than a worker takes to
#: start, so that each keeps its own), and how long such a run may take: the bound with it.
_SPREAD_IDLE = 5.0
_SPREAD_LIMIT = BOUND - CLAIM_IDLE + _SPREAD_IDLE + 2 * SLACK


class Broker(ABC):
    """What the contract needs of a broker; each ``test_<broker>.py`` implements it."""

    name: str
    port: int  # where the broker listens (a proxy in front of it forwards there)
    #: Whether entries a silent (not dead) consumer holds are taken over after
    #: ``--claim-idle`` (Redis), or only once its connection goes (RabbitMQ).
    takes_over_idle: bool

    @abstractmethod
    def url(self, consumer: str, port: int | None = None) -> str:
        """The source URL of worker ``consumer`` (through a proxy listening on ``port``)."""

    def carries(self, body: bytes) -> bool:
        """Whether the broker carries ``body`` at all: one it refuses at publish (over its
        largest message, bytes it cannot hold) never reaches a worker, so it is no poison
        case for this broker."""
        return True

    @abstractmethod
    def publish(self, bodies: Sequence[bytes]) -> None:
        """Each body (a JSON object, or poison) as one entry."""

    @abstractmethod
    def publish_poison(self) -> int:
        """Entries only this broker can carry badly; how many were published."""

    @abstractmethod
    def hold(self, count: int, consumer: str) -> Callable[[], None]:
        """A consumer of the test's own takes ``count`` entries and holds them unacked;
        the function returned makes it die (its connection goes)."""

    def spread(self, consumers: Sequence[str], each: int) -> None:  # noqa: B027 - optional
        """Hand ``each`` entries to each of ``consumers`` before they start, where the
        broker allows it (Redis: a restarted consumer gets its pending entries back)."""

    @abstractmethod
    def refuse_dead_letters(self) -> None:
        """From now on, the broker refuses every dead-letter copy."""

    @abstractmethod
    def left(self) -> int:
        """Entries neither acked nor dead-lettered (call once every worker has ended)."""

    @abstractmethod
    def dead_letters(self) -> list[dict[str, str]]:
        """Each dead letter's ``reason`` and ``truncated`` (empty when whole)."""

    def publish_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        self.publish([json.dumps(row).encode() for row in rows])


def _count(schema: PgSchema, sql: str) -> int:
    try:
        return int(asyncio.run(schema.fetch(sql))[0][0])
    except asyncpg.UndefinedTableError:  # no worker has created the tables yet
        return 0


def figures(story: str, **values: object) -> None:
    print(f"FIGURES {json.dumps({'story': story, **values})}")


def never_sent(api: FakeServer, rows: Sequence[dict[str, Any]]) -> int:
    stored = api.state.content_counts()
    return sum(1 for row in rows if content_of(row) not in stored)


def check_once(api: FakeServer, rows: Sequence[dict[str, Any]]) -> None:
    duplicates = sum(api.state.duplicates().values())
    assert (never_sent(api, rows), duplicates) == (0, 0), "never sent, duplicates"
    assert api.state.stored_count == len(rows)


class BrokerContract:
    """The contract. A subclass provides the ``broker`` fixture (a :class:`Broker`)."""

    @pytest.fixture
    def api(self, clean_env: None) -> Iterator[FakeServer]:
        with FakeServer(FakeState(faults=Faults(seed=21), known_assistants=[OK])) as server:
            yield server

    @pytest.fixture
    def workers(self, api: FakeServer, pg_schema: PgSchema, tmp_path: Path) -> Iterator[Workers]:
        made = Workers(api, pg_schema.url(lease=str(LEASE)), tmp_path)
        try:
            yield made
        finally:
            made.stop_all()

    # -- poison ------------------------------------------------------------------------------

    def test_poison_is_dead_lettered_and_never_stops_a_worker(
        self, broker: Broker, workers: Workers, api: FakeServer, tmp_path: Path
    ) -> None:
        rows = make_rows(ROWS, OK)
        lines = corpus_lines(tmp_path / "corpus")
        poison = [
            b"{" * 100_000,  # nested too deep for the parser: a RecursionError
            b'{"session_id": "dup", "score": 0.1, "score": 0.9}',  # a key given twice
            b"not json",
            b"[1, 2]",
            b'{"session_id": "x", "score": "\xff"}',  # not UTF-8
            json.dumps({"session_id": "big", "text": "x" * (2 << 20)}).encode(),  # over 1 MiB
            json.dumps({"session_id": "bad", "score": 7}).encode(),
            *lines.poison,
        ]
        poison = [body for body in poison if broker.carries(body)]
        broker.publish_rows(rows[:6])
        broker.publish(poison)
        extra = broker.publish_poison()
        broker.publish_rows(rows[6:])
        since = time.monotonic()
        for name in ("w0", "w1"):
            workers.start(name, broker.url(name), "--assistant-id", OK)
        ends = [workers.finish(name, since, BOUND + 2 * SLACK) for name in ("w0", "w1")]

        assert all(code in (0, 1) for code, _ in ends), ends  # invalid records: exit 1
        check_once(api, rows)
        letters = broker.dead_letters()
        assert len(letters) == len(poison) + extra
        assert all(letter["reason"].startswith("invalid: ") for letter in letters)
        # The broker's own poison includes one whose whole copy cannot be written: written
        # truncated, with what was left out, and said.
        assert len([letter for letter in letters if letter["truncated"]]) == 1
        assert sum(" written truncated" in workers.output(n) for n in ("w0", "w1")) == 1
        assert broker.left() == 0
        figures(
            "poison", broker=broker.name, records=ROWS, poison=len(letters),
            never_sent=never_sent(api, rows), longest_s=round(max(t for _, t in ends), 1),
        )  # fmt: skip

    def test_a_refused_dead_letter_copy_costs_its_entry_not_the_run(
        self, broker: Broker, workers: Workers, api: FakeServer
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.refuse_dead_letters()
        broker.publish_rows(rows[:6])
        broker.publish([b"not json", b'{"session_id": "bad", "score": 7}'])
        broker.publish_rows(rows[6:])
        since = time.monotonic()
        worker = workers.start("w0", broker.url("w0"))
        code, took = workers.finish("w0", since)

        assert code == 1, worker.output  # two invalid records; the run went on
        assert len(re.findall(r"dead letter to \S+ refused", worker.output)) == 2, worker.output
        check_once(api, rows)
        assert broker.left() == 2  # not acked without a copy: still there for a later run
        figures(
            "refused dead letter",
            broker=broker.name,
            records=ROWS,
            never_sent=0,
            longest_s=round(took, 1),
        )

    # -- waiting for others ------------------------------------------------------------------

    def test_a_drain_waits_for_entries_another_consumer_holds(
        self, broker: Broker, workers: Workers, api: FakeServer
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.publish_rows(rows)
        die = broker.hold(4, "holder")
        # Redis takes a silent holder's entries over after --claim-idle: long enough here to
        # see the wait said.
        idle = _SPREAD_IDLE if broker.takes_over_idle else CLAIM_IDLE
        worker = workers.start("w0", broker.url("w0"), "--claim-idle", str(idle))
        # Waiting once everything but the held entries is sent (the line may come earlier).
        workers.wait_until(
            lambda: (
                ("waiting for" in worker.output and never_sent(api, rows) == 4)
                or worker.proc.poll() is not None
            ),
            "the worker to wait",
        )
        assert worker.proc.poll() is None, "ended, or never said for what it waits"
        assert re.search(r"waiting for .*(held by consumer holder|other consumer)", worker.output)
        assert never_sent(api, rows) == 4
        since = time.monotonic()
        die()
        code, took = workers.finish("w0", since, BOUND - CLAIM_IDLE + idle + SLACK)

        assert code == 0, worker.output
        check_once(api, rows)
        assert broker.left() == 0
        figures(
            "drain waits for others",
            broker=broker.name,
            records=ROWS,
            never_sent=0,
            longest_s=round(took, 1),
        )

    # -- unknown outcomes, twice-enqueued records ----------------------------------------------

    def test_unknown_outcomes_on_two_live_workers_end(
        self, broker: Broker, workers: Workers, api: FakeServer
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.publish_rows(rows)
        names = ("w0", "w1")
        # Each holds entries the other waits for (not taken over at its start: a long
        # --claim-idle).
        broker.spread(names, 2)
        api.state.update_faults({"reset_rate": 1.0})  # every store answered with a reset
        since = time.monotonic()
        for name in names:
            workers.start(name, broker.url(name), "--claim-idle", str(_SPREAD_IDLE))
        ends = [workers.finish(name, since, _SPREAD_LIMIT) for name in names]

        assert [code for code, _ in ends] == [0, 0], [w.output for w in workers.running.values()]
        check_once(api, rows)  # each was stored by its first request: found, never resent
        # Logged as the ledger holds them: unknown until reconciled, never "failed".
        said = workers.output("w0") + workers.output("w1")
        assert "unknown (may be stored; reconcile settles it): " in said
        assert not re.search(r": failed: \w+Error", said)
        assert broker.left() == 0
        figures(
            "unknown on two live workers", broker=broker.name, records=ROWS, kills=0,
            duplicates=0, never_sent=0, longest_s=round(max(t for _, t in ends), 1),
        )  # fmt: skip

    def test_the_same_record_enqueued_twice_with_resets(
        self, broker: Broker, workers: Workers, api: FakeServer
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.publish_rows(rows)
        broker.publish_rows(rows)  # the docs support enqueuing a file twice
        names = ("w0", "w1")
        broker.spread(names, 3)
        api.state.update_faults({"reset_rate": 0.5})
        since = time.monotonic()
        for name in names:
            workers.start(name, broker.url(name), "--claim-idle", str(_SPREAD_IDLE))
        ends = [workers.finish(name, since, _SPREAD_LIMIT) for name in names]

        assert [code for code, _ in ends] == [0, 0], [workers.output(n)[-3000:] for n in names]
        check_once(api, rows)
        assert broker.left() == 0
        figures(
            "same record twice", broker=broker.name, records=2 * ROWS, kills=0, duplicates=0,
            never_sent=0, longest_s=round(max(t for _, t in ends), 1),
        )  # fmt: skip

    # -- kills, outages, credentials ---------------------------------------------------------

    @pytest.mark.parametrize(
        "stage", ["before the POST", "between POST and outcome", "between outcome and ack"]
    )
    def test_a_worker_killed_at_each_stage_has_its_entries_taken_over(
        self, stage: str, broker: Broker, workers: Workers, api: FakeServer, pg_schema: PgSchema
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.publish_rows(rows)
        in_flight = "SELECT count(*) FROM {s}.records WHERE state = 'in_flight'"
        sent = "SELECT count(*) FROM {s}.records WHERE state = 'sent'"
        proxy = _proxy(broker.port)  # the victim's way to the broker
        try:
            # Claimed and held back by 429s (never stored); on the wire (stored late, after
            # the kill, but within --timeout: the bound a dead worker's requests are waited
            # for; stored 5 s late, a record was at times found missing and sent again);
            # or sent and recorded while its acks are lost on the way.
            by_stage: dict[str, dict[str, Any]] = {
                "before the POST": {"throttle_rps": 0.01},
                "between POST and outcome": {"latency_ms": 1000 * TIMEOUT * 0.75},
                "between outcome and ack": {"latency_ms": 100},
            }
            faults = by_stage[stage]
            api.state.update_faults(faults)
            workers.start("victim", broker.url("victim", proxy.port))
            if stage == "before the POST":
                workers.wait_until(lambda: _count(pg_schema, in_flight) >= 2, "claims")
            elif stage == "between POST and outcome":
                workers.wait_until(lambda: api.state.posts_received >= 2, "requests sent")
            else:
                workers.wait_until(lambda: _count(pg_schema, sent) >= 2, "outcomes")
                proxy.freeze()
                workers.wait_until(lambda: _count(pg_schema, in_flight) == 0, "all recorded")
            workers.kill("victim")
            proxy.cut()
        finally:
            proxy.close()
        left_by_victim = broker.left()
        assert left_by_victim > 0, "the victim left nothing to take over"
        if stage == "between outcome and ack":
            assert _count(pg_schema, sent) + left_by_victim > ROWS, "no sent record unacked"
        api.state.update_faults({"throttle_rps": None, "latency_ms": 0})
        since = time.monotonic()
        survivor = workers.start("survivor", broker.url("survivor"))
        code, took = workers.finish("survivor", since)

        assert code == 0, survivor.output
        check_once(api, rows)
        assert broker.left() == 0
        figures(
            f"killed {stage}", broker=broker.name, records=ROWS, kills=1, duplicates=0,
            left_by_victim=left_by_victim, never_sent=0, longest_s=round(took, 1),
        )  # fmt: skip

    def test_a_broker_outage_mid_run_ends_the_run_and_the_rerun_finishes(
        self, broker: Broker, workers: Workers, api: FakeServer
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.publish_rows(rows)
        api.state.update_faults({"latency_ms": 100})
        proxy = _proxy(broker.port)
        try:
            cut = workers.start("cut", broker.url("cut", proxy.port))
            workers.wait_until(lambda: api.state.stored_count >= 2, "records stored")
            proxy.cut()
            since = time.monotonic()
            code, took = workers.finish("cut", since)
        finally:
            proxy.close()
        assert code == 3, cut.output  # the broker went away: one line, exit 3
        assert "Traceback" not in cut.output
        api.state.update_faults({"latency_ms": 0})
        workers.start("rerun", broker.url("rerun"))
        rerun, took_rerun = workers.finish("rerun", time.monotonic())

        assert rerun == 0
        check_once(api, rows)
        assert broker.left() == 0
        figures(
            "broker outage", broker=broker.name, records=ROWS, never_sent=0,
            longest_s=round(max(took, took_rerun), 1),
        )  # fmt: skip

    def test_a_refused_credential_releases_the_records_it_met(
        self, broker: Broker, workers: Workers, api: FakeServer
    ) -> None:
        rows = make_rows(ROWS, OK)
        broker.publish_rows(rows)
        wrong = workers.start("wrong", broker.url("wrong"), token="not-the-token")
        code, _ = workers.finish("wrong", time.monotonic())

        assert code == 3, wrong.output  # the run ends; not the records' fault
        assert broker.dead_letters() == []
        assert broker.left() == ROWS  # nothing acked: all still there for the rerun
        workers.start("right", broker.url("right"))
        code, took = workers.finish("right", time.monotonic())

        assert code == 0
        check_once(api, rows)
        assert broker.left() == 0
        figures("401", broker=broker.name, records=ROWS, never_sent=0, longest_s=round(took, 1))


def _proxy(port: int) -> TcpProxy:
    """A proxy of the test's own in front of the broker's ``port``, started."""
    proxy = TcpProxy("127.0.0.1", port)
    proxy.start()
    return proxy
