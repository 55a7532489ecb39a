"""What users would pick instead: a plain loop over the official twilio-python client.

``client.assistants.v1.assistants(id).feedbacks.create(request)`` as of twilio 9.10.9, the last
release with this resource; at that version ``create`` takes one
``FeedbackList.AssistantsV1ServiceCreateFeedbackRequest`` built from the body dict, and the
domain's ``base_url`` attribute points it at the fake API (the SDK joins the domain's
``base_url``, the version and the path for every request).

twilio is an optional dependency (the ``bench`` extra), so it is imported with importlib and
handled as ``Any``: this module type-checks whether or not it is installed. Run as
``python -m bench.twilio_sdk FILE --base-url URL``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.data import ASSISTANT_ID, bodies

PINNED = "9.10.9"


def unavailable() -> str | None:
    """Why the SDK comparison cannot run here, or None when it can."""
    try:
        version = importlib.metadata.version("twilio")
    except importlib.metadata.PackageNotFoundError:
        return f"twilio not installed (pip install -e '.[bench]' pins twilio=={PINNED})"
    try:
        importlib.import_module("twilio.rest.assistants.v1.assistant.feedback")
    except ImportError as exc:
        return f"twilio {version} has no Assistants Feedback resource ({exc})"
    return None


def feedbacks_resource(base_url: str) -> Any:
    """The SDK's FeedbackList for our assistant, on the fake API at ``base_url``."""
    rest: Any = importlib.import_module("twilio.rest")
    client = rest.Client(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
    client.assistants.base_url = base_url.rstrip("/")
    return client.assistants.v1.assistants(ASSISTANT_ID).feedbacks


def post_all(path: Path, base_url: str) -> dict[str, Any]:
    feedbacks = feedbacks_resource(base_url)
    request_type = feedbacks.AssistantsV1ServiceCreateFeedbackRequest
    exceptions: Any = importlib.import_module("twilio.base.exceptions")
    sent = failed = 0
    start = time.monotonic()
    for body in bodies(path):
        try:
            created = feedbacks.create(request_type(body))
        except exceptions.TwilioRestException:
            failed += 1
            continue
        if str(created.id).startswith("aia_fdbk_"):
            sent += 1
        else:
            failed += 1
    elapsed = time.monotonic() - start
    return {
        "sent": sent,
        "failed": failed,
        "duration_s": round(elapsed, 4),
        "version": importlib.metadata.version("twilio"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.twilio_sdk")
    parser.add_argument("file", type=Path)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    print(json.dumps(post_all(args.file, args.base_url)))


if __name__ == "__main__":
    main()
