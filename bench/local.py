"""Scenarios about the client alone: peak memory (5) and skipping what was already sent (6).

The rerun (6) reads ``rerun_rows`` records (a million at full size) against a ledger that
holds every one of them as sent, built by ``bench.build_ledger`` (the ledger's own batch
claim and record, no requests), so that a large ledger costs seconds, not a full run.
"""

from __future__ import annotations

from bench.network import check_exactly_once, fresh_ledger
from bench.procs import BenchError, Child, count, duration, module_run, pipeline_run
from bench.server import ServerProcess
from bench.sizes import Context
from bench.table import Row

MEMORY_LIMIT_MB = 120.0
FLAT_RATIO = 1.2
SKIP_TARGET = 100_000.0


def _dry_run(ctx: Context, rows: int) -> Child:
    # No ledger file: a dry run then reads against an empty in-memory ledger.
    run = pipeline_run(ctx.files.csv(rows), fresh_ledger(ctx, "dry"), base_url=None)
    if count(run, "read") != rows:
        raise BenchError(f"dry run read {count(run, 'read')} of {rows} rows")
    return run


def memory_and_rerun(ctx: Context) -> list[Row]:
    s = ctx.sizes
    small = _dry_run(ctx, s.small_rows)
    large = _dry_run(ctx, s.large_rows)
    run_file = ctx.files.csv(s.run_rows)
    reference = small if s.run_rows == s.small_rows else _dry_run(ctx, s.run_rows)
    rerun_file = ctx.files.csv(s.rerun_rows)
    rerun_dry = large if s.rerun_rows == s.large_rows else _dry_run(ctx, s.rerun_rows)
    rerun_ledger = fresh_ledger(ctx, "rerun")
    built = module_run("bench.build_ledger", [str(rerun_file), str(rerun_ledger)])
    if count(built, "rows") != s.rerun_rows:
        raise BenchError(f"ledger build: {built.report}")
    with ServerProcess(ctx.workdir) as server:
        ledger = fresh_ledger(ctx, "full")
        server.reset()
        full = pipeline_run(run_file, ledger, base_url=server.url, concurrency=s.concurrency)
        check_exactly_once(server, full, s.run_rows)
        server.reset()
        rerun = pipeline_run(
            rerun_file, rerun_ledger, base_url=server.url, concurrency=s.concurrency
        )
        if count(rerun, "skipped") != s.rerun_rows or server.stats().get("posts_received"):
            raise BenchError(f"rerun did not skip every record: {rerun.report}")
    return [
        _flat_row(s.small_rows, small, s.large_rows, large),
        _full_run_row(s.run_rows, full, reference),
        *_skip_rows(s.rerun_rows, rerun, rerun_dry, built),
    ]


def _flat_row(n_small: int, small: Child, n_large: int, large: Child) -> Row:
    ratio = large.maxrss_mb / small.maxrss_mb
    return Row(
        scenario=f"5a peak RSS, dry run {n_large:,} rows",
        measured=f"{large.maxrss_mb:.1f} MB",
        baseline=f"{small.maxrss_mb:.1f} MB at {n_small:,} rows",
        ratio=ratio,
        target=f"<= {FLAT_RATIO}, <= {MEMORY_LIMIT_MB:g} MB",
        met=ratio <= FLAT_RATIO and large.maxrss_mb <= MEMORY_LIMIT_MB,
        details={"cpu_s_large": round(large.cpu_s, 2), "wall_s_large": round(large.wall_s, 2)},
    )


def _full_run_row(rows: int, full: Child, dry: Child) -> Row:
    ratio = full.maxrss_mb / dry.maxrss_mb
    return Row(
        scenario=f"5b peak RSS, full run {rows:,} rows",
        measured=f"{full.maxrss_mb:.1f} MB",
        baseline=f"{dry.maxrss_mb:.1f} MB dry run",
        ratio=ratio,
        target=f"<= {MEMORY_LIMIT_MB:g} MB",
        met=full.maxrss_mb <= MEMORY_LIMIT_MB,
        details={"rate_rec_s": round(rows / duration(full), 1)},
    )


def _skip_rows(rows: int, rerun: Child, dry: Child, built: Child) -> list[Row]:
    skip_rate = rows / duration(rerun)
    dry_rate = rows / duration(dry)
    note = {
        "ledger_rows": rows,
        "ledger_built_by": "bench.build_ledger: batch claim + record(sent), no requests",
        "ledger_build_s": round(built.wall_s, 1),
        "rerun_cpu_s": round(rerun.cpu_s, 2),
        "rerun_maxrss_mb": round(rerun.maxrss_mb, 1),
    }
    return [
        Row(
            scenario=f"6a rerun skip, {rows:,} sent rows",
            measured=f"{skip_rate:,.0f} rec/s",
            baseline=f"{SKIP_TARGET:,.0f} rec/s target",
            ratio=skip_rate / SKIP_TARGET,
            target=">= 1.00",
            met=skip_rate >= SKIP_TARGET,
            details=note,
        ),
        Row(
            scenario="6b rerun skip vs dry run",
            measured=f"{skip_rate:,.0f} rec/s",
            baseline=f"{dry_rate:,.0f} rec/s dry run (read+validate)",
            ratio=skip_rate / dry_rate,
            target="info",
            met=None,
        ),
    ]
