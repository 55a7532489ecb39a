"""A fake Twilio Assistants Feedback API for tests, the demo and benchmarks.

It follows Twilio's OpenAPI excerpt (a copy in tests/data/openapi-feedback.json, checked by
schemathesis in tests/test_fake_openapi.py) except where the real API is known to answer what
the spec leaves out, or where the spec cannot be followed:

- **401** (Twilio error 20003) for missing or wrong credentials, **400** (20001) for an
  invalid request, **404** (20404), **429** (20429), **503**: the real API answers these, the
  excerpt documents only 200 and 201.
- A ``PageToken`` is "provided by the API": one this server did not make is a 400.
- Unknown body fields are a 400, though the spec's schema allows extra properties: the fake
  is stricter on purpose, so that a client that misspells a field finds out.
- ``message_id``, ``score`` and ``text`` are optional in a create request but required, and
  not nullable, in the resource. For a field the request omitted the fake answers ``null``:
  any value it could invent (``""``, ``0``) would be indistinguishable from a real empty text
  or a zero score, and reconciliation matches records on these fields.
"""

from __future__ import annotations

from pipeline.fake.faults import Faults
from pipeline.fake.limiters import Limits
from pipeline.fake.server import FakeServer, create_app, serve
from pipeline.fake.state import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeState

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "FakeServer",
    "FakeState",
    "Faults",
    "Limits",
    "create_app",
    "serve",
]
