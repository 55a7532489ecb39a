"""The file corpus's bad JSON lines (``test_bad_input_corpus``), as queue entries: a record a
file rejects must be rejected the same way from a queue."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from integration.test_bad_input_corpus import KINDS

_GZIP = b"\x1f\x8b"
_LIMIT = 1 << 20  # entries over the brokers' size limit are tested on their own


@dataclass
class Lines:
    poison: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def corpus_lines(tmp: Path) -> Lines:
    """Every bad line of the corpus's one-JSONL-file kinds (each kind built in ``tmp``)."""
    found = Lines()
    for kind in KINDS:
        where = tmp / kind.id
        where.mkdir(parents=True)
        built = kind.build(where)
        if len(built.sources) != 1 or built.usage_error or built.failed or not built.bad:
            continue
        [path] = built.sources
        data = path.read_bytes() if path.is_file() else b""
        if path.suffix != ".jsonl" or data.startswith((_GZIP, b"\xef\xbb\xbf")):
            continue
        if len(data) > _LIMIT:
            continue
        lines = data.split(b"\n")
        for bad in built.bad:
            number = re.search(r":(\d+)$", bad.where.replace("\\", ""))
            if number is None or int(number.group(1)) > len(lines):
                continue
            line = lines[int(number.group(1)) - 1].rstrip(b"\r")
            if line.strip():
                found.poison.append(line)
        found.kinds.append(kind.id)
    return found
