"""Rows that cannot give their record back never crash a command.

An older version could leave them: a worker that had lost its lease wrote ``failed`` (or
``unknown``) over another run's ``sent`` row, which keeps no request body. ``replay``,
``reconcile`` and a rerun then crashed at start-up on ``json.loads(None)``, for good. Now each
such row is skipped with one notice, and ``failures`` and ``status`` show it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli, make_rows, write_csv
from pg_helpers import PgSchema, pg_schema

__all__ = ["pg_schema"]

# A failed row without a body; a dead run's in-flight row without one; an unknown row whose
# body is not a record.
_DAMAGE = (
    "UPDATE {t} SET state = 'failed', body = NULL WHERE key = '{a}'",
    "UPDATE {t} SET state = 'in_flight', body = NULL, run_id = 'gone' WHERE key = '{b}'",
    "UPDATE {t} SET state = 'unknown', body = 'not json', run_id = 'gone' WHERE key = '{c}'",
)


def _damage_sqlite(path: Path) -> Callable[[list[str]], None]:
    def damage(keys: list[str]) -> None:
        with sqlite3.connect(path) as db:
            for sql in _DAMAGE:
                db.execute(sql.format(t="records", a=keys[0], b=keys[1], c=keys[2]))

    return damage


def _damage_pg(schema: PgSchema) -> Callable[[list[str]], None]:
    def damage(keys: list[str]) -> None:
        for sql in _DAMAGE:
            statement = sql.format(t="{s}.records", a=keys[0], b=keys[1], c=keys[2])
            asyncio.run(schema.fetch(statement))

    return damage


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rows_without_a_body_are_skipped_and_shown_never_a_crash(
    backend: str, run_cli: Cli, tmp_path: Path, pg_schema: PgSchema
) -> None:
    if backend == "sqlite":
        ledger, damage = str(run_cli.ledger), _damage_sqlite(run_cli.ledger)
    else:
        ledger, damage = pg_schema.url(), _damage_pg(pg_schema)
    source = str(write_csv(tmp_path / "in.csv", make_rows(6)))
    common = ("--base-url", run_cli.server.url, "--ledger", ledger, "--no-progress")
    first = run_cli("run", source, *common, "--settle", "0")
    assert first.exit_code == 0, first.output
    all_keys = _keys(run_cli, ledger, backend, pg_schema)
    damage(all_keys[:3])

    for args in (
        ("replay", *common),
        ("reconcile", "--base-url", run_cli.server.url, "--ledger", ledger, "--settle", "0"),
        ("run", source, *common, "--settle", "0"),
    ):
        result = run_cli(*args)
        assert "Traceback" not in result.output
        assert "internal error" not in result.output
        assert result.exit_code in (0, 1), (args, result.output)
        assert "cannot be" in result.output, (args, result.output)

    # The rerun gave the bodiless rows their body back, as unknown (they may be stored, and
    # are: nothing was sent twice); reconciliation now settles them. The row whose body is
    # not a record stays unknown, and ``failures`` and ``status`` show it.
    settled = run_cli(
        "reconcile", "--base-url", run_cli.server.url, "--ledger", ledger, "--settle", "0"
    )
    assert settled.exit_code == 0, settled.output
    print("RECONCILE", settled.output)
    assert run_cli.server.state.duplicates() == {}
    assert run_cli.server.state.posts_received == 6
    shown = run_cli("failures", "--ledger", ledger, "--format", "jsonl")
    assert shown.exit_code == 0
    assert all_keys[2] in shown.output
    assert all_keys[0] not in shown.output
    status = run_cli("status", "--ledger", ledger, "--json")
    assert status.exit_code in (0, 1), status.output
    assert '"sent": 5' in status.output
    assert '"unknown": 1' in status.output


def _keys(run_cli: Cli, ledger: str, backend: str, schema: PgSchema) -> list[str]:
    if backend == "sqlite":
        with sqlite3.connect(run_cli.ledger) as db:
            return sorted(k for (k,) in db.execute("SELECT key FROM records"))
    rows = asyncio.run(schema.fetch("SELECT key FROM {s}.records ORDER BY key"))
    return [r[0] for r in rows]
