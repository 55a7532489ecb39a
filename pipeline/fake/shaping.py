"""The middleware that applies the fake API's :class:`~pipeline.fake.limiters.Limits` to POSTs.

It runs inside the response counter, before the create handler: an in-flight or rate refusal
(or a load-shedding 503) is answered at once (a gateway refuses before the application sees
the request), an admitted request holds its in-flight slot until the handler has answered, and
gets its latency jitter; a stalled one gives its slot back at once and is answered late.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from pipeline.fake.handlers import STATE_KEY, twilio_error


@web.middleware
async def apply_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    limiter = state.limiter
    if request.method != hdrs.METH_POST or not limiter.limits.active:
        return await handler(request)
    refusal = limiter.admit(time.monotonic())
    if refusal is not None:
        state.note_post()
        headers = {} if refusal.retry_after is None else {"Retry-After": refusal.retry_after}
        return twilio_error(refusal.status, 20000 + refusal.status, refusal.message, headers)
    if limiter.stalls():
        limiter.done()
        response = await handler(request)
        state.note_late()
        await asyncio.sleep(limiter.limits.stall_ms / 1000.0)
        return response
    try:
        jitter = limiter.limits.latency_jitter_ms
        if jitter > 0:
            await asyncio.sleep(state.rng.uniform(0.0, jitter) / 1000.0)
        return await handler(request)
    finally:
        limiter.done()
