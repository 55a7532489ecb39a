"""feedback-pipeline: bulk, idempotent delivery of feedback to the Twilio Assistants API."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.credentials import Credentials
from pipeline.errors import (
    AbortedError,
    ApiError,
    AuthError,
    ConfigError,
    LedgerError,
    PipelineError,
    SourceError,
)
from pipeline.models import FeedbackRecord, Outcome, RawRecord, Rejection, Status
from pipeline.version import __version__

__all__ = [
    "AbortedError",
    "ApiError",
    "AuthError",
    "ConfigError",
    "Credentials",
    "FeedbackRecord",
    "LedgerError",
    "Outcome",
    "PipelineError",
    "RawRecord",
    "Rejection",
    "Settings",
    "SourceError",
    "Status",
    "__version__",
]
