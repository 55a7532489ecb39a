"""Dead letters of a Redis stream: ``XADD dead * reason .. location .. field value ...`` and
the ``XACK`` of the original, together in one script (atomic: nothing is acked without its
copy, and no copy is written twice by a worker killed between the two).

A copy the server refuses as it is (an entry of more fields than a script can pass on, the
dead-letter key holding another type, memory full) is written again truncated: the reason,
the location and ``truncated`` saying what was left out. A copy refused even so is not
written, and its entry stays pending (unacked, for a later run): said, never the run's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# KEYS: the stream, the dead-letter stream; ARGV: the group, the entry id, then the copy's
# field/value pairs. redis.pcall: a refused XADD is returned, and nothing is acked.
_COPY_AND_ACK = """
local copied = redis.pcall('XADD', KEYS[2], '*', unpack(ARGV, 3))
if type(copied) == 'table' and copied['err'] then return copied end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return copied
"""


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter to write: the entry's id and location, its fields, the reason."""

    id: bytes
    location: str
    fields: dict[bytes, bytes]
    reason: str


def _whole(letter: Letter) -> list[bytes]:
    copy = [b"reason", letter.reason.encode(), b"location", letter.location.encode()]
    for key, value in letter.fields.items():
        # The original fields as they were; names that clash with ours keep a prefix.
        copy += [b"field:" + key if key in (b"reason", b"location") else key, value]
    return copy


def _truncated(letter: Letter, why: str) -> list[bytes]:
    size = sum(len(k) + len(v) for k, v in letter.fields.items())
    note = f"the original fields ({len(letter.fields)}, {size} bytes) were left out: {why}"
    return [
        b"reason",
        letter.reason.encode(),
        b"location",
        letter.location.encode(),
        b"truncated",
        note.encode(),
    ]


class DeadLetters:
    def __init__(self, client: aioredis.Redis, stream: str, group: str, dead: str) -> None:
        self._script = client.register_script(_COPY_AND_ACK)
        self._client = client
        self._keys = [stream, dead]
        self._group = group
        self._dead = dead

    async def write(self, letters: Sequence[Letter]) -> list[tuple[str, str]]:
        """Copy and ack each letter; the problems, as ``(location, what happened)``.
        A lost connection raises (the run ends); anything else is one entry's problem."""
        if not letters:
            return []
        failed = await self._run([(lt, _whole(lt)) for lt in letters])
        problems: list[tuple[str, str]] = []
        retry = [(lt, _truncated(lt, f"the whole copy was refused ({why})")) for lt, why in failed]
        again = dict((lt.id, why) for lt, why in await self._run(retry))
        for letter, why in failed:
            if letter.id in again:
                problems.append(
                    (
                        letter.location,
                        f"dead letter to {self._dead} refused ({why}; truncated: "
                        f"{again[letter.id]}): the entry stays pending, unacked",
                    )
                )
            else:
                problems.append(
                    (letter.location, f"dead letter to {self._dead} written truncated ({why})")
                )
        return problems

    async def _run(self, batch: list[tuple[Letter, list[bytes]]]) -> list[tuple[Letter, str]]:
        if not batch:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for letter, copy in batch:
                args: list[Any] = [self._group, letter.id, *copy]
                await self._script(keys=self._keys, args=args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        failed = []
        for (letter, _), result in zip(batch, results, strict=True):
            if isinstance(result, RedisConnectionError | RedisTimeoutError):
                raise result
            if isinstance(result, RedisError):
                failed.append((letter, f"{type(result).__name__}: {str(result)[:200]}"))
        return failed
