"""Command line: the ``feedback-pipeline`` group and its commands, one module each.

``run``, ``enqueue``, ``replay``, ``reconcile`` and ``fake-server`` (their own modules, their
shared options in :mod:`~pipeline.cli.options`), ``failures``, ``retire``, ``status``
(:mod:`~pipeline.cli.history`), ``stop``, ``validate`` and ``check``
(:mod:`~pipeline.cli.preflight`), ``config show`` (:mod:`~pipeline.cli.settings_view`).

Exit codes: 0 all sent (or no more invalid / failed records than --max-invalid /
--max-failed accept), 1 finished with failed or invalid records (over those thresholds) or
unknown ones, 2 usage or configuration error, 3 aborted (authentication refused, interrupted,
ledger unusable).
"""

from __future__ import annotations

import click

from pipeline.cli import (
    enqueue,
    failures,
    fake_server,
    history,
    preflight,
    reconcile,
    replay,
    retire,
    run,
    settings_view,
    stop,
)
from pipeline.version import __version__

_COMPLETION = (
    "\b\nShell completion (bash; zsh_source and fish_source likewise):\n"
    '  eval "$(_FEEDBACK_PIPELINE_COMPLETE=bash_source feedback-pipeline)"\n\n'
    "Run `feedback-pipeline COMMAND --help` for a command's example and exit codes."
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_COMPLETION,
)
@click.version_option(__version__, prog_name="feedback-pipeline")
def cli() -> None:
    """Submit human-feedback records to the Twilio Assistants Feedback API, exactly once."""


# Every command, registered here, in one place.
for _command in (
    run.run,
    enqueue.enqueue,
    replay.replay,
    reconcile.reconcile,
    fake_server.fake_server,
    failures.failures,
    retire.retire,
    history.status,
    stop.stop,
    preflight.validate,
    preflight.check,
    settings_view.config,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="feedback-pipeline")
