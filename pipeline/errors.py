"""The one exception hierarchy of feedback-pipeline.

Every error the package raises on purpose derives from :class:`PipelineError`, so a caller
can catch the family; the CLI maps each branch to an exit code::

    PipelineError
    ├── ConfigError             bad settings or invocation               -> exit 2
    │   └── MissingExtraError   a scheme's client library is not installed
    ├── SourceError             a source cannot be opened or read        -> exit 2
    │   │                       (mid-run: a broker gone; ends the run    -> exit 3)
    │   └── DeadLetterError     a dead-letter copy written truncated, or refused (its
    │                           entry stays unacked): said, the run goes on
    ├── LedgerError             the ledger is unusable (or did not answer in time) -> exit 3
    ├── AbortedError            the run stopped before it finished       -> exit 3
    │   └── OutageError         the API failed everything (or the --rate-scope
    │                           Redis was unreachable) for too long
    ├── ReconcileError          the List endpoint could not be read      -> records stay unknown
    │   └── SettleInterruptedError  stopped before the settle wait ended -> records stay unknown
    └── DeliveryError           one request did not produce a feedback
        ├── NotSentError        the run is stopping: never sent          -> failed, 0 attempts
        │   ├── LeaseLostError  this worker's lease on its claims ran out -> left in flight
        │   └── LeaseLapsedError  the lease was due a renewal as the request was being
        │                       written: not written; sent once it is renewed
        ├── TransportError      not sent: refused, DNS, connect timeout  -> retried
        │   └── AmbiguousTransportError  reset or timeout after sending  -> unknown, reconciled
        └── ApiError            the API answered, but not with a feedback
            ├── RetryableApiError   429, 408, 503, other 5xx (not sent)  -> retried
            ├── AmbiguousApiError   500, 502, 504 (may be stored)        -> unknown, reconciled
            │   └── UnconfirmedError  a 2xx that is not a 201 feedback   -> unknown, reconciled
            ├── PermanentApiError   any other 4xx                        -> failed, not retried
            ├── AuthError           401, 403                             -> aborts the run
            └── BaseUrlError        --base-url is not the Feedback API   -> aborts the run
                ├── RedirectError   a 3xx (never followed)               -> failed, not stored
                └── NotTheApiError  only 2xx without feedbacks so far    -> unknown, aborts

``Ambiguous`` marks the errors after which the API may hold the feedback: sending again could
duplicate it (the endpoint has no idempotency header), so such a record is never resent
blindly; reconciliation with the List endpoint settles it.

Messages never contain credentials: the client never puts them anywhere but the
Authorization header, and errors are built from status, Twilio code and message only (plus,
for a BaseUrlError, the base URL, which settings refuse to hold credentials, and a
redirect's Location as the server sent it).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error raised on purpose by this package."""


class ConfigError(PipelineError):
    """A setting, flag or credential is missing or invalid."""


class MissingExtraError(ConfigError):
    """A scheme was used whose client library is an extra that is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(
            f"{what} needs the {extra} client library, which is not installed: "
            f"pip install 'feedback-pipeline[{extra}]'"
        )
        self.extra = extra


class SourceError(PipelineError):
    """A source file cannot be opened (missing, a directory, unreadable)."""


class DeadLetterError(SourceError):
    """Some dead-letter copies could not be written as they were: each is named in
    ``problems`` as ``(location, what happened)`` (written truncated, or refused by the broker
    and its entry left unacked, for a later run). Every other entry of the same ``ack`` call
    was acked: one entry's copy never stops the run."""

    def __init__(self, problems: list[tuple[str, str]], refused: int) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems
        self.refused = refused  # of them, copies not written at all


class LedgerError(PipelineError):
    """The ledger database cannot be opened, migrated or written."""


class AbortedError(PipelineError):
    """The run was stopped early: authentication refused, interrupted, or a background part
    (heartbeat, ack, ledger writer) failed;
    :class:`pipeline.engine.control.RunControl` raises it."""

    #: The run's summary, when the Python API (:mod:`pipeline.api`) raises it for a run that
    #: stopped early; None elsewhere.
    summary: object | None = None


class OutageError(AbortedError):
    """The API failed every request (or the ``--rate-scope`` Redis could not be reached) for
    longer than the configured limit."""


class ReconcileError(PipelineError):
    """Uncertain records could not be checked against the API; they stay uncertain."""


class SettleInterruptedError(ReconcileError):
    """The run stopped during the settle wait: nothing was judged, records stay uncertain."""


class DeliveryError(PipelineError):
    """A single request did not produce a feedback resource."""


class NotSentError(DeliveryError):
    """The run is stopping: this record's request was never sent."""


class LeaseLostError(NotSentError):
    """This worker's lease in the shared ledger ran out: it may no longer start requests for
    its claims (other workers settle them), so the record is left in flight, unwritten."""


class LeaseLapsedError(NotSentError):
    """The last check, as the request was being written, found the lease due a renewal: the
    request was not written; delivery waits for the renewal, then sends it (or finds the
    lease lost)."""


class Ambiguous:
    """Marker: the request may have been processed; its outcome is unknown."""


class TransportError(DeliveryError):
    """No HTTP response arrived, and the request never reached the API."""


class AmbiguousTransportError(Ambiguous, TransportError):
    """No HTTP response arrived after the request went out (reset, read timeout)."""


class ApiError(DeliveryError):
    """The API answered with an error status, parsed from Twilio's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = None,
        more_info: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info
        self.retry_after = retry_after
        suffix = f" (Twilio error {code})" if code is not None else ""
        super().__init__(f"HTTP {status}{suffix}: {message}")


class RetryableApiError(ApiError):
    """429, 408 or 5xx: worth another attempt after a backoff."""


class AmbiguousApiError(Ambiguous, ApiError):
    """500, 502 or 504: the API (or a gateway before it) may have stored the feedback."""


class PermanentApiError(ApiError):
    """A 4xx other than 401/403/408/429: sending it again would fail again."""


class AuthError(ApiError):
    """401 or 403: every other request would fail the same way, so the run aborts."""


class UnconfirmedError(AmbiguousApiError):
    """A 2xx that is not a 201 holding a feedback with an ``aia_fdbk_`` id.

    Ambiguous, not failed: whatever answered may have stored the feedback (a gateway that
    rewrote the answer, a 200 instead of a 201, a body cut short or too large to read), and
    the endpoint has no idempotency header, so a blind resend could duplicate it.
    """


class BaseUrlError(ApiError):
    """The base URL does not behave as the Feedback API: a configuration error found by
    talking to it, so the run aborts before sending more (exit 3, as for a 401)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.args = (message,)  # one line that names --base-url, without an "HTTP nnn:" prefix


class RedirectError(BaseUrlError):
    """A 3xx. Never followed: a POST redirected elsewhere is stored elsewhere (or, after a
    301/302, turned into a GET), and credentials must not travel to another origin. The
    server that answered did not store the request, so the record can be sent again."""


class NotTheApiError(Ambiguous, BaseUrlError):
    """Many 2xx answers without a feedback, and not one with a feedback yet: a captive
    portal, a proxy or a mistyped host. Like any unconfirmed 2xx, this one may be stored."""
