"""CSV and JSONL sources over real files: encodings, gzip, locations and broken input."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from pipeline.engine.validate import Validator
from pipeline.errors import ConfigError, SourceError
from pipeline.models import Accepted, RawRecord, Rejection
from pipeline.sources import CsvSource, JsonlSource, open_reader

ASSISTANT = "aia_asst_test"


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def csv_records(path: str) -> list[RawRecord]:
    return list(CsvSource(path).records())


def jsonl_records(path: str) -> list[RawRecord]:
    return list(JsonlSource(path).records())


def validate(raw: RawRecord) -> Accepted | Rejection:
    return Validator(default_assistant_id=ASSISTANT)(raw)


def big_gzip_truncated(lines: list[bytes]) -> bytes:
    """A gzip stream cut off in the middle; the lines are incompressible enough to span it."""
    data = gzip.compress(b"".join(lines))
    return data[: len(data) // 2]


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_reads_rows_with_header_names_and_locations(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"session_id,score,text\ns1,0.5,hello\ns2,1,\n")

    assert csv_records(path) == [
        RawRecord(f"{path}:2", {"session_id": "s1", "score": "0.5", "text": "hello"}),
        RawRecord(f"{path}:3", {"session_id": "s2", "score": "1", "text": ""}),
    ]


def test_csv_bom_header_spaces_extra_columns_any_order(tmp_path: Path) -> None:
    data = "\ufeff extra , score ,session_id\r\nx,0.5,s1\r\n".encode()
    path = write(tmp_path / "in.csv", data)

    (record,) = csv_records(path)

    assert record.fields == {"extra": "x", "score": "0.5", "session_id": "s1"}
    assert isinstance(validate(record), Rejection)  # an extra column: not read unless told
    result = Validator(default_assistant_id=ASSISTANT, ignore_extra=True)(record)
    assert isinstance(result, Accepted)
    assert result.record.session_id == "s1"
    assert result.record.score == 0.5


def test_csv_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"session_id\n\ns1\n\n\ns2\n")

    records = csv_records(path)

    assert [(r.location, r.fields["session_id"]) for r in records] == [
        (f"{path}:3", "s1"),
        (f"{path}:6", "s2"),
    ]


def test_csv_multiline_quoted_field_keeps_its_start_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b'session_id,text\ns1,"two\nlines"\ns2,one\n')

    first, second = csv_records(path)

    assert first.location == f"{path}:2"
    assert first.fields["text"] == "two\nlines"
    assert second.location == f"{path}:4"


def test_csv_malformed_quoting_is_an_error_at_its_line_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "in.csv", b'session_id,text\ns1,ok\ns2,"bad"quote\ns3,fine\n')

    ok, bad, later = csv_records(path)

    assert ok.location == f"{path}:2"
    assert ok.error is None
    assert bad.location == f"{path}:3"
    assert bad.error is not None
    assert bad.error.startswith("malformed CSV")
    assert bad.fields == {}
    assert later == RawRecord(f"{path}:4", {"session_id": "s3", "text": "fine"})
    rejection = validate(bad)
    assert isinstance(rejection, Rejection)
    assert rejection.location == f"{path}:3"


def test_csv_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"session_id,score\ns1\ns2,0.5,extra\ns3,1\n")

    short, long, good = csv_records(path)

    assert short.location == f"{path}:2"
    assert short.error == "expected 2 fields as in the header, found 1"
    assert long.location == f"{path}:3"
    assert long.error == "expected 2 fields as in the header, found 3"
    assert good.error is None


def test_csv_invalid_utf8_costs_one_record(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"session_id,text\ns1,caf\xe9\ns2,caf\xc3\xa9\n")

    bad, good = csv_records(path)

    rejection = validate(bad)
    assert isinstance(rejection, Rejection)
    assert rejection.location == f"{path}:2"
    assert rejection.reason == "text: not valid UTF-8"
    accepted = validate(good)
    assert isinstance(accepted, Accepted)
    assert accepted.record.text == "café"


@pytest.mark.parametrize("name", ["in.csv.gz", "in.csv"])
def test_csv_gzip_is_detected_by_magic_bytes(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, gzip.compress(b"session_id,score\ns1,0.5\ns2,1\n"))

    source = open_reader(path, None)

    assert isinstance(source, CsvSource)
    assert [r.fields for r in source.records()] == [
        {"session_id": "s1", "score": "0.5"},
        {"session_id": "s2", "score": "1"},
    ]


def test_csv_gzip_with_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", gzip.compress("\ufeffsession_id\ns1\n".encode()))
    assert [r.fields for r in csv_records(path)] == [{"session_id": "s1"}]


def test_csv_truncated_gzip_keeps_earlier_rows_then_reports(tmp_path: Path) -> None:
    lines = [b"session_id,text\n"] + [f"s{i},{os.urandom(8).hex()}\n".encode() for i in range(5000)]
    path = write(tmp_path / "in.csv", big_gzip_truncated(lines))

    records = csv_records(path)

    *good, last = records
    assert len(good) > 100
    assert all(r.error is None for r in good)
    assert [r.fields["session_id"] for r in good] == [f"s{i}" for i in range(len(good))]
    assert last.error is not None
    assert last.error.startswith("unreadable")
    assert last.location == f"{path}:{len(good) + 2}"


@pytest.mark.parametrize("data", [b"", b"session_id,score\n", b"\n\n"])
def test_csv_empty_or_header_only_has_no_records(tmp_path: Path, data: bytes) -> None:
    assert csv_records(write(tmp_path / "in.csv", data)) == []


def test_csv_records_are_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"session_id\ns1\ns2\n")
    records = CsvSource(path).records()
    assert isinstance(records, Generator)
    assert next(records).fields == {"session_id": "s1"}
    records.close()


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_reads_objects_with_line_numbers_skipping_blank_lines(tmp_path: Path) -> None:
    data = b'{"session_id": "s1", "score": 0.5}\n\n   \n{"session_id": "s2", "extra": [1]}\n'
    path = write(tmp_path / "in.jsonl", data)

    assert jsonl_records(path) == [
        RawRecord(f"{path}:1", {"session_id": "s1", "score": 0.5}),
        RawRecord(f"{path}:4", {"session_id": "s2", "extra": [1]}),
    ]


def test_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b'\xef\xbb\xbf{"session_id": "s1"}\r\n{"session_id": "s2"}')
    assert [r.fields for r in jsonl_records(path)] == [{"session_id": "s1"}, {"session_id": "s2"}]


def test_jsonl_invalid_json_is_an_error_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl", b'{"session_id": "s1"}\n{"session_id": \n{"session_id": "s3"}\n'
    )

    first, bad, third = jsonl_records(path)

    assert bad.location == f"{path}:2"
    assert bad.error is not None
    assert bad.error.startswith("invalid JSON")
    assert "column" in bad.error
    assert first.fields == {"session_id": "s1"}
    assert third == RawRecord(f"{path}:3", {"session_id": "s3"})


@pytest.mark.parametrize(
    ("line", "kind"),
    [(b"[1, 2]", "list"), (b'"text"', "str"), (b"42", "int"), (b"0.5", "float"), (b"null", "None")],
)
def test_jsonl_non_object_lines_are_errors(tmp_path: Path, line: bytes, kind: str) -> None:
    path = write(tmp_path / "in.jsonl", line + b"\n")

    (record,) = jsonl_records(path)

    assert record.error is not None
    assert record.error.startswith("expected a JSON object")
    assert kind in record.error


def test_jsonl_duplicated_keys_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b'{"session_id": "s", "score": 0.1, "score": 0.9}\n')

    (record,) = jsonl_records(path)

    assert record.error is not None
    assert "duplicated key 'score'" in record.error


def test_jsonl_nested_duplicated_keys_are_an_error_too(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", b'{"session_id": "s", "x": {"a": 1, "a": 2}}\n')
    (record,) = jsonl_records(path)
    assert record.error is not None
    assert "duplicated key 'a'" in record.error


def test_jsonl_invalid_utf8_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl", b'{"session_id": "s1"}\n{"text": "caf\xe9"}\n{"session_id": "s3"}\n'
    )

    first, bad, third = jsonl_records(path)

    assert bad.location == f"{path}:2"
    assert bad.error is not None
    assert "not valid UTF-8" in bad.error
    rejection = validate(bad)
    assert isinstance(rejection, Rejection)
    assert "not valid UTF-8" in rejection.reason
    assert first.error is None
    assert third.error is None


def test_jsonl_two_megabyte_line(tmp_path: Path) -> None:
    text = "x" * (2 * 1024 * 1024)
    line = json.dumps({"session_id": "s1", "text": text}).encode()
    path = write(tmp_path / "in.jsonl", line + b'\n{"session_id": "s2"}\n')

    big, small = jsonl_records(path)

    assert big.error is None
    assert big.fields["text"] == text
    assert small.location == f"{path}:2"


def test_jsonl_gzip_without_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", gzip.compress(b'{"session_id": "s1"}\n'))
    assert [r.fields for r in jsonl_records(path)] == [{"session_id": "s1"}]


def test_jsonl_truncated_gzip_keeps_earlier_records_then_reports(tmp_path: Path) -> None:
    lines = [
        json.dumps({"session_id": f"s{i}", "t": os.urandom(8).hex()}).encode() + b"\n"
        for i in range(5000)
    ]
    path = write(tmp_path / "in.jsonl", big_gzip_truncated(lines))

    *good, last = jsonl_records(path)

    assert len(good) > 100
    assert all(r.error is None for r in good)
    assert [r.fields["session_id"] for r in good] == [f"s{i}" for i in range(len(good))]
    assert last.error is not None
    assert last.error.startswith("unreadable")
    assert last.location == f"{path}:{len(good) + 1}"


def test_jsonl_empty_file_has_no_records(tmp_path: Path) -> None:
    assert jsonl_records(write(tmp_path / "in.jsonl", b"")) == []


# --- open_reader -------------------------------------------------------------------------------


def test_open_reader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_reader(str(tmp_path / "absent.csv"), None)


def test_open_reader_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        open_reader(str(tmp_path), "csv")


def test_open_reader_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "secret.csv", b"session_id\ns1\n")
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            # root reads whatever the mode bits say; the source must then work normally.
            assert [r.fields for r in open_reader(path, None).records()] == [{"session_id": "s1"}]
        else:
            with pytest.raises(SourceError, match="permission denied"):
                open_reader(path, None)
    finally:
        os.chmod(path, 0o600)


def test_open_reader_refuses_when_access_is_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "in.csv", b"session_id\ns1\n")
    monkeypatch.setattr("pipeline.sources.files.opening.os.access", lambda p, mode: False)

    with pytest.raises(SourceError, match="permission denied") as info:
        open_reader(path, None)
    assert path in str(info.value)


@pytest.mark.parametrize("name", ["in.txt", "in", "in.tsv.gz"])
def test_open_reader_unknown_extension_needs_format(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, b"session_id\ns1\n")

    with pytest.raises(ConfigError, match="--format"):
        open_reader(path, None)
    assert isinstance(open_reader(path, "csv"), CsvSource)
    assert isinstance(open_reader(path, "jsonl"), JsonlSource)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.csv", CsvSource),
        ("A.CSV", CsvSource),
        ("a.csv.gz", CsvSource),
        ("a.jsonl", JsonlSource),
        ("a.ndjson", JsonlSource),
        ("a.json", JsonlSource),
        ("a.jsonl.gz", JsonlSource),
    ],
)
def test_open_reader_detects_format_from_name(
    tmp_path: Path, name: str, kind: type[CsvSource | JsonlSource]
) -> None:
    assert isinstance(open_reader(write(tmp_path / name, b""), None), kind)


def test_explicit_format_wins_over_the_name(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", b'{"session_id": "s1"}\n')
    source = open_reader(path, "jsonl")
    assert [r.fields for r in source.records()] == [{"session_id": "s1"}]


def fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_stdin_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdin(monkeypatch, b"session_id,score\ns1,0.5\n")

    source = open_reader("-", "csv")

    assert source.name == "<stdin>"
    assert list(source.records()) == [RawRecord("<stdin>:2", {"session_id": "s1", "score": "0.5"})]


def test_stdin_jsonl_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdin(monkeypatch, gzip.compress(b'{"session_id": "s1"}\n{"session_id": "s2"}\n'))

    records = list(open_reader("-", "jsonl").records())

    assert records == [
        RawRecord("<stdin>:1", {"session_id": "s1"}),
        RawRecord("<stdin>:2", {"session_id": "s2"}),
    ]


def test_stdin_needs_a_format(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdin(monkeypatch, b"session_id\ns1\n")
    with pytest.raises(ConfigError, match="stdin"):
        open_reader("-", None)
