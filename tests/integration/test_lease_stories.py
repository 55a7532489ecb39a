"""Many workers, one ledger: a worker that lost its lease never sends, and never writes over
another. Real processes, a real PostgreSQL, Redis and RabbitMQ; judged by the fake API's own
counts (every record stored once) and by the ledger (no row left that a command cannot read).

Each story puts two faults together: a drain worker paused past its lease while another
works on (then resumed); a worker whose link to the ledger stalls, or is cut, while its link
to the API works; the ledger's server restarted mid-run.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from amqp_helpers import Msg, Queue, unique_queue
from conftest import assert_exactly_once, make_rows
from fleet import (
    LEASE,
    Fleet,
    Worker,
    bodiless,
    count,
    duplicates,
    in_flight_of,
    lease_expired,
    lines_with,
)
from pg_cluster import PgCluster, pg_cluster
from pg_helpers import PgSchema, pg_schema
from redis_helpers import Stream, stream
from tcp_proxy import TcpProxy, pg_proxy

from pipeline.fake import FakeServer, FakeState, Faults

__all__ = ["pg_cluster", "pg_proxy", "pg_schema", "stream"]  # fixtures, used by name
OK = "aia_asst_test"
ROWS = 200


@pytest.fixture
def api(clean_env: None) -> Iterator[FakeServer]:
    with FakeServer(FakeState(faults=Faults(seed=11), known_assistants=[OK])) as server:
        # Slow enough that a worker always holds requests on the wire and claims in hand.
        server.state.update_faults({"latency_ms": 40})
        yield server


@pytest.fixture
def fleet(api: FakeServer, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(api, tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


@pytest.fixture
def queue() -> Iterator[Queue]:
    yield from unique_queue()


Source = Callable[[str], str]


def _redis(stream: Stream, rows: list[dict[str, str]]) -> Source:
    stream.add(*rows)
    return stream.url


def _rabbit(queue: Queue, rows: list[dict[str, str]]) -> Source:
    queue.publish([Msg(json.dumps(r).encode(), message_id=uuid.uuid4().hex) for r in rows])
    return lambda _: queue.url()


def _working(fleet: Fleet, schema: PgSchema, victim: Worker) -> Callable[[], bool]:
    """The victim holds requests in flight, and the API has seen a fair part of the work."""
    return lambda: (
        fleet.api.state.posts_received >= ROWS // 5 and in_flight_of(schema, victim.run_id()) > 0
    )


def _sweep(fleet: Fleet, source: Source, ledger: str) -> None:
    """One more drain worker after the story: whatever the story left on the queue (a worker
    that ended with entries unacked) is sent now, exactly once."""
    sweeper = fleet.start("sweeper", source("sweeper"), ledger)
    assert fleet.end(sweeper, 60) == 0, fleet


def _judge(fleet: Fleet, schema: PgSchema, rows: list[dict[str, str]]) -> None:
    assert duplicates(fleet.api) == 0, fleet
    assert_exactly_once(fleet.api, rows)
    assert bodiless(schema) == 0, fleet
    for worker in fleet.workers:
        assert "Traceback" not in worker.output(), fleet


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_worker_paused_past_its_lease_never_sends_when_it_resumes(
    broker: str, fleet: Fleet, stream: Stream, queue: Queue, pg_schema: PgSchema
) -> None:
    rows = make_rows(ROWS, assistant=OK)
    source = _redis(stream, rows) if broker == "redis" else _rabbit(queue, rows)
    ledger = pg_schema.url(lease=LEASE)
    other, victim = (fleet.start(n, source(n), ledger) for n in ("w0", "w1"))
    fleet.wait(_working(fleet, pg_schema, victim), "the victim sending")
    fleet.signal(victim, signal.SIGSTOP)
    run_id = victim.run_id()
    posts_at_pause = fleet.api.state.posts_received
    # The other worker reconciles the victim's claims once its lease and its requests' time
    # bound are over (a RabbitMQ drain may end first: the victim's messages are not ready);
    # on Redis it takes the victim's entries over and sends them too.
    fleet.wait(
        lambda: (
            lease_expired(pg_schema, run_id)
            and (in_flight_of(pg_schema, run_id) == 0 or not other.alive)
        ),
        "the victim's lease over and its claims settled",
    )
    if broker == "redis":
        fleet.wait(lambda: fleet.api.state.stored_count >= ROWS, "every record stored")
    posts_before_resume = fleet.api.state.posts_received
    fleet.signal(victim, signal.SIGCONT)
    assert fleet.end(victim, 30) == 3, fleet
    assert lines_with(victim, "lease lost"), fleet
    assert fleet.end(other, 60) == 0, fleet
    _sweep(fleet, source, ledger)
    _judge(fleet, pg_schema, rows)
    print(
        f"{broker}: records {ROWS}, POSTs at the pause {posts_at_pause}, before the resume "
        f"{posts_before_resume}, in all {fleet.api.state.posts_received}, stored "
        f"{fleet.api.state.stored_count}, duplicates {duplicates(fleet.api)}"
    )


@pytest.mark.parametrize("fault", ["stall", "cut"])
def test_a_worker_whose_ledger_link_stalls_or_is_cut_stops_sending(
    fault: str, fleet: Fleet, stream: Stream, pg_schema: PgSchema, pg_proxy: TcpProxy
) -> None:
    rows = make_rows(ROWS, assistant=OK)
    source = _redis(stream, rows)
    ledger = pg_schema.url(lease=LEASE)
    other = fleet.start("w0", source("w0"), ledger)
    victim = fleet.start("w1", source("w1"), pg_proxy.url_of(ledger))
    fleet.wait(_working(fleet, pg_schema, victim), "the victim sending")
    if fault == "stall":
        pg_proxy.stall()  # its HTTP path still works; its ledger answers nothing
    else:
        pg_proxy.cut()
    fleet.note(f"ledger link {fault}")
    # Noticed within seconds: the lease (2 s) runs out without a renewal, or a call fails.
    assert fleet.end(victim, 30) == 3, fleet
    out = victim.output()
    assert "lease lost" in out or "ledger postgresql://" in out, fleet
    assert fleet.end(other, 60) == 0, fleet
    pg_proxy.resume()
    pg_proxy.restore()
    _sweep(fleet, source, ledger)
    _judge(fleet, pg_schema, rows)


def test_a_ledger_restarted_mid_run_ends_the_run_with_its_summary_and_the_rerun_is_exact(
    fleet: Fleet, stream: Stream, pg_cluster: PgCluster
) -> None:
    rows = make_rows(ROWS, assistant=OK)
    source = _redis(stream, rows)
    ledger = f"{pg_cluster.url}?schema=restart&lease={LEASE}"
    worker = fleet.start("w0", source("w0"), ledger)
    fleet.wait(lambda: fleet.api.state.posts_received >= ROWS // 4, "the worker sending")
    pg_cluster.restart()
    fleet.note("ledger restarted")
    code = fleet.end(worker, 30)
    out = worker.output()
    # One line naming the ledger (password masked) and the summary; exit 3, no traceback.
    assert code == 3, fleet
    assert "Traceback" not in out, fleet
    assert "internal error" not in out, fleet
    assert "ledger postgresql://postgres@127.0.0.1" in out, fleet
    assert "run: read" in out, fleet
    _sweep(fleet, source, ledger)
    assert duplicates(fleet.api) == 0, fleet
    assert_exactly_once(fleet.api, rows)


def test_a_late_outcome_never_overwrites_what_reconciliation_settled(
    fleet: Fleet, stream: Stream, pg_schema: PgSchema
) -> None:
    """The overwrite story: three drain workers, one paused past its lease while requests of
    its are on the wire (so its late outcomes come back after the others settled them); then
    every command on the ledger still works and finds nothing to do."""
    rows = make_rows(ROWS, assistant=OK)
    fleet.api.state.update_faults({"latency_ms": 150})
    source = _redis(stream, rows)
    ledger = pg_schema.url(lease=LEASE)
    workers = [fleet.start(n, source(n), ledger) for n in ("w0", "w1", "w2")]
    victim = workers[1]
    fleet.wait(_working(fleet, pg_schema, victim), "the victim sending")
    fleet.signal(victim, signal.SIGSTOP)
    run_id = victim.run_id()
    fleet.wait(
        lambda: lease_expired(pg_schema, run_id) and in_flight_of(pg_schema, run_id) == 0,
        "the victim's lease over and its claims settled",
    )
    fleet.signal(victim, signal.SIGCONT)
    assert fleet.end(victim, 30) == 3, fleet
    for worker in (workers[0], workers[2]):
        assert fleet.end(worker, 60) == 0, fleet
    _sweep(fleet, source, ledger)
    _judge(fleet, pg_schema, rows)
    sent = count(pg_schema, "SELECT count(*) FROM {s}.records WHERE state = 'sent'")
    assert sent == ROWS
