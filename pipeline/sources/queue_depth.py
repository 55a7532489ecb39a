"""How much work a queue still holds, for ``status``: entries not yet handed out (backlog)
and entries handed out and not acked (pending).

- Redis Streams: the group's ``lag`` (entries after its last delivered one; Redis 7) and its
  ``pending`` count, from XINFO GROUPS.
- RabbitMQ: the queue's ready messages (a passive declare); how many are delivered and
  unacked is not told over AMQP, so ``pending`` is None (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import SourceError
from pipeline.extras import load
from pipeline.urls import mask_url, scheme

#: Seconds a broker may take to answer (each broker's module reads it).
TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Depth:
    source: str  # the URL, password masked
    backlog: int | None  # not handed out yet (None: not known)
    pending: int | None  # handed out, not acked (None: not known)

    @property
    def empty(self) -> bool:
        """Surely nothing left on the queue (an unknown count is not nothing)."""
        return self.backlog == 0 and self.pending == 0

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "backlog": self.backlog, "pending": self.pending}


async def depth(url: str) -> Depth:
    """The queue ``url`` names, read once; a queue that cannot be read is a SourceError."""
    name = scheme(url)
    # Each broker's reading is in its own folder, imported only for its scheme.
    if name in ("redis", "rediss", "unix"):
        found: Depth = await load("pipeline.sources.redis.depth", what=f"{name}://").depth(url)
        return found
    if name in ("amqp", "amqps"):
        found = await load("pipeline.sources.amqp.depth", what=f"{name}://").depth(url)
        return found
    raise SourceError(f"--queue {mask_url(url)}: not a queue URL (redis://... or amqp://...)")
