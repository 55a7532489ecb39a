"""``python -m bench [--smoke] [--only NAME ...] [--SIZE N ...]``: run, print, save results.

Exit status: 0 when every scenario measured something (targets met or not: missing a target
is a finding, not a crash), 1 when a scenario could not run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import (
    broker_drains,
    limits,
    local,
    matrix,
    network,
    noise,
    queues,
    scale_out,
    shared_rate,
)
from bench.data import Files
from bench.procs import BenchError
from bench.sizes import Context, add_arguments, from_arguments
from bench.table import Row, failed_row, render, write_results

Scenario = Callable[[Context], list[Row]]

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "fast": ("1, 7, 8 throughput, CPU, twilio-python", network.fast_server),
    "latency": ("2 latency-bound", limits.latency_bound),
    "rate": ("3 rate accuracy", limits.rate_accuracy),
    "throttle": ("4 unknown server limit", limits.unknown_limit),
    "local": ("5, 6 memory, rerun skip", local.memory_and_rerun),
    "matrix": ("9 flow-control matrix", matrix.flow_matrix),
    "noise": ("13 noise and overload matrix", noise.noise_matrix),
    "queue": ("10 Redis --drain vs file", queues.redis_vs_file),
    "queue-nats": ("10b NATS JetStream --drain vs file", broker_drains.nats_vs_file),
    "queue-sqs": ("10b Amazon SQS (bench endpoint) --drain vs file", broker_drains.sqs_vs_file),
    "shared-rate": ("11 shared rate accuracy", shared_rate.shared_rate_accuracy),
    "scale": ("12 scale-out: 1 vs 3 workers, Redis + PostgreSQL", scale_out.one_vs_three),
}
RESULTS = Path(__file__).resolve().parent / "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code works")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SCENARIOS),
        default=list(SCENARIOS),
        help="run only these scenario groups",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="[bench/results.json]")
    add_arguments(parser)
    return parser.parse_args(argv)


def run_one(name: str, ctx: Context) -> list[Row]:
    title, scenario = SCENARIOS[name]
    print(f"[bench] {title} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        rows = scenario(ctx)
    except (BenchError, OSError) as exc:
        rows = [failed_row(title, f"{type(exc).__name__}: {exc}")]
    print(f"[bench]   {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = from_arguments(args)
    mode = "smoke" if args.smoke else "full"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="feedback-bench-") as tmp:
        ctx = Context(sizes, Files(Path(tmp)), Path(tmp))
        for name in args.only:
            rows += run_one(name, ctx)
    print(render(rows))
    write_results(args.results, rows, mode=mode, sizes=ctx.sizes_dict())
    met = sum(1 for r in rows if r.met)
    judged = sum(1 for r in rows if r.met is not None)
    print(f"\n{met} of {judged} targets met ({mode} sizes); results in {args.results.name}")
    if mode == "smoke":
        print("smoke sizes only check that the benchmarks run: the figures mean nothing")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
