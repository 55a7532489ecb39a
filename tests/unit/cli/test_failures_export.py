"""``failures``: export what needs a person, fix it, feed it back to ``run``; ``retire``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import Cli, content_of, write_csv

from pipeline.fake import FakeServer, FakeState, Faults

KNOWN = "aia_asst_test"


@pytest.fixture
def strict_cli(clean_env: None, tmp_path: Path) -> object:
    """The CLI against a fake API that knows one assistant only (others: 404)."""
    with FakeServer(FakeState(known_assistants={KNOWN}, faults=Faults(seed=1))) as server:
        yield Cli(server, tmp_path)


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def source(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    rows = [
        {"assistant_id": KNOWN, "session_id": "ok1", "score": "0.5", "text": 'a, "quoted"\nline'},
        {"assistant_id": "aia_asst_gone", "session_id": "s404", "score": "0.1", "text": ""},
        {"assistant_id": KNOWN, "session_id": "bad", "score": "7", "text": "too high"},
        {"assistant_id": KNOWN, "session_id": "ok2", "score": "1", "text": ""},
    ]
    return write_csv(tmp_path / "in.csv", rows), rows


def test_export_fix_and_run_sends_each_fixed_row_exactly_once(
    strict_cli: Cli, tmp_path: Path
) -> None:
    path, rows = source(tmp_path)
    assert strict_cli.run(str(path)).exit_code == 1
    export = tmp_path / "fix.csv"

    result = strict_cli("failures", "--ledger", str(strict_cli.ledger), "--output", str(export))

    assert result.exit_code == 0, result.output
    assert "2 records (1 failed, 1 invalid)" in result.stderr
    exported = {r["session_id"]: r for r in rows_of(export)}
    assert list(rows_of(export)[0]) == [
        "assistant_id",
        "session_id",
        "message_id",
        "score",
        "text",
        "key",
        "state",
        "location",
        "http_status",
        "error_code",
        "reason",
    ]
    gone, bad = exported["s404"], exported["bad"]
    assert (gone["state"], gone["location"], gone["http_status"]) == ("failed", f"{path}:4", "404")
    assert gone["error_code"]
    assert gone["reason"]
    assert gone["key"]
    assert (bad["state"], bad["location"], bad["score"], bad["key"]) == (
        "invalid",
        f"{path}:5",
        "7",
        "",
    )
    assert bad["reason"].startswith("score:")

    # A person fixes both rows in the file and runs it as it is.
    gone["assistant_id"], bad["score"] = KNOWN, "0.7"
    with export.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(gone))
        writer.writeheader()
        writer.writerows([gone, bad])
    before = strict_cli.server.state.stats()["posts_received"]

    assert strict_cli.run(str(export)).exit_code == 0
    again = strict_cli.run(str(export))

    assert again.exit_code == 0
    assert "sent 0" in again.stdout
    counts = strict_cli.server.state.content_counts()
    assert strict_cli.server.state.stats()["posts_received"] - before == 2
    fixed = [dict(rows[1], assistant_id=KNOWN), dict(rows[2], score="0.7")]
    for row in [rows[0], rows[3], *fixed]:
        assert counts[content_of({**row, "message_id": ""})] == 1
    assert strict_cli.server.state.duplicates() == {}
    # The failed record was replaced by its fix (same key); the old invalid row stays
    # until retired (it names a place in in.csv, which still holds the bad row).
    states = sorted(r["state"] for r in strict_cli.ledger_rows().values())
    assert states == ["invalid", "sent", "sent", "sent", "sent"]


def test_export_jsonl_by_state_keeps_native_values(strict_cli: Cli, tmp_path: Path) -> None:
    path, _ = source(tmp_path)
    strict_cli.run(str(path))
    out = tmp_path / "failed.jsonl"
    result = strict_cli(
        "failures", "--ledger", str(strict_cli.ledger), "--state", "failed", "--output", str(out)
    )
    assert result.exit_code == 0
    (line,) = out.read_text().splitlines()
    row = json.loads(line)
    assert (row["session_id"], row["score"], row["http_status"]) == ("s404", 0.1, 404)
    assert row["text"] is None

    out.write_text(json.dumps(dict(row, assistant_id=KNOWN)) + "\n")
    fixed = strict_cli.run(str(out))
    assert fixed.exit_code == 0
    assert "sent 1" in fixed.stdout
    assert strict_cli.server.state.content_counts()[(KNOWN, "s404", None, 0.1, None)] == 1
    assert strict_cli.server.state.duplicates() == {}


def test_export_to_stdout_and_a_missing_ledger(strict_cli: Cli, tmp_path: Path) -> None:
    path, _ = source(tmp_path)
    strict_cli.run(str(path))
    result = strict_cli("failures", "--ledger", str(strict_cli.ledger), "--state", "invalid")
    assert result.exit_code == 0
    assert [r["session_id"] for r in csv.DictReader(result.stdout.splitlines())] == ["bad"]
    missing = strict_cli("failures", "--ledger", str(tmp_path / "none.sqlite3"))
    assert missing.exit_code == 2
    assert "no ledger at" in missing.stderr
    assert not (tmp_path / "none.sqlite3").exists()


def test_an_undecodable_byte_is_exported_shown_not_a_crash(strict_cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"assistant_id,session_id,score\naia_asst_test,s\xff1,0.5\n")
    assert strict_cli.run(str(path)).exit_code == 1
    for args in ((), ("--output", str(tmp_path / "out.csv")), ("--format", "jsonl")):
        result = strict_cli("failures", "--ledger", str(strict_cli.ledger), *args)
        assert result.exit_code == 0, result.output
    assert "s\\udcff1" in (tmp_path / "out.csv").read_text()
