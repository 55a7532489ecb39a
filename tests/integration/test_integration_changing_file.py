"""A file that changed while the run read it, end to end: its cut-off last line is not sent,
the run says so and exits 1, and a rerun on the finished file sends the rest exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows, write_csv

from pipeline.sources.files import opening as base

HEADER = ["assistant_id", "session_id", "message_id", "text", "score"]


def test_a_cut_off_last_line_of_a_changing_file_waits_for_the_rerun(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_rows(4)
    rows[3]["score"] = "0.75"
    path = write_csv(tmp_path / "a.csv", rows, HEADER)
    whole = path.read_bytes()
    assert whole.endswith(b",0.75\r\n")
    path.write_bytes(whole[: -len(b"75\r\n")])  # "...,0." : a valid score, but not the real one
    # The writer is still at work: the file's stamp at its end differs from the one at open.
    real, stamps = base._stamp, []

    def stamp(fd: int) -> tuple[int, int] | None:
        now = real(fd)
        stamps.append(now)
        return now if now is None or len(stamps) == 1 else (now[0] + 4, now[1] + 1)

    monkeypatch.setattr(base, "_stamp", stamp)
    report = str(tmp_path / "report.json")

    first = run_cli.run(str(path), "--report", report)

    assert first.exit_code == 1, first.stderr
    size = len(whole) - 4
    assert (
        f"{path}:5: invalid: incomplete last line, not sent: {path}: changed while it was read "
        f"(grew from {size} to {size + 4} bytes); rerun to pick up the rest"
    ) in first.stderr
    assert run_cli.server.state.stored_count == 3  # the cut-off record was not sent
    summary = run_cli.report()
    assert (summary["read"], summary["sent"], summary["invalid"]) == (4, 3, 1)
    assert_counts_add_up(summary)

    monkeypatch.setattr(base, "_stamp", real)
    path.write_bytes(whole)  # the writer has finished
    rerun = run_cli.run(str(path), "--report", report)

    assert rerun.exit_code == 0, rerun.stderr
    assert_exactly_once(run_cli.server, rows)
    states = sorted(row["state"] for row in run_cli.ledger_rows().values())
    assert states == ["sent"] * 4  # the invalid row gave way to the record
