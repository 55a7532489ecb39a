"""A fake Twilio Assistants Feedback API for tests, the demo and benchmarks."""

from __future__ import annotations

from pipeline.fake.server import FakeServer, create_app, serve
from pipeline.fake.state import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeState, Faults

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "FakeServer",
    "FakeState",
    "Faults",
    "create_app",
    "serve",
]
