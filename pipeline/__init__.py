"""feedback-pipeline: bulk, idempotent delivery of feedback to the Twilio Assistants API."""

from __future__ import annotations

__version__ = "0.1.0"

from pipeline.config import Settings  # noqa: E402
from pipeline.credentials import Credentials
from pipeline.errors import (  # noqa: E402
    AbortedError,
    ApiError,
    AuthError,
    ConfigError,
    LedgerError,
    PipelineError,
    SourceError,
)
from pipeline.models import FeedbackRecord, Outcome, RawRecord, Rejection, Status  # noqa: E402

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
