"""The gate every request passes first: a circuit breaker.

(429s are flow control, not failures: see :mod:`pipeline.flow.compose`.) After
``threshold`` consecutive failures (5xx, timeouts, refused connections) the circuit opens:
requests wait instead of spending their attempts, and one probe goes out per cool-down
(doubling up to ``max_cooldown``) until one succeeds. An outage longer than ``max_outage``
aborts the run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pipeline.errors import OutageError

#: How often requests held at a half-open circuit look whether the probe has answered.
_PROBE_POLL = 0.05
#: When nothing ever answered (no HTTP answer at all: refused connections, DNS, timeouts), an
#: outage this long ends the run (not --max-outage): a host that never answered is a wrong
#: --base-url, a network or a firewall far more often than an API that is down, and waiting
#: 10 minutes in silence helps nobody. An API that answered (even 503) is down: --max-outage.
FIRST_CONTACT_S = 30.0


class Gate:
    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]],
        stopped: Callable[[], bool],
        notice: Callable[[str], None],
        threshold: int = 10,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        max_outage: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        target: str = "the API",
        first_contact: float = FIRST_CONTACT_S,
    ) -> None:
        self._sleep = sleep  # ends early when the run stops; then admit() returns at once
        self._stopped = stopped
        self._notice = notice
        self._threshold = threshold
        self._first_cooldown = self._cooldown = cooldown
        self._max_cooldown = max_cooldown
        self._max_outage = max_outage
        self._clock = clock
        self._target = target  # how to name what does not answer (--base-url URL)
        self._first_contact = min(first_contact, max_outage)
        self._started = clock()
        self._answered = False  # any HTTP answer ever came back
        self._last = ""
        self._failures = 0
        self._open_since: float | None = None
        self._next_probe = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_since is not None

    async def admit(self) -> None:
        """Wait until a request may start (returns at once in the common case)."""
        while not self._stopped():
            now = self._clock()
            if self._open_since is None:
                return
            if not self._answered and now - self._started > self._first_contact:
                raise OutageError(
                    f"nothing has ever answered at {self._target} in "
                    f"{now - self._started:.0f} s (last: {self._last}); is the URL right? "
                    "`feedback-pipeline check` tests it and the credentials with one request"
                )
            if now - self._open_since > self._max_outage:
                raise OutageError(
                    f"the API has failed every request for {self._max_outage:.0f} s; giving up"
                )
            if not self._probing and now >= self._next_probe:
                self._probing = True  # this request is the probe
                return
            wait = _PROBE_POLL if self._probing else self._next_probe - now
            await self._sleep(max(wait, 0.001))

    def heard(self) -> None:
        """An HTTP answer came back (whatever its status): the base URL reaches a server."""
        self._answered = True

    def succeeded(self) -> None:
        self._answered = True
        self._failures = 0
        if self._open_since is not None:
            down = self._clock() - self._open_since
            self._notice(f"the API answers again after {down:.1f} s; resuming")
            self._open_since = None
        self._probing = False
        self._cooldown = self._first_cooldown

    def failed(self, what: str) -> None:
        now = self._clock()
        self._last = what
        self._failures += 1
        if self._open_since is not None:
            if self._probing:  # the probe failed: wait longer before the next one
                self._probing = False
                self._cooldown = min(self._cooldown * 2, self._max_cooldown)
                self._next_probe = now + self._cooldown
            return
        if self._failures >= self._threshold:
            self._open_since = now
            self._next_probe = now + self._cooldown
            self._notice(
                f"the API failed {self._failures} requests in a row (last: {what}); pausing all"
                f" requests and probing every {self._cooldown:.0f}-{self._max_cooldown:.0f} s"
            )
