"""How much work a queue still holds, for ``status``: entries not yet handed out (backlog)
and entries handed out and not acked (pending).

- Redis Streams: the group's ``lag`` (entries after its last delivered one; Redis 7) and its
  ``pending`` count, from XINFO GROUPS.
- RabbitMQ: the queue's ready messages (a passive declare); how many are delivered and
  unacked is not told over AMQP, so ``pending`` is None (unknown).
- Every broker: the ``depth`` module of its folder, found through the source registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import SourceError
from pipeline.extras import load
from pipeline.sources import _BROKERS
from pipeline.urls import mask_url, scheme

# Schemes redis-py reads that the registry does not name as sources.
_ALIASES = {"rediss": "pipeline.sources.redis.stream", "unix": "pipeline.sources.redis.stream"}

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
    name = scheme(url) or ""
    # Each broker's reading is the ``depth`` module of its folder (the registry names the
    # folder's source module), imported only for its scheme.
    module = _BROKERS.get(name) or _ALIASES.get(name)
    if module is None:
        known = " or ".join(f"{s}://..." for s in sorted(_BROKERS))
        raise SourceError(f"--queue {mask_url(url)}: not a queue URL ({known})")
    reader = load(module.rpartition(".")[0] + ".depth", what=f"{name}://")
    found: Depth = await reader.depth(url)
    return found
