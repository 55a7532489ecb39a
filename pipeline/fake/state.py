"""In-memory state of the fake Feedback API: credentials, stored feedbacks, counters, faults.

The server thread mutates this state while tests and benchmarks read it from the main
thread, so every mutation and every multi-step read happens under one lock.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.fake import limiters
from pipeline.fake.faults import Faults
from pipeline.fake.limiters import Limiter, Limits

DEFAULT_ACCOUNT_SID = "ACfa4e" + "0" * 28
DEFAULT_AUTH_TOKEN = "fake-auth-token"

POST_TIMES_KEPT = 100_000

ContentKey = tuple[str, str, str | None, float | None, str | None]


class TokenBucket:
    """``--throttle-rps``: a bucket holding one second of tokens (the limiter shapes' own
    :class:`limiters.TokenBucket`) on this server's clock."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._bucket = limiters.TokenBucket(rate, 1.0, clock())

    @property
    def capacity(self) -> float:
        return self._bucket.capacity

    def take(self) -> float | None:
        """Take one token; None on success, else seconds until a token is available."""
        return self._bucket.take(self._clock())


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeState:
    """Everything the fake server knows; tests inspect it directly."""

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        credentials: Mapping[str, str] | None = None,
        known_assistants: Iterable[str] | None = None,
        faults: Faults | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.account_sid = account_sid
        # username -> password; API keys (SK...) live here too and act for account_sid.
        self.credentials: dict[str, str] = (
            dict(credentials) if credentials is not None else {account_sid: auth_token}
        )
        self.known_assistants: set[str] | None = (
            set(known_assistants) if known_assistants is not None else None
        )
        self.user_sid = "US" + uuid.uuid4().hex
        self.rng = random.Random()
        self._faults = Faults()
        self.faults = faults if faults is not None else Faults()
        self.posts_received = 0
        # When the latest POSTs arrived (monotonic), for tests of rates and pauses.
        self.post_times: deque[float] = deque(maxlen=POST_TIMES_KEPT)
        # Answer the next POST with 429 and this Retry-After (seconds), once; then None again.
        self.retry_after_once: int | None = None
        self.resets = 0
        self.late = 0  # answered late on purpose (slow_rate, a stall beyond stall_above)
        # POSTs being worked on now, and the most at once: what a client really had out.
        self.at_work = 0
        self.peak_at_work = 0
        self.responses: Counter[int] = Counter()
        self.hostile_stats: Counter[str] = Counter()  # kept by pipeline.fake.hostile
        self._lock = threading.Lock()
        self._stored: list[dict[str, Any]] = []
        self._by_assistant: dict[str, list[dict[str, Any]]] = {}
        self._bucket: TokenBucket | None = None
        # The gateway's limits (in flight, rate shapes): pipeline.fake.shaping applies them.
        self.limiter = Limiter(limits if limits is not None else Limits())

    # -- faults ---------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value
        self.rng.seed(value.seed)

    def update_faults(self, changes: Mapping[str, Any]) -> Faults:
        """Validate and apply changes (the control endpoint's path); reseed on a new seed."""
        self._faults.update(changes)
        if "seed" in changes:
            self.rng.seed(self._faults.seed)
        return self._faults

    def roll(self, rate: float) -> bool:
        """True with probability `rate`; no draw for 0 or 1 so runs stay reproducible."""
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        return self.rng.random() < rate

    def throttle_wait(self) -> float | None:
        """None if a POST may proceed, else seconds until the bucket refills a token."""
        rate = self._faults.throttle_rps
        if rate is None:
            self._bucket = None
            return None
        bucket = self._bucket
        if bucket is None or bucket.rate != rate:
            # A changed limit starts a fresh, full bucket.
            bucket = self._bucket = TokenBucket(rate)
        return bucket.take()

    # -- credentials ----------------------------------------------------------

    def add_api_key(self, key_sid: str, secret: str) -> None:
        self.credentials[key_sid] = secret

    def account_sid_for(self, username: str) -> str:
        return username if username.startswith("AC") else self.account_sid

    # -- storage and counters -------------------------------------------------

    def note_post(self) -> None:
        with self._lock:
            self.posts_received += 1
            self.post_times.append(time.monotonic())

    def take_retry_after_once(self) -> int | None:
        with self._lock:
            wait, self.retry_after_once = self.retry_after_once, None
            return wait

    def posts_per_second(self) -> list[int]:
        """POSTs received in each whole second since the first one kept."""
        with self._lock:
            times = list(self.post_times)
        if not times:
            return []
        counts = Counter(int(t - times[0]) for t in times)
        return [counts[second] for second in range(max(counts) + 1)]

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """One POST at work, from its arrival to its answer (or the client gone)."""
        with self._lock:
            self.at_work += 1
            self.peak_at_work = max(self.peak_at_work, self.at_work)
        try:
            yield
        finally:
            with self._lock:
                self.at_work -= 1

    def note_response(self, status: int) -> None:
        with self._lock:
            self.responses[status] += 1

    def note_reset(self) -> None:
        with self._lock:
            self.resets += 1

    def note_late(self) -> None:
        with self._lock:
            self.late += 1

    def store(
        self,
        assistant_id: str,
        body: Mapping[str, Any],
        *,
        account_sid: str,
    ) -> dict[str, Any]:
        """Store a validated create request and return the full resource."""
        now = _utc_now()
        score = body.get("score")
        resource: dict[str, Any] = {
            "id": f"aia_fdbk_{uuid.uuid4()}",
            "assistant_id": assistant_id,
            "account_sid": account_sid,
            "user_sid": self.user_sid,
            "session_id": body["session_id"],
            "message_id": body.get("message_id"),
            "score": float(score) if score is not None else None,
            "text": body.get("text"),
            "date_created": now,
            "date_updated": now,
        }
        with self._lock:
            self._stored.append(resource)
            self._by_assistant.setdefault(assistant_id, []).append(resource)
        return dict(resource)

    @property
    def stored_count(self) -> int:
        with self._lock:
            return len(self._stored)

    def feedbacks(self, assistant_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of stored feedbacks in creation order, optionally for one assistant."""
        with self._lock:
            source = self._stored if assistant_id is None else self._by_assistant.get(assistant_id)
            return [dict(f) for f in source or []]

    def page(self, assistant_id: str, offset: int, size: int) -> tuple[list[dict[str, Any]], int]:
        """One page of an assistant's feedbacks and that assistant's total count."""
        with self._lock:
            items = self._by_assistant.get(assistant_id, [])
            return [dict(f) for f in items[offset : offset + size]], len(items)

    def content_counts(self) -> Counter[ContentKey]:
        with self._lock:
            return Counter(
                (f["assistant_id"], f["session_id"], f["message_id"], f["score"], f["text"])
                for f in self._stored
            )

    def duplicates(self) -> dict[ContentKey, int]:
        """Contents stored more than once, with how many times each was stored."""
        return {key: n for key, n in self.content_counts().items() if n > 1}

    def stats(self) -> dict[str, Any]:
        counts = self.content_counts()
        with self._lock:
            return {
                "posts_received": self.posts_received,
                "stored": len(self._stored),
                "distinct": len(counts),
                # Extra copies beyond the first of each content: 0 means exactly-once.
                "duplicates": sum(n - 1 for n in counts.values()),
                "resets": self.resets,
                "late": self.late,
                "peak_at_work": self.peak_at_work,
                "responses": {str(k): v for k, v in sorted(self.responses.items())},
                "hostile": dict(self.hostile_stats),
            }

    def reset(self) -> None:
        """Forget stored feedbacks and counters; faults and credentials stay."""
        with self._lock:
            self._stored.clear()
            self._by_assistant.clear()
            self.posts_received = 0
            self.post_times.clear()
            self.resets = 0
            self.late = 0
            self.peak_at_work = self.at_work
            self.responses.clear()
            self.hostile_stats.clear()
            self._bucket = None
            self.limiter.reset()
