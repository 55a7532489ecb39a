"""Issue 23, item 1: a column the run does not read, and a --map naming a column the source
lacks, are errors before anything is sent (exit 2), not records sent without their values."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from conftest import Cli

from pipeline.engine.validate import Validator
from pipeline.models import Accepted, RawRecord, Rejection

RATING_COMMENT = (
    "session_id,message_id,rating,comment\ns1,aia_msg_1,0.5,good answer\ns2,aia_msg_2,0.9,\n"
)


def test_a_column_no_field_reads_stops_the_run_before_sending(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text(RATING_COMMENT)

    result = run_cli.run(str(source), "--assistant-id", "aia_asst_x")

    assert result.exit_code == 2
    assert "'rating', 'comment'" in result.stderr
    assert "--map score=rating --map text=comment" in result.stderr
    assert "--ignore-extra-columns" in result.stderr
    assert run_cli.server.state.stored_count == 0


def test_a_map_to_a_column_the_file_lacks_is_refused(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text(RATING_COMMENT)

    result = run_cli.run(
        str(source),
        "--assistant-id",
        "aia_asst_x",
        "--map",
        "score=ratings",
        "--map",
        "text=comment",
    )

    assert result.exit_code == 2
    assert "--map score=ratings" in result.stderr
    assert "no column 'ratings'" in result.stderr
    assert run_cli.server.state.stored_count == 0


def test_the_right_map_sends_every_value(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text(RATING_COMMENT)

    result = run_cli.run(
        str(source),
        "--assistant-id",
        "aia_asst_x",
        "--map",
        "score=rating",
        "--map",
        "text=comment",
    )

    assert result.exit_code == 0, result.output
    stored = {(f["session_id"], f.get("score"), f.get("text")) for f in _stored(run_cli)}
    assert stored == {("s1", 0.5, "good answer"), ("s2", 0.9, None)}


def test_extra_columns_can_be_ignored_on_purpose(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text("session_id,score,agent\ns1,0.5,a-1\n")

    result = run_cli.run(str(source), "--assistant-id", "aia_asst_x", "--ignore-extra-columns")

    assert result.exit_code == 0, result.output
    assert run_cli.server.state.stored_count == 1


def test_a_failures_export_runs_as_it_is(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "fix.csv"
    source.write_text(
        "assistant_id,session_id,message_id,score,text,key,state,location,http_status,"
        "error_code,reason\n"
        "aia_asst_x,s1,,0.5,,,invalid,old.csv:3,,,score: too high\n"
    )

    assert run_cli.run(str(source)).exit_code == 0
    assert run_cli.server.state.stored_count == 1


def test_jsonl_keys_are_checked_too(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl.gz"
    lines = [{"session_id": "s1", "rating": 0.5}, {"session_id": "s2", "rating": 0.1}]
    source.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))

    result = run_cli.run(str(source), "--assistant-id", "aia_asst_x")

    assert result.exit_code == 2
    assert "column 'rating' maps to no record field" in result.stderr
    assert "--map score=rating" in result.stderr
    assert run_cli.server.state.stored_count == 0


def test_stdin_cannot_be_read_ahead_so_each_record_is_invalid(run_cli: Cli) -> None:
    data = b'{"session_id": "s1", "comment": "x"}\n{"session_id": "s2", "text": "y"}\n'

    result = run_cli.run("-", "--format", "jsonl", "--assistant-id", "aia_asst_x", stdin=data)

    assert result.exit_code == 1
    assert "<stdin>:1: invalid: column 'comment' maps to no record field" in result.stderr
    assert [f["session_id"] for f in _stored(run_cli)] == ["s2"]


def test_validate_reports_the_same(run_cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text(RATING_COMMENT)

    refused = run_cli("validate", str(source), "--assistant-id", "aia_asst_x")
    ignored = run_cli("validate", str(source), "--assistant-id", "x", "--ignore-extra-columns")

    assert refused.exit_code == 2
    assert "'rating', 'comment'" in refused.stderr
    assert ignored.exit_code == 0


def test_the_validator_names_the_columns_of_a_record() -> None:
    validator = Validator(default_assistant_id="aia_asst_x")
    raw = RawRecord("q:1", {"session_id": "s", "rating": "0.3"})

    result = validator(raw)
    lenient = Validator(default_assistant_id="aia_asst_x", ignore_extra=True)(raw)

    assert isinstance(result, Rejection)
    assert "--map score=rating" in result.reason
    assert isinstance(lenient, Accepted)


def _stored(cli: Cli) -> list[dict[str, object]]:
    return [dict(f) for f in cli.server.state.feedbacks()]
