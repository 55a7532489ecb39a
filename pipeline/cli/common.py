"""What every command shares: the exit codes, and package errors turned into one line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import DEBUG_ENV, Settings
from pipeline.errors import ConfigError, PipelineError, SourceError
from pipeline.urls import local_path

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
#: What --ledger takes, for every command's help.
LEDGER_FORMS = "a path, sqlite:///path or postgresql://USER@HOST:PORT/DB"
F = TypeVar("F", bound=Callable[..., Any])

#: The exit-code paragraph of a command's --help (click keeps a \b paragraph as written).
EXIT_CODES = (
    "\b\nExit codes: 0 every record sent (now or earlier); 1 finished, but some records are\n"
    "failed, invalid or unknown; 2 usage or configuration error, nothing sent; 3 aborted\n"
    "(authentication refused, interrupted, outage, ledger unusable or in use)."
)


def epilog(example: str, exits: str = EXIT_CODES) -> str:
    """A --help epilog: an example (kept as written) and the exit codes."""
    return f"\b\nExample:\n  {example}\n\n{exits}"


def fail(message: str, code: int) -> None:
    click.echo(f"feedback-pipeline: {message}", err=True)
    sys.exit(code)


def guarded(fn: F) -> F:
    """Turn the package's errors into one line and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseExceptionGroup as group:
            # Task groups wrap what went wrong; the first real error is the one to name.
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return guarded(_raiser(leaf))()
        except (ConfigError, SourceError) as exc:
            fail(str(exc), EXIT_USAGE)
        except PipelineError as exc:  # the ledger unusable, an abort, ...
            fail(str(exc), EXIT_ABORTED)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_ABORTED)
        except BrokenPipeError:
            # The reader stopped reading (`failures | head`): what it read is right, and there
            # is nobody left to tell anything to. Python would complain again as it flushes
            # stdout at exit, so stdout becomes /dev/null first.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_OK)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set FEEDBACK_PIPELINE_DEBUG=1 for the traceback)",
                EXIT_ABORTED,
            )

    return wrapper  # type: ignore[return-value]


def _raiser(exc: BaseException) -> Callable[[], None]:
    def raise_it() -> None:
        raise exc

    return raise_it


def parse_map(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``--map FIELD=COLUMN`` values as a mapping (a click callback)."""
    mapping: dict[str, str] = {}
    for value in values:
        dest, sep, src = value.partition("=")
        if not sep or not dest.strip() or not src.strip():
            raise click.BadParameter(f"{value!r}: expected FIELD=COLUMN, e.g. score=rating")
        mapping[dest.strip()] = src.strip()
    return mapping


def require_ledger(url: str) -> None:
    path = local_path(url)  # None: a server ledger, which says itself whether it exists
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"ledger: no ledger at {path} (pass --ledger PATH)")


def config_option(fn: F) -> F:
    return click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")(fn)


def default(name: str) -> str:
    """A setting's default for a help text, taken from the model (its one place)."""
    value = Settings.model_fields[name].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def ledger_option(fn: F) -> F:
    return click.option(
        "--ledger",
        metavar="URL",
        help=f"Ledger: {LEDGER_FORMS} [{default('ledger')}].",
    )(fn)
