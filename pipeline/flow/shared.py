"""One request-rate budget shared by every worker of a scope, kept in Redis (``--rate-scope``).

The budget is a GCRA ("generic cell rate algorithm") in reservation form: Redis keeps one
number per scope, the *theoretical arrival time* (TAT) of the next request. Taking a token
moves the TAT on by one emission interval (1/rate) and tells the caller how long to wait until
its slot; the caller waits that and sends, without asking again. So one round trip per request,
no thundering herd of retries, and the total over all workers is the rate, whatever their
number. Idle time earns no credit (the TAT never lags behind now), so there is no burst after a
quiet spell. The clock is Redis's own (``TIME``): workers on several hosts need not agree on
the time.

A 429 with Retry-After seen by one worker pauses the scope: a second key holds the pause's end,
only ever extended, and the same script call that takes a token reads it, so every worker waits
it out (no extra round trip). The adaptive limits stay per worker.

If Redis cannot be reached, nothing is sent: a budget that is not shared is not the budget the
user asked for. One notice says so, the call is retried with backoff, one notice says when it
is back, and after ``max_outage`` the run aborts (:class:`OutageError`, exit 3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline.errors import ConfigError, OutageError
from pipeline.urls import mask_url

#: Keys of a scope; the braces are a Redis Cluster hash tag, so both keys share a slot.
KEY_PREFIX = "feedback-pipeline:rate:"
#: Seconds a Redis call may take before the scope counts as unreachable.
REDIS_TIMEOUT = 2.0
#: How far ahead a slot may be reserved (ms). Beyond, a caller waits and asks again: this
#: bounds how many reserved requests still go out after a 429 paused the scope, at the cost
#: of a second round trip for callers that queue longer than this.
HORIZON_MS = 250
#: Backoff between calls while Redis is unreachable.
FIRST_RETRY, LAST_RETRY = 0.05, 2.0

# KEYS: the TAT, the pause. ARGV: emission interval (ms), tokens to take (0: none), pause to
# set (ms, 0: none), now (ms; empty: Redis's clock), horizon (ms). Returns {wait ms as a
# string, taken 0/1}: taken=0 means "paused, or queued too far ahead: wait, then ask again".
# Numbers travel as strings so that Lua's doubles are not truncated to integers on the way back.
_GCRA = """
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local pause_ms = tonumber(ARGV[3])
if pause_ms > 0 then
  local until_ms = now + pause_ms
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if until_ms > current then
    redis.call('SET', KEYS[2], tostring(until_ms), 'PX', math.ceil(pause_ms))
  end
end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {tostring(paused - now), 0}
end
local count = tonumber(ARGV[2])
if count == 0 then
  return {'0', 1}
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local horizon = tonumber(ARGV[5])
if tat - now > horizon then
  return {tostring(tat - now - horizon), 0}
end
local later = tat + tonumber(ARGV[1]) * count
redis.call('SET', KEYS[1], tostring(later), 'PX', math.ceil(later - now) + 1000)
return {tostring(tat - now), 1}
"""


def scope_key(url: str, account: str) -> str:
    """The Redis key of the scope: ``?key=NAME`` if given, else the account SID (or API key
    SID) that authenticates, never the secret."""
    query = parse_qs(urlsplit(url).query)
    name = query["key"][-1] if "key" in query else account
    return KEY_PREFIX + "{" + name + "}"


class SharedRate:
    """A ``rate`` per second for all the workers of one scope.

    ``sleep`` must end early when the run stops (the run control's ``pause``); ``stopped`` says it
    did, so that a wait for Redis gives up. ``now_ms`` replaces Redis's clock and ``clock``
    the outage timer (tests)."""

    def __init__(
        self,
        url: str,
        account: str,
        *,
        rate: float,
        max_outage: float,
        sleep: Callable[[float], Awaitable[None]],
        stopped: Callable[[], bool],
        notice: Callable[[str], None] = lambda _: None,
        now_ms: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ConfigError("configuration error: --rate-scope needs a --rate above 0")
        parts = urlsplit(url)
        self._redis = aioredis.Redis.from_url(
            urlunsplit(parts._replace(query="")),
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        self._script = self._redis.register_script(_GCRA)
        self.key = scope_key(url, account)
        self._keys = [self.key, self.key + ":pause"]
        self._interval_ms = 1000.0 / rate
        self._max_outage = max_outage
        self._sleep = sleep
        self._stopped = stopped
        self._notice = notice
        self._now_ms = now_ms
        self._clock = clock
        self._where = mask_url(url)
        self._down_since: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.waited = 0.0  # seconds spent waiting for slots and pauses (for the report)

    async def acquire(self) -> None:
        """Wait for this worker's slot in the scope (and out any pause of the scope)."""
        while not self._stopped():
            wait_ms, taken = await self._call(1, 0.0)
            if wait_ms > 0:
                self.waited += wait_ms / 1000
                await self._sleep(wait_ms / 1000)
            if taken:
                return

    def throttled(self, retry_after: float) -> None:
        """A 429 said to wait ``retry_after`` seconds: make every worker of the scope wait.
        Sent at once, in the background (the caller is the synchronous error path)."""
        task = asyncio.create_task(self._pause(retry_after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, retry_after: float) -> None:
        # Best effort: a scope that is down stops everyone anyway.
        try:
            await self._script(keys=self._keys, args=self._args(0, retry_after * 1000))
        except RedisError:
            return

    def _args(self, count: int, pause_ms: float) -> list[Any]:
        now = "" if self._now_ms is None else repr(self._now_ms())
        return [repr(self._interval_ms), count, repr(pause_ms), now, HORIZON_MS]

    async def _call(self, count: int, pause_ms: float) -> tuple[float, bool]:
        """One script call, retried with backoff while Redis is unreachable."""
        delay = FIRST_RETRY
        while True:
            try:
                reply = await self._script(keys=self._keys, args=self._args(count, pause_ms))
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
                await self._sleep(delay)
                delay = min(delay * 2, LAST_RETRY)
                if self._stopped():
                    return 0.0, False
                continue
            if self._down_since is not None:
                self._down_since = None
                self._notice(f"rate scope {self._where} is back: sending again")
            return float(reply[0]), bool(int(reply[1]))

    def _unreachable(self, exc: BaseException) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self._notice(
                f"rate scope {self._where} unreachable ({type(exc).__name__}): "
                "not sending until it is back"
            )
        elif now - self._down_since > self._max_outage:
            raise OutageError(
                f"rate scope {self._where} unreachable for more than "
                f"{self._max_outage:g} s (--max-outage): nothing sent meanwhile"
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
