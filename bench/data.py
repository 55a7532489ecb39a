"""Input files: synthetic, valid, distinct feedback records as CSV, and the bodies they become.

Every row has all four fields, so the pipeline, the minimal loop and the Twilio SDK all send
the same JSON body for it: ``{"session_id", "message_id", "score", "text"}``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Every client in the suite sends records for this one assistant.
ASSISTANT_ID = "aia_asst_00000000-1111-2222-3333-444444444444"
HEADER = ("session_id", "message_id", "score", "text")
_TEXTS = (
    "Helpful and quick",
    "Missed the question",
    "Wrong order number; had to ask twice",
    "Great",
    "Answer was correct but the tone felt a little abrupt",
)
_CHUNK = 10_000


def row(i: int) -> str:
    score = (i % 101) / 100
    text = _TEXTS[i % len(_TEXTS)]
    return f"sess-{i:09d},aia_msg_{i:012d}-bench,{score},{text}\n"


def write_csv(path: Path, rows: int, *, start: int = 0) -> Path:
    """Write ``rows`` records numbered from ``start`` (distinct numbers, distinct records)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(HEADER) + "\n")
        for first in range(start, start + rows, _CHUNK):
            last = min(first + _CHUNK, start + rows)
            fh.write("".join(row(i) for i in range(first, last)))
    return path


def bodies(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON request bodies of a file written by :func:`write_csv`, streamed."""
    with open(path, encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            yield {
                "session_id": rec["session_id"],
                "message_id": rec["message_id"],
                "score": float(rec["score"]),
                "text": rec["text"],
            }


class Files:
    """Input files made on demand in one work directory, each written once."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._made: dict[tuple[int, int], Path] = {}

    def csv(self, rows: int, *, start: int = 0) -> Path:
        key = (rows, start)
        if key not in self._made:
            path = self.workdir / f"input-{rows}-{start}.csv"
            self._made[key] = write_csv(path, rows, start=start)
        return self._made[key]

    def ledger(self, name: str) -> Path:
        """A fresh ledger path (nothing there yet); ``name`` must be unique in the run."""
        path = self.workdir / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path
