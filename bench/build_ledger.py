"""``python -m bench.build_ledger FILE LEDGER``: a ledger that holds every record of FILE as sent.

Scenario 6 reruns a file whose records a large ledger already holds as ``sent``. Sending a
million records to the fake API first would take most of the suite's time, so the ledger is
built through the project's own bulk path instead: the file is read and validated as ``run``
reads it (same reader, same validator, so the same keys), then claimed and recorded as sent
in large batches, each one commit. Prints one JSON object (``rows``, ``duration_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid
from pathlib import Path

from bench.data import ASSISTANT_ID
from pipeline.engine.validate import Validator
from pipeline.ledger import open_ledger
from pipeline.models import Accepted, Outcome, Status
from pipeline.sources.files.csv import CsvSource

BATCH = 20_000


async def build(path: Path, ledger_path: Path) -> int:
    validator = Validator(default_assistant_id=ASSISTANT_ID)
    records = CsvSource(str(path)).records()
    ledger = await open_ledger(str(ledger_path), uuid.uuid4().hex[:16], command="bench-build")
    rows = 0
    try:
        while batch := list(itertools.islice(records, BATCH)):
            accepted = [item for item in map(validator, batch) if isinstance(item, Accepted)]
            await ledger.claim(accepted)
            await ledger.record(
                [Outcome(a.key, Status.SENT, 1, 201, f"aia_fdbk_{a.key[:32]}") for a in accepted]
            )
            rows += len(accepted)
    finally:
        await ledger.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.build_ledger")
    parser.add_argument("file", type=Path)
    parser.add_argument("ledger", type=Path)
    args = parser.parse_args()
    start = time.monotonic()
    rows = asyncio.run(build(args.file, args.ledger))
    print(json.dumps({"rows": rows, "duration_s": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()
