"""Issue 23, item 5: what reconciliation settles at the run's end is counted where people
look (the summary and the report), and matches the ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows, write_csv

from pipeline.fake import FakeServer, FakeState, Faults


def test_resets_settled_at_the_end_are_counted_in_summary_and_report(
    clean_env: None, tmp_path: Path
) -> None:
    rows = make_rows(200)
    state = FakeState(faults=Faults(reset_rate=0.1, seed=5))
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        result = cli.run(
            str(write_csv(tmp_path / "a.csv", rows)),
            "--settle", "0", "--max-attempts", "1", "--report", str(tmp_path / "report.json"),
        )  # fmt: skip

    assert result.exit_code == 0, result.output
    resets = state.resets
    assert resets > 0
    report = cli.report()
    assert report["reconciled_own_found"] == resets  # every reset request was stored
    assert report["reconciled_own_missing"] == 0
    assert f"reconciled {resets} outcomes of this run left unknown" in result.stdout
    assert f"{resets} were stored (counted as sent)" in result.stdout
    # The log, too, says what became of its "unknown (may be stored ...)" lines.
    assert f"reconcile: {resets} outcomes of this run left unknown: {resets} were stored" in (
        result.stderr
    )
    with sqlite3.connect(cli.ledger) as db:
        states = dict(db.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall())
    assert states == {"sent": report["sent"]}
    assert report["sent"] == len(rows)
    assert_counts_add_up(report)
    assert_exactly_once(server, rows)
