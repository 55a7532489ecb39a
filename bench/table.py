"""Result rows: the printed table and ``bench/results.json``."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

COLUMNS = ("scenario", "measured", "baseline", "ratio", "target", "met?")


@dataclass(kw_only=True)
class Row:
    """One line of the table: a measurement, the baseline it is divided by, and the verdict.

    ``met`` is None for rows that only inform (no target) and for rows that could not run.
    """

    scenario: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def failed_row(scenario: str, error: str) -> Row:
    return Row(
        scenario=scenario,
        measured="error",
        baseline="-",
        ratio=None,
        target="-",
        met=False,
        error=error,
    )


def _verdict(row: Row) -> str:
    if row.error is not None:
        return "ERROR"
    if row.met is None:
        return "-"
    return "yes" if row.met else "NO"


def _cells(row: Row) -> tuple[str, ...]:
    ratio = "n/a" if row.ratio is None else f"{row.ratio:.3f}"
    return (row.scenario, row.measured, row.baseline, ratio, row.target, _verdict(row))


def render(rows: list[Row]) -> str:
    lines = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]

    def fmt(line: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))

    rule = "-+-".join("-" * width for width in widths)
    text = [fmt(COLUMNS), rule, *(fmt(line) for line in lines[1:])]
    text += [f"  {r.scenario}: {r.error}" for r in rows if r.error]
    return "\n".join(line.rstrip() for line in text)


def write_results(path: Path, rows: list[Row], *, mode: str, sizes: dict[str, Any]) -> None:
    payload = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "sizes": sizes,
        "rows": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
