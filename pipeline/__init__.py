"""feedback-pipeline: bulk, idempotent delivery of feedback to the Twilio Assistants API.

The Python API (see :mod:`pipeline.api`): :func:`run`, :func:`replay` and :func:`reconcile`
(and their coroutines :func:`arun`, :func:`areplay`, :func:`areconcile`), built with
:class:`Settings` and :class:`Credentials`, returning a :class:`Summary` (or
:class:`Settled`), raising the errors of :mod:`pipeline.errors`.
"""

from __future__ import annotations

from pipeline.api import areconcile, areplay, arun, reconcile, replay, run
from pipeline.config import Settings
from pipeline.credentials import Credentials
from pipeline.engine.reconcile import Settled
from pipeline.errors import (
    AbortedError,
    ApiError,
    AuthError,
    ConfigError,
    LedgerError,
    MissingExtraError,
    PipelineError,
    SourceError,
)
from pipeline.models import FeedbackRecord, Outcome, RawRecord, Rejection, Status
from pipeline.observe.summary import Summary
from pipeline.version import __version__

__all__ = [
    "AbortedError",
    "ApiError",
    "AuthError",
    "ConfigError",
    "Credentials",
    "FeedbackRecord",
    "LedgerError",
    "MissingExtraError",
    "Outcome",
    "PipelineError",
    "RawRecord",
    "Rejection",
    "Settings",
    "Settled",
    "SourceError",
    "Status",
    "Summary",
    "__version__",
    "areconcile",
    "areplay",
    "arun",
    "reconcile",
    "replay",
    "run",
]
