"""Validation: raw fields become an Accepted record or a Rejection that names the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pipeline.engine.validate import Validator
from pipeline.models import Accepted, FeedbackRecord, RawRecord, Rejection

ASSISTANT = "aia_asst_00000000-1111-2222-3333-444444444444"
LOCATION = "feedback.csv:7"


def validate(
    fields: dict[str, Any],
    *,
    default: str | None = ASSISTANT,
    columns: dict[str, str] | None = None,
) -> Accepted | Rejection:
    return Validator(default_assistant_id=default, columns=columns)(RawRecord(LOCATION, fields))


def accept(fields: dict[str, Any], **kwargs: Any) -> Accepted:
    result = validate(fields, **kwargs)
    assert isinstance(result, Accepted), result
    return result


def reject(fields: dict[str, Any], **kwargs: Any) -> Rejection:
    result = validate(fields, **kwargs)
    assert isinstance(result, Rejection), result
    return result


# (fields, default assistant id, the field the reason must start with)
BAD: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("session-missing", {"score": "0.5"}, ASSISTANT, "session_id"),
    ("session-empty-is-missing", {"session_id": ""}, ASSISTANT, "session_id"),
    ("session-null", {"session_id": None}, ASSISTANT, "session_id"),
    ("session-blank", {"session_id": "   "}, ASSISTANT, "session_id"),
    ("session-int", {"session_id": 123}, ASSISTANT, "session_id"),
    ("session-list", {"session_id": ["s1"]}, ASSISTANT, "session_id"),
    ("message-no-prefix", {"session_id": "s", "message_id": "msg_1"}, ASSISTANT, "message_id"),
    ("message-upper", {"session_id": "s", "message_id": "AIA_MSG_1"}, ASSISTANT, "message_id"),
    ("message-prefix-only", {"session_id": "s", "message_id": "aia_msg_"}, ASSISTANT, "message_id"),
    ("message-newline", {"session_id": "s", "message_id": "aia_msg_1\n"}, ASSISTANT, "message_id"),
    ("message-dict", {"session_id": "s", "message_id": {"id": 1}}, ASSISTANT, "message_id"),
    ("score-blank", {"session_id": "s", "score": "  "}, ASSISTANT, "score"),
    ("score-NaN", {"session_id": "s", "score": "NaN"}, ASSISTANT, "score"),
    ("score-nan-float", {"session_id": "s", "score": math.nan}, ASSISTANT, "score"),
    ("score-inf", {"session_id": "s", "score": "inf"}, ASSISTANT, "score"),
    ("score-minus-inf", {"session_id": "s", "score": "-inf"}, ASSISTANT, "score"),
    ("score-negative", {"session_id": "s", "score": "-0.1"}, ASSISTANT, "score"),
    ("score-above-one", {"session_id": "s", "score": "1.1"}, ASSISTANT, "score"),
    ("score-int-two", {"session_id": "s", "score": 2}, ASSISTANT, "score"),
    ("score-true", {"session_id": "s", "score": True}, ASSISTANT, "score"),
    ("score-false", {"session_id": "s", "score": False}, ASSISTANT, "score"),
    ("score-word", {"session_id": "s", "score": "abc"}, ASSISTANT, "score"),
    ("score-dict", {"session_id": "s", "score": {"value": 0.5}}, ASSISTANT, "score"),
    ("score-list", {"session_id": "s", "score": [0.5]}, ASSISTANT, "score"),
    ("text-dict", {"session_id": "s", "text": {"a": "b"}}, ASSISTANT, "text"),
    ("text-list", {"session_id": "s", "text": ["a"]}, ASSISTANT, "text"),
    ("assistant-slash", {"session_id": "s", "assistant_id": "aia/asst"}, None, "assistant_id"),
    ("assistant-query", {"session_id": "s", "assistant_id": "aia?x=1"}, None, "assistant_id"),
    ("assistant-hash", {"session_id": "s", "assistant_id": "aia#frag"}, None, "assistant_id"),
    ("assistant-dotdot", {"session_id": "s", "assistant_id": ".."}, None, "assistant_id"),
    ("assistant-dotdot-in", {"session_id": "s", "assistant_id": "a..b"}, None, "assistant_id"),
    # A single dot is a path segment too: "/Assistants/./Feedbacks" normalises away.
    ("assistant-dot", {"session_id": "s", "assistant_id": "."}, None, "assistant_id"),
    ("assistant-space", {"session_id": "s", "assistant_id": "aia asst"}, None, "assistant_id"),
    ("assistant-tab", {"session_id": "s", "assistant_id": "aia\tasst"}, None, "assistant_id"),
    ("assistant-nbsp", {"session_id": "s", "assistant_id": "aia\u00a0asst"}, None, "assistant_id"),
    ("assistant-pct2F", {"session_id": "s", "assistant_id": "aia%2Fasst"}, None, "assistant_id"),
    ("assistant-backslash", {"session_id": "s", "assistant_id": "aia\\asst"}, None, "assistant_id"),
    ("assistant-too-long", {"session_id": "s", "assistant_id": "a" * 257}, None, "assistant_id"),
    ("assistant-missing-no-default", {"session_id": "s"}, None, "assistant_id"),
    ("assistant-empty-no-default", {"session_id": "s", "assistant_id": ""}, None, "assistant_id"),
    ("key-too-long", {"session_id": "s", "key": "k" * 513}, ASSISTANT, "key"),
    # Bytes a source could not decode arrive as lone surrogates ("surrogateescape").
    ("session-undecodable", {"session_id": "s\udcff"}, ASSISTANT, "session_id"),
    ("text-undecodable", {"session_id": "s", "text": "caf\udcc3"}, ASSISTANT, "text"),
    ("score-undecodable", {"session_id": "s", "score": "0.\udcb5"}, ASSISTANT, "score"),
    # A JSON "\ud800" escape decodes to a lone surrogate that no UTF-8 encoder accepts.
    ("text-lone-high-surrogate", {"session_id": "s", "text": "x\ud800y"}, ASSISTANT, "text"),
    ("text-lone-low-surrogate", {"session_id": "s", "text": "x\udfffy"}, ASSISTANT, "text"),
    ("session-nul", {"session_id": "s\x001"}, ASSISTANT, "session_id"),
    ("text-nul", {"session_id": "s", "text": "a\x00b"}, ASSISTANT, "text"),
    ("assistant-nul", {"session_id": "s", "assistant_id": "aia\x00"}, None, "assistant_id"),
]


@pytest.mark.parametrize(
    ("fields", "default", "field"),
    [pytest.param(fields, default, field, id=name) for name, fields, default, field in BAD],
)
def test_bad_input_is_rejected_naming_the_field(
    fields: dict[str, Any], default: str | None, field: str
) -> None:
    rejection = reject(fields, default=default)

    assert rejection.location == LOCATION
    assert rejection.reason.startswith(f"{field}: "), rejection.reason
    assert rejection.key.startswith("invalid:")


def test_bad_table_is_large_enough() -> None:
    assert len(BAD) >= 25
    assert len({name for name, *_ in BAD}) == len(BAD)


def test_undecodable_and_nul_reasons_say_what_is_wrong() -> None:
    assert reject({"session_id": "s", "text": "\udcff"}).reason == "text: not valid UTF-8"
    assert reject({"session_id": "s", "text": "a\x00"}).reason == "text: contains a NUL character"


def test_missing_assistant_reason_mentions_the_default_flag() -> None:
    reason = reject({"session_id": "s"}, default=None).reason
    assert reason.startswith("assistant_id: missing")
    assert "--assistant-id" in reason


def test_reason_shows_the_offending_value_shortened() -> None:
    reason = reject({"session_id": "s", "score": "x" * 100}).reason
    assert "(got 'xxxx" in reason
    assert "x" * 40 not in reason
    assert reason.endswith("...)")


def test_several_errors_are_all_reported() -> None:
    reason = reject({"session_id": "s", "score": "2", "message_id": "nope"}).reason
    assert "score: " in reason
    assert "message_id: " in reason
    assert "; " in reason


def test_source_error_becomes_the_rejection_reason() -> None:
    raw = RawRecord("data.jsonl:3", {}, "invalid JSON: Expecting value (column 1)")
    result = Validator(default_assistant_id=ASSISTANT)(raw)

    assert result == Rejection("data.jsonl:3", "invalid JSON: Expecting value (column 1)")


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("0.5", 0.5),
        (" 0.5 ", 0.5),
        ("0.50", 0.5),
        ("1e-1", 0.1),
        ("-0.0", 0.0),
        (0, 0.0),
        (1, 1.0),
        (0.25, 0.25),
        (-0.0, 0.0),
    ],
)
def test_good_scores_are_accepted(score: Any, expected: float) -> None:
    record = accept({"session_id": "s", "score": score}).record

    assert record.score == expected
    assert isinstance(record.score, float)
    assert math.copysign(1.0, record.score) == 1.0  # -0.0 folded into 0.0


def test_negative_zero_hashes_like_zero() -> None:
    assert (
        accept({"session_id": "s", "score": "-0.0"}).key
        == accept({"session_id": "s", "score": "0"}).key
    )


def test_full_record_is_accepted_with_location() -> None:
    result = accept(
        {
            "assistant_id": "aia_asst_other",
            "session_id": "sess-1",
            "message_id": "aia_msg_1",
            "score": "0.75",
            "text": "great answer",
        }
    )

    assert result.location == LOCATION
    assert result.record == FeedbackRecord(
        assistant_id="aia_asst_other",
        session_id="sess-1",
        message_id="aia_msg_1",
        score=0.75,
        text="great answer",
    )


def test_default_assistant_fills_missing_and_empty_assistant() -> None:
    assert accept({"session_id": "s"}).record.assistant_id == ASSISTANT
    assert accept({"session_id": "s", "assistant_id": ""}).record.assistant_id == ASSISTANT
    assert accept({"session_id": "s", "assistant_id": None}).record.assistant_id == ASSISTANT


def test_record_assistant_wins_over_default() -> None:
    record = accept({"session_id": "s", "assistant_id": "aia_asst_row"}).record
    assert record.assistant_id == "aia_asst_row"


def test_longest_assistant_id_is_accepted() -> None:
    assert accept({"session_id": "s", "assistant_id": "a" * 256}).record.assistant_id == "a" * 256


def test_empty_string_means_absent() -> None:
    record = accept(
        {"session_id": "s", "message_id": "", "score": "", "text": "", "key": ""}
    ).record

    assert record.message_id is None
    assert record.score is None
    assert record.text is None
    assert record.key is None


def test_unknown_columns_are_a_problem_unless_ignored() -> None:
    fields = {"session_id": "s", "comment": "x", "rating": "0.3"}
    rejected = Validator(default_assistant_id=ASSISTANT)(RawRecord(LOCATION, fields))
    ignored = Validator(default_assistant_id=ASSISTANT, ignore_extra=True)(
        RawRecord(LOCATION, fields)
    )
    assert isinstance(rejected, Rejection)
    assert "'comment', 'rating'" in rejected.reason
    assert isinstance(ignored, Accepted)
    assert ignored.record.body() == {"session_id": "s"}


def test_column_mapping_reads_the_mapped_column() -> None:
    record = accept(
        {"session": "s9", "rating": "0.7", "score": "0.1"},
        columns={"score": "rating", "session_id": "session"},
    ).record

    assert record.session_id == "s9"
    assert record.score == 0.7


def test_column_mapping_ignores_the_unmapped_field_name() -> None:
    record = accept({"session_id": "s", "score": "0.1"}, columns={"score": "rating"}).record
    assert record.score is None


def test_column_mapping_rejection_names_the_field_not_the_column() -> None:
    reason = reject({"session_id": "s", "rating": "7"}, columns={"score": "rating"}).reason
    assert reason.startswith("score: ")


def test_body_contains_only_present_fields() -> None:
    minimal = accept({"session_id": "s"}).record
    assert minimal.body() == {"session_id": "s"}

    full = accept(
        {
            "session_id": "s",
            "message_id": "aia_msg_1",
            "score": "0",
            "text": "t",
            "key": "k-1",
        }
    ).record
    # The assistant goes in the URL and the key stays local: neither is in the body.
    assert full.body() == {"session_id": "s", "message_id": "aia_msg_1", "score": 0.0, "text": "t"}


def test_zero_score_is_present_in_body() -> None:
    assert accept({"session_id": "s", "score": "0"}).record.body()["score"] == 0.0


def test_idempotency_key_is_stable_across_spellings() -> None:
    base = {"session_id": "s", "message_id": "aia_msg_1", "text": "t"}
    keys = {
        accept({**base, "score": 0.5}).key,
        accept({**base, "score": "0.50"}).key,
        accept({**base, "score": " 0.5"}).key,
        accept({**base, "score": "5e-1"}).key,
    }
    assert len(keys) == 1
    assert accept({**base, "score": 1}).key == accept({**base, "score": "1.0"}).key


def test_idempotency_key_is_deterministic_hex() -> None:
    first = accept({"session_id": "s", "score": "0.5"}).key
    second = accept({"session_id": "s", "score": "0.5"}).key

    assert first == second
    assert len(first) == 64
    int(first, 16)


def test_accepted_key_is_the_record_key() -> None:
    result = accept({"session_id": "s", "text": "t"})
    assert result.key == result.record.idempotency_key()


def test_explicit_key_wins() -> None:
    one = accept({"session_id": "s1", "score": "0.1", "key": "row-42"})
    other = accept({"session_id": "s2", "score": "0.9", "key": "row-42"})

    assert one.key == "row-42"
    assert other.key == "row-42"


def test_explicit_key_from_mapped_column() -> None:
    result = accept({"session_id": "s", "id": "ext-1"}, columns={"key": "id"})
    assert result.key == "ext-1"


BASE_FIELDS: dict[str, Any] = {
    "assistant_id": "aia_asst_a",
    "session_id": "s",
    "message_id": "aia_msg_1",
    "score": "0.5",
    "text": "t",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("assistant_id", "aia_asst_b"),
        ("session_id", "s2"),
        ("message_id", "aia_msg_2"),
        ("message_id", ""),
        ("score", "0.6"),
        ("score", ""),
        ("text", "T"),
        ("text", ""),
    ],
)
def test_idempotency_key_differs_when_any_field_differs(field: str, value: str) -> None:
    base = accept(BASE_FIELDS).key
    changed = accept({**BASE_FIELDS, field: value}).key
    assert changed != base


def test_fields_do_not_bleed_into_each_other_in_the_key() -> None:
    # Canonical JSON, not concatenation: moving text between fields changes the key.
    one = accept({"session_id": "ab", "text": "c"}).key
    two = accept({"session_id": "a", "text": "bc"}).key
    assert one != two


def test_rejection_keeps_the_record_fields_by_field_name_and_nothing_else() -> None:
    validator = Validator(default_assistant_id="aia_asst_x", columns={"score": "rating"})
    raw = RawRecord("f.csv:4", {"session_id": "s", "rating": "7", "text": ""})
    result = validator(raw)
    assert isinstance(result, Rejection)
    # By field name (--map applied), absent cells left out, extra columns not kept, and the
    # default assistant filled in: an exported row is whole.
    assert result.fields == {"session_id": "s", "score": "7", "assistant_id": "aia_asst_x"}
    nul = validator(RawRecord("f.csv:5", {"session_id": "a\x00b"}))
    assert isinstance(nul, Rejection)
    assert nul.fields == {"session_id": "a\x00b", "assistant_id": "aia_asst_x"}
    unreadable = validator(RawRecord("f.csv:6", {}, error="malformed CSV"))
    assert isinstance(unreadable, Rejection)
    assert unreadable.fields is None
