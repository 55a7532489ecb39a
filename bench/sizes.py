"""How big each scenario is: the full suite (``make bench``) and the smoke one (``--smoke``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bench.data import Files


@dataclass(frozen=True, kw_only=True)
class Sizes:
    # 1, 7, 8: fast server, pipeline vs the minimal loop (and the Twilio SDK loop).
    records: int
    startup_records: int  # a tiny run of each client: its start-up CPU is subtracted
    repeats: int  # best of N alternating runs of each client
    concurrency: int = 16
    wide_concurrency: int = 64  # 1 and 7 again, at a concurrency a large backfill uses
    sdk_records: int
    # 2: a slow server.
    latency_records: int
    latency_ms: float = 200.0
    latency_concurrency: int = 100
    # 3: the client's own rate limit.
    rate_records: int
    rate: float = 200.0
    # 4: a server that throttles.
    throttle_records: int
    throttle_rps: float = 300.0
    # 9: the flow-control matrix (seconds of ideal rate per cell; 0 cells = all of them).
    matrix_seconds: float = 20.0
    matrix_cells: int = 0
    # 13: noise and overload (seconds per noise cell; 0 cells = all of them, else the first
    # group's first N noises and one overload cell).
    noise_seconds: float = 8.0
    noise_cells: int = 0
    # 5, 6: memory and rerun (dry runs need no server).
    small_rows: int
    large_rows: int
    run_rows: int  # the full run against the fast server (its peak RSS)
    rerun_rows: int  # the rerun over a ledger that holds them all as sent


FULL = Sizes(
    records=20_000,
    startup_records=200,
    repeats=3,
    sdk_records=2_000,
    latency_records=5_000,
    rate_records=2_000,
    throttle_records=6_000,
    small_rows=100_000,
    large_rows=1_000_000,
    run_rows=100_000,
    rerun_rows=1_000_000,
)

SMOKE = Sizes(
    records=300,
    startup_records=20,
    repeats=1,
    sdk_records=30,
    latency_records=200,
    rate_records=100,
    throttle_records=150,
    small_rows=1_000,
    large_rows=5_000,
    run_rows=1_000,
    rerun_rows=5_000,
    matrix_seconds=0.5,
    matrix_cells=2,
    noise_seconds=0.3,
    noise_cells=1,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--name VALUE`` option per size, overriding the chosen preset."""
    for f in fields(Sizes):
        default = getattr(FULL, f.name)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=type(default),
            metavar="N",
            help=f"[full: {default}, smoke: {getattr(SMOKE, f.name)}]",
        )


def from_arguments(args: argparse.Namespace) -> Sizes:
    base = SMOKE if args.smoke else FULL
    changes = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Context:
    """What every scenario gets: its sizes, and input files in the run's work directory."""

    sizes: Sizes
    files: Files
    workdir: Path

    def sizes_dict(self) -> dict[str, Any]:
        return asdict(self.sizes)
