"""The physical ceiling for a Python client: C coroutines that just POST the records.

No validation, no ledger, no retries, no rate limit: one aiohttp session with the same
connection limit, the same Basic auth header and the same JSON bodies as the pipeline.
Run as ``python -m bench.minimal_client FILE --base-url URL --concurrency C``; prints one JSON
object (``sent``, ``failed``, ``statuses``, ``duration_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.data import ASSISTANT_ID, bodies


async def _worker(
    session: aiohttp.ClientSession, url: str, records: Iterator[dict[str, Any]], seen: Counter[int]
) -> None:
    # One shared iterator: each coroutine takes the next record when it is free.
    for body in records:
        async with session.post(url, json=body) as resp:
            await resp.read()
            seen[resp.status] += 1


async def post_all(path: Path, base_url: str, concurrency: int) -> dict[str, Any]:
    url = f"{base_url.rstrip('/')}/v1/Assistants/{ASSISTANT_ID}/Feedbacks"
    # The same credentials as the pipeline, from the same variables.
    auth = (os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)}
    seen: Counter[int] = Counter()
    start = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        records = bodies(path)
        await asyncio.gather(*(_worker(session, url, records, seen) for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    sent = seen[201] + seen[200]
    return {
        "sent": sent,
        "failed": sum(seen.values()) - sent,
        "statuses": {str(k): v for k, v in sorted(seen.items())},
        "duration_s": round(elapsed, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal_client")
    parser.add_argument("file", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(post_all(args.file, args.base_url, args.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
