"""Wires the stages together and owns a run's start-up and shutdown: the sources and the
ledger (both chosen by URL), the HTTP session, reconciliation before and after sending, the
run control (stop, heartbeat, signals), and the summary.
The stages themselves are in :mod:`pipeline.engine.stages`."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import Settings
from pipeline.delivery.client import FeedbackClient
from pipeline.delivery.delivery import Sending
from pipeline.engine import fresh_ledger
from pipeline.engine.columns import check_files
from pipeline.engine.control import RunControl
from pipeline.engine.fleet import introduce
from pipeline.engine.reading import raw_batches
from pipeline.engine.reconcile import Reconciler, Settled
from pipeline.engine.sending import BatchesOf, Run, deliver, scope_budget, session
from pipeline.engine.skip import skipping_sent
from pipeline.engine.spares import Spares
from pipeline.engine.stages import Batches, claim
from pipeline.engine.validate import Validator
from pipeline.errors import (
    LedgerError,
)
from pipeline.flow.budget import both
from pipeline.flow.compose import FlowControl
from pipeline.ledger import Ledger, open_ledger
from pipeline.logs import event
from pipeline.models import Rejection
from pipeline.observe.observer import Observer
from pipeline.observe.problems import Progress
from pipeline.observe.summary import Summary
from pipeline.sources import is_queue, open_source, source_options


async def run_sources(
    settings: Settings,
    paths: Sequence[str],
    *,
    auth: tuple[str, str] | None,
    dry_run: bool,
    handle_signals: bool = True,
) -> Summary:
    """The ``run`` command: read, validate, claim and deliver every record of ``paths``
    (files, ``-``, or queue URLs; a queue is followed until a signal unless ``drain``)."""
    options = source_options(settings)
    validator = Validator(
        default_assistant_id=settings.assistant_id,
        columns=settings.columns,
        ignore_extra=settings.ignore_extra_columns,
    )
    # Before the ledger is opened: a column that would not be sent costs nothing yet.
    check_files(
        paths, settings.format, settings.columns, ignore_extra=settings.ignore_extra_columns
    )
    queue = any(is_queue(path) for path in paths)
    follow = not settings.drain and queue
    async with contextlib.AsyncExitStack() as stack:
        sources = []
        for path in paths:  # all opened (and checked) before the ledger is
            source = await open_source(path, options)
            stack.push_async_callback(source.close)
            sources.append(source)

        def batches(ledger: Ledger, control: RunControl) -> Batches:
            return skipping_sent(raw_batches(sources, control), validator, ledger)

        return await _execute(
            "run",
            settings,
            auth,
            batches,
            dry_run=dry_run,
            follow=follow,
            queue=queue,
            sources=sources,
            handle_signals=handle_signals,
        )


async def replay_failed(
    settings: Settings,
    *,
    auth: tuple[str, str],
    retryable_only: bool = False,
    limit: int | None = None,
    handle_signals: bool = True,
) -> Summary:
    """The ``replay`` command: send again the records the ledger holds as ``failed`` (those
    the API may still take when ``retryable_only``; at most ``limit``)."""

    async def batches(ledger: Ledger, _: RunControl) -> Batches:
        left = limit
        async for batch in ledger.failed(settings.batch_size, retryable_only=retryable_only):
            if left is not None:
                batch, left = batch[:left], left - len(batch[:left])
            if batch:
                yield list(batch)
            if left == 0:
                return

    return await _execute(
        "replay", settings, auth, batches, dry_run=False, handle_signals=handle_signals
    )


async def _execute(
    command: str,
    settings: Settings,
    auth: tuple[str, str] | None,
    batches: BatchesOf,
    *,
    dry_run: bool,
    follow: bool = False,
    queue: bool = False,
    sources: Sequence[object] = (),
    handle_signals: bool = True,
) -> Summary:
    run_id = uuid.uuid4().hex[:16]
    summary = Summary(
        command,
        run_id,
        dry_run=dry_run,
        max_invalid=settings.max_invalid,
        max_failed=settings.max_failed,
    )
    control = RunControl(grace=settings.grace, service=follow, handle_signals=handle_signals)
    sending = None
    spares = Spares(settings.concurrency)  # the workers: more while some wait with no slot
    if not dry_run and auth is not None:
        flow = FlowControl(
            settings.concurrency, settings.rate, sleep=control.pause, on_freed=spares.waiting
        )
        sending = Sending(flow)
    observer = Observer(settings, summary, sources, sending)
    error: BaseException | None = None
    checked = command == "run" and not dry_run  # a new ledger matters where records are sent
    must_exist = settings.origin("ledger_must_exist") if settings.ledger_must_exist else None
    if checked and must_exist:
        fresh_ledger.refuse_missing(settings.ledger, must_exist)
    created = fresh_ledger.created_path(settings.ledger) if checked else None
    try:
        async with observer.watching():
            ledger = await open_ledger(
                settings.ledger,
                run_id,
                command=command,
                read_only=dry_run,
                request_bound=settings.timeout,
            )
            observer.started(await introduce(ledger, settings.job, sources))
            fresh = checked and await _announce(settings, ledger, created, must_exist, observer)
            parts = (observer, control, sending, spares)
            await _on_ledger(command, settings, ledger, parts, auth, batches, follow, queue, fresh)
    except BaseException as exc:
        error = exc
        raise
    finally:
        # The report and the metrics textfile, however the run ended (an abort, a signal, an
        # unusable ledger, a bug): a scheduler reads them precisely when something went wrong.
        observer.ended(error)
    return summary


async def _announce(
    settings: Settings,
    ledger: Ledger,
    created: Path | None,
    must_exist: str | None,
    observer: Observer,
) -> bool:
    """Whether the ledger is new, said before anything is sent (see fresh_ledger)."""
    try:
        return await fresh_ledger.announce(
            settings.ledger, ledger, created, must_exist, observer.progress.notice
        )
    except BaseException:
        await ledger.close()
        raise


async def _on_ledger(
    command: str,
    settings: Settings,
    ledger: Ledger,
    parts: tuple[Observer, RunControl, Sending | None, Spares],
    auth: tuple[str, str] | None,
    batches: BatchesOf,
    follow: bool,
    queue: bool,
    fresh: bool = False,
) -> None:
    """``parts``: the run's observer, control, for a run that sends the delivery's live
    state (None for a dry run, which sends nothing), and its workers."""
    observer, control, sending, spares = parts
    summary, progress = observer.summary, observer.progress
    try:
        if sending is None or auth is None:
            await _dry_run(ledger, batches(ledger, control), summary, progress)
            summary.aborted = control.reason  # a source that failed
        else:
            run = Run(
                settings, ledger, control, sending, spares, summary, progress, observer, fresh
            )
            await deliver(run, auth, batches, follow=follow, queue=queue)
    finally:
        summary.finish()
        try:
            await ledger.close(json.dumps(summary.as_dict()))
        except LedgerError as exc:
            # The records' states are written (or left in flight, as after a kill): the run
            # ends with its summary, and its lease runs out by itself.
            summary.aborted = summary.aborted or str(exc)
            progress.notice(f"{exc}; the run's end is not recorded in the ledger")


async def reconcile_ledger(settings: Settings, *, auth: tuple[str, str]) -> Settled:
    """The ``reconcile`` command: settle every uncertain record of the ledger."""
    ledger = await open_ledger(settings.ledger, uuid.uuid4().hex[:16], command="reconcile")
    try:
        control = RunControl()
        async with (
            session(settings, auth) as http,
            scope_budget(settings, auth, control, _notice) as shared,
        ):
            client = FeedbackClient(http, settings.base_url)
            reconciler = Reconciler(
                client,
                ledger,
                settle=settings.settle,
                max_attempts=settings.max_attempts,
                acquire=both(FlowControl(settings.concurrency, settings.rate).pace, shared),
            )
            return await reconciler.settle_leftovers()
    finally:
        await ledger.close()


def _notice(message: str) -> None:
    event(logging.WARNING, f"notice: {message}", "notice")


async def _dry_run(ledger: Ledger, batches: Batches, summary: Summary, progress: Progress) -> None:
    async for batch in batches:
        for item, decision in zip(batch, await claim(ledger, batch), strict=True):
            reason = item.reason if isinstance(item, Rejection) else None
            summary.decided(decision, reason)
            if reason is not None:
                progress.problem(item.location, f"invalid: {reason}")
