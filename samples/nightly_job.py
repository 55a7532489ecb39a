"""A nightly job through the Python API: send the day's files, exactly once, and fail loudly.

A plain script; a scheduler's task calls :func:`nightly` the same way (an Airflow
``PythonOperator``, a Dagster ``@op``, a Prefect ``@task``): the settings are built in code,
nothing is read from the environment but the credentials (which a scheduler keeps in its
secret store and hands over as ``TWILIO_*`` variables), no signal handler is installed (the
scheduler owns the process's signals), and every way the job can go wrong is an exception of
:mod:`pipeline.errors` that fails the task.

    python samples/nightly_job.py ratings.csv --ledger nightly.sqlite3 --assistant-id aia_asst_...
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import pipeline


def nightly(
    files: Sequence[str],
    *,
    ledger: str,
    assistant_id: str | None = None,
    base_url: str = "https://assistants.twilio.com",
    report: str | None = None,
) -> pipeline.Summary:
    """Send every valid record of ``files`` once (a rerun sends only what is left). Raises
    ConfigError or SourceError before anything is sent, LedgerError, or AbortedError (its
    ``summary`` says how far the run got)."""
    settings = pipeline.Settings(
        ledger=ledger,
        assistant_id=assistant_id,
        base_url=base_url,
        report=report,
        progress=False,  # a scheduler's log is no terminal
    )
    credentials = pipeline.Credentials()  # TWILIO_* from the environment: the secret store's
    return pipeline.run(files, settings=settings, credentials=credentials)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--assistant-id")
    parser.add_argument("--base-url", default="https://assistants.twilio.com")
    parser.add_argument("--report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        summary = nightly(
            args.files,
            ledger=args.ledger,
            assistant_id=args.assistant_id,
            base_url=args.base_url,
            report=args.report,
        )
    except pipeline.AbortedError as exc:
        print(f"nightly: aborted: {exc}", file=sys.stderr)
        return 3
    except pipeline.PipelineError as exc:
        print(f"nightly: {exc}", file=sys.stderr)
        return 2
    print(summary.line())
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
