"""Reruns skip what an earlier run sent without validating it again: the shortcut's key must
be the record's own key, and a record it skips must be one validation would have accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli, assert_counts_add_up, assert_exactly_once, make_rows, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.engine.validate import Validator
from pipeline.errors import LedgerError
from pipeline.ledger.sqlite import queries as sqlite_queries
from pipeline.ledger.sqlite.ledger import SqliteLedger
from pipeline.models import Accepted, RawRecord

# Mostly valid values, so that what validation makes of the odd ones is what is tested.
_TEXT = st.one_of(
    st.sampled_from(["", "aia_msg_1", "a"]),
    st.text(max_size=4),
    st.sampled_from([" ", "\x1c", "\u3000", "a b", "x\x00", "\ud800", "..", "a/b", "aia_msg_"]),
)
_SCORE = st.one_of(
    st.just(""),
    st.from_regex(r"\A[ \t]?[+-]?[01٠¹]?[.]?[0-9]{0,3}([eE][+-]?[0-9])?[ \n]?\Z"),
    st.from_regex(r"\A0[.][0-9]{15,25}\Z"),
    st.sampled_from(["1_0", "0x1", "nan", "inf", "-0", "0.5.5", ".", "1.", ".5", "1.0000"]),
    st.floats(-0.5, 1.5),
    st.floats(),
    st.integers(-2, 2),
    st.booleans(),
    st.none(),
)


def _raw(a: object, s: object, m: object, score: object, t: object, k: object) -> RawRecord:
    fields = {"assistant_id": a, "session_id": s, "message_id": m, "score": score, "text": t}
    return RawRecord("in.csv:2", fields if k is None else dict(fields, key=k))


@settings(max_examples=4000)
@given(_TEXT, _TEXT, _TEXT, _SCORE, _TEXT, st.one_of(st.none(), st.just(""), st.just("k1")))
def test_a_quick_key_is_the_records_key_and_tells_validity(
    a: str, s: str, m: str, score: object, t: str, k: str | None
) -> None:
    validator = Validator(default_assistant_id="aia_asst_default")
    raw = _raw(a, s, m, score, t, k)
    quick = validator.quick_key(raw)
    if quick is None:
        return
    full = validator(raw)
    if isinstance(full, Accepted):
        assert full.key == quick
        return
    # Refused: then so is every record with the values the quick key hashed, so no record
    # the ledger holds as sent can have this key.
    valued = _raw(a or "aia_asst_default", s, m or None, _as_float(score), t or None, None)
    assert not isinstance(validator(valued), Accepted)


def _as_float(score: object) -> float | None:
    if score is None or score == "":
        return None
    return float(score.strip()) if isinstance(score, str) else float(score)  # type: ignore[arg-type]


def test_an_explicit_key_or_an_odd_value_gets_no_quick_key() -> None:
    validator = Validator(default_assistant_id="aia_asst_a")
    plain = {"session_id": "s", "score": "0.5"}
    assert validator.quick_key(RawRecord("x:2", plain)) is not None
    for odd in ({"key": "k"}, {"score": "-0"}, {"score": "1e-1"}, {"score": True}, {"text": 3}):
        assert validator.quick_key(RawRecord("x:2", dict(plain, **odd))) is None
    assert validator.quick_key(RawRecord("x:2", plain, error="malformed CSV")) is None


def test_a_rerun_skips_the_sent_and_sends_the_new_exactly_once(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = make_rows(300, prefix="o"), make_rows(300, prefix="n")
    first = write_csv(tmp_path / "first.csv", old)
    assert run_cli.run(str(first)).exit_code == 0
    # Old records around new ones, in batches of 40: looking up stops where batches find
    # nothing sent and starts again later; whatever it does, each record is decided once.
    rows = old[:150] + new + old[150:]
    again = write_csv(tmp_path / "again.csv", rows)

    monkeypatch.setenv("FEEDBACK_PIPELINE_BATCH_SIZE", "40")
    result = run_cli.run(str(again), "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0, result.output
    report = run_cli.report()
    assert (report["read"], report["skipped"], report["sent"]) == (600, 300, 300)
    assert_counts_add_up(report)
    assert run_cli.server.state.posts_received == 600
    assert_exactly_once(run_cli.server, rows)


def test_a_fixed_line_that_matches_a_sent_record_leaves_no_invalid_row(
    run_cli: Cli, tmp_path: Path
) -> None:
    rows = make_rows(5)
    broken = [*rows, dict(rows[0], score="high")]
    source = tmp_path / "a.csv"
    write_csv(source, broken)
    assert run_cli.run(str(source)).exit_code == 1  # one invalid row (line 7)
    assert sorted(r["state"] for r in run_cli.ledger_rows().values()) == ["invalid"] + ["sent"] * 5

    write_csv(source, [*rows, rows[0]])  # line 7 fixed: a copy of line 2, sent already
    result = run_cli.run(str(source), "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0, result.output
    assert run_cli.report()["skipped"] == 6
    assert sorted(r["state"] for r in run_cli.ledger_rows().values()) == ["sent"] * 5
    assert_exactly_once(run_cli.server, rows)


def test_a_sqlite_without_json_gives_the_same_rerun(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_queries, "has_json", lambda db: False)
    rows = make_rows(50)
    source = str(write_csv(tmp_path / "a.csv", rows))
    assert run_cli.run(source).exit_code == 0

    result = run_cli.run(source, "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 0, result.output
    assert (run_cli.report()["skipped"], run_cli.server.state.posts_received) == (50, 50)
    assert_exactly_once(run_cli.server, rows)


def test_a_lookup_that_fails_ends_the_rerun_cleanly_and_the_next_one_skips(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_rows(40)
    source = str(write_csv(tmp_path / "a.csv", rows))
    assert run_cli.run(source).exit_code == 0

    async def broken(self: SqliteLedger, records: object) -> set[str]:
        raise LedgerError("ledger read failed: disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr(SqliteLedger, "sent_earlier", broken)
        result = run_cli.run(source)
    assert result.exit_code == 3, result.output
    assert "aborted: ledger read failed: disk I/O error" in result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output

    again = run_cli.run(source, "--report", str(tmp_path / "report.json"))
    assert again.exit_code == 0, again.output
    assert run_cli.report()["skipped"] == 40
    assert run_cli.server.state.posts_received == 40
    assert_exactly_once(run_cli.server, rows)
