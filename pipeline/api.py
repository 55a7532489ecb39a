"""The Python API: what ``run``, ``replay`` and ``reconcile`` do, for a program (a task of a
scheduler such as Airflow, Dagster or Prefect, or a plain script)::

    import pipeline

    summary = pipeline.run(
        ["ratings.csv"],
        settings=pipeline.Settings(ledger="feedback.sqlite3", assistant_id="aia_asst_..."),
        credentials=pipeline.Credentials.of(account_sid="AC...", auth_token="..."),
    )
    print(summary.sent, summary.exit_code)

- **Nothing is read or installed behind the program's back.** ``Settings(...)`` is what it is
  given and the defaults (``Settings.from_env()`` reads the config file and the
  ``FEEDBACK_PIPELINE_*`` variables, as the command line does); ``Credentials.of(...)`` the
  same (``Credentials()`` reads ``TWILIO_*``). No SIGINT/SIGTERM handler is installed unless
  ``handle_signals=True`` (and then only by a run on the main thread's own loop: signals are
  delivered there). Logging goes to the ``pipeline`` logger, configured by the program.
- **Any thread, any loop.** The synchronous calls work from a worker thread, and from inside a
  running event loop (the run then goes on a fresh loop in a private thread, and the caller's
  thread waits for it); ``arun``, ``areplay`` and ``areconcile`` are the coroutines.
- **Errors** (:mod:`pipeline.errors`): :class:`~pipeline.errors.ConfigError` for bad settings,
  missing credentials or a missing extra (:class:`~pipeline.errors.MissingExtraError`), and
  :class:`~pipeline.errors.SourceError` for a source that cannot be opened, both before
  anything is sent; :class:`~pipeline.errors.LedgerError` for an unusable ledger;
  :class:`~pipeline.errors.AbortedError` when the run stopped early (authentication refused,
  an outage, a signal), with the run's :class:`Summary` as its ``summary``. Otherwise the
  :class:`Summary` is returned: ``exit_code`` is what the command would exit with (0 all
  sent, 1 records failed, invalid or left unknown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pipeline.config import Settings
from pipeline.credentials import Credentials
from pipeline.engine.reconcile import Settled
from pipeline.engine.runner import reconcile_ledger, replay_failed, run_sources
from pipeline.errors import AbortedError, ConfigError
from pipeline.observe.summary import Summary

T = TypeVar("T")
Source = str | os.PathLike[str]


async def arun(
    sources: Sequence[Source],
    *,
    settings: Settings,
    credentials: Credentials | None = None,
    dry_run: bool = False,
    handle_signals: bool = False,
) -> Summary:
    """Send every valid record of ``sources`` (files, ``-``, queue URLs) as ``run`` does;
    ``dry_run``: read, validate and check the ledger, send nothing (no credentials needed)."""
    settings.check_report()
    auth = None if dry_run else _auth(credentials)
    paths = [os.fspath(source) for source in sources]
    summary = await run_sources(
        settings, paths, auth=auth, dry_run=dry_run, handle_signals=handle_signals
    )
    return _ended(summary)


async def areplay(
    *,
    settings: Settings,
    credentials: Credentials,
    include_rejected: bool = False,
    limit: int | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Send again the records the ledger holds as failed, as ``replay`` does: those the API
    may still take, or every one with ``include_rejected``; at most ``limit``."""
    settings.check_report()
    summary = await replay_failed(
        settings,
        auth=_auth(credentials),
        retryable_only=not include_rejected,
        limit=limit,
        handle_signals=handle_signals,
    )
    return _ended(summary)


async def areconcile(*, settings: Settings, credentials: Credentials) -> Settled:
    """Settle the ledger's uncertain records with the API's List endpoint, as ``reconcile``
    does: how many were found stored (now sent) and how many were not (now failed)."""
    return await reconcile_ledger(settings, auth=_auth(credentials))


def run(
    sources: Sequence[Source],
    *,
    settings: Settings,
    credentials: Credentials | None = None,
    dry_run: bool = False,
    handle_signals: bool = False,
) -> Summary:
    """:func:`arun`, waited for (from any thread, inside a running loop or not)."""
    return _wait(
        lambda: arun(
            sources,
            settings=settings,
            credentials=credentials,
            dry_run=dry_run,
            handle_signals=handle_signals,
        )
    )


def replay(
    *,
    settings: Settings,
    credentials: Credentials,
    include_rejected: bool = False,
    limit: int | None = None,
    handle_signals: bool = False,
) -> Summary:
    """:func:`areplay`, waited for (from any thread, inside a running loop or not)."""
    return _wait(
        lambda: areplay(
            settings=settings,
            credentials=credentials,
            include_rejected=include_rejected,
            limit=limit,
            handle_signals=handle_signals,
        )
    )


def reconcile(*, settings: Settings, credentials: Credentials) -> Settled:
    """:func:`areconcile`, waited for (from any thread, inside a running loop or not)."""
    return _wait(lambda: areconcile(settings=settings, credentials=credentials))


def _wait(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` to its end on a loop of its own: this thread's, or, when this thread already
    runs a loop (a coroutine may not block it on another), a fresh one in a private thread."""

    async def main() -> T:
        return await work()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="feedback-pipeline") as pool:
        return pool.submit(asyncio.run, main()).result()


def _auth(credentials: Credentials | None) -> tuple[str, str]:
    if credentials is None:
        raise ConfigError(
            "configuration error: credentials are required to send: pass "
            "credentials=Credentials.of(...) (or Credentials() to read TWILIO_*)"
        )
    return credentials.basic_auth()


def _ended(summary: Summary) -> Summary:
    """The summary of a run that finished; an AbortedError carrying it if it stopped early."""
    if summary.aborted:
        error = AbortedError(summary.aborted)
        error.summary = summary
        raise error
    return summary
