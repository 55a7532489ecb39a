"""Sources that are not plain finished files: FIFOs, /dev/fd/N (process substitution), files
still being written, and the size limits of a CSV field and a JSON line."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import ROOT

from pipeline.models import RawRecord
from pipeline.sources import CsvSource, JsonlSource, open_reader
from pipeline.sources.files import csv as csv_source
from pipeline.sources.files import jsonl as jsonl_source

CSV = b"session_id,score\ns1,0.5\ns2,1\n"
JSONL = b'{"session_id": "s1"}\n{"session_id": "s2"}\n'


def feed(path: str, data: bytes) -> threading.Thread:
    """Write ``data`` into a FIFO from another thread, as a producing process would."""

    def write() -> None:
        with open(path, "wb") as fh:
            fh.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = tmp_path / "input.fifo"
    os.mkfifo(path)
    return str(path)


# --- gzip through a FIFO or a pipe: sniffed without reopening -----------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("compress", [True, False])
def test_csv_through_a_fifo(fifo: str, compress: bool) -> None:
    writer = feed(fifo, gzip.compress(CSV) if compress else CSV)

    records = list(open_reader(fifo, "csv").records())

    writer.join(5)
    assert [(r.location, r.fields) for r in records] == [
        (f"{fifo}:2", {"session_id": "s1", "score": "0.5"}),
        (f"{fifo}:3", {"session_id": "s2", "score": "1"}),
    ]


@pytest.mark.timeout(20)
def test_gzip_jsonl_through_a_fifo(fifo: str) -> None:
    writer = feed(fifo, gzip.compress(JSONL))

    records = list(open_reader(fifo, "jsonl").records())

    writer.join(5)
    assert [r.fields for r in records] == [{"session_id": "s1"}, {"session_id": "s2"}]
    assert all(r.error is None for r in records)


@pytest.mark.timeout(20)
def test_gzip_through_dev_fd_as_process_substitution_gives_it() -> None:
    read_end, write_end = os.pipe()
    data = gzip.compress(CSV * 1)

    def write() -> None:
        with os.fdopen(write_end, "wb") as fh:
            fh.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        path = f"/dev/fd/{read_end}"  # what bash's <(gzip -c in.csv) expands to
        records = list(CsvSource(path).records())
    finally:
        thread.join(5)
        os.close(read_end)
    assert [r.fields["session_id"] for r in records] == ["s1", "s2"]


@pytest.mark.timeout(20)
def test_a_gzip_fifo_with_less_than_the_magic_bytes(fifo: str) -> None:
    writer = feed(fifo, b"\x1f")

    records = list(JsonlSource(fifo).records())

    writer.join(5)
    assert len(records) == 1
    assert records[0].error is not None  # one byte that is no JSON: one invalid record


# --- a file that changes while it is read --------------------------------------------------------


def read_while_appending(source: Iterator[RawRecord], path: Path, more: bytes) -> list[RawRecord]:
    """The first record, then ``more`` is appended (a writer still at work), then the rest."""
    first = next(source)
    with path.open("ab") as fh:
        fh.write(more)
    return [first, *source]


def test_csv_growing_with_a_cut_off_last_line_is_not_sent_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV)
    size = len(CSV)

    records = read_while_appending(CsvSource(str(path)).records(), path, b"s3,0.25\ns4,0.")

    good = [r for r in records if r.error is None]
    assert [r.fields["session_id"] for r in good] == ["s1", "s2", "s3"]
    (last,) = [r for r in records if r.error is not None]
    assert last.location == f"{path}:5"
    grown = len(CSV) + len(b"s3,0.25\ns4,0.")
    assert last.error == (
        f"incomplete last line, not sent: {path}: changed while it was read "
        f"(grew from {size} to {grown} bytes); rerun to pick up the rest"
    )
    assert last.fields == {}


def test_csv_growing_by_whole_lines_says_so_after_the_last(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV)

    records = read_while_appending(CsvSource(str(path)).records(), path, b"s3,0.25\n")

    assert [r.fields.get("session_id") for r in records] == ["s1", "s2", "s3", None]
    notice = records[-1]
    assert notice.location == f"{path}:5"
    assert notice.error is not None
    assert notice.error.startswith(f"{path}: changed while it was read (grew from ")
    assert notice.error.endswith("; rerun to pick up the rest")


def test_jsonl_growing_with_a_cut_off_last_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(JSONL)

    records = read_while_appending(
        JsonlSource(str(path)).records(), path, b'{"session_id": "s3", "text": "half'
    )

    assert [r.fields.get("session_id") for r in records] == ["s1", "s2", None]
    assert records[-1].location == f"{path}:3"
    assert records[-1].error is not None
    assert records[-1].error.startswith("incomplete last line, not sent: ")
    assert "changed while it was read" in records[-1].error


def test_a_finished_file_without_a_final_newline_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV + b"s3,0.")

    records = list(CsvSource(str(path)).records())

    assert [r.fields["session_id"] for r in records] == ["s1", "s2", "s3"]
    assert all(r.error is None for r in records)


def test_a_file_rewritten_in_place_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(JSONL)
    source = JsonlSource(str(path)).records()

    first = next(source)
    os.utime(path, ns=(1, 1))  # same size, other contents (an editor's save, a cp over it)
    rest = list(source)

    assert first.error is None
    assert rest[-1].error is not None
    assert f"changed while it was read (was rewritten ({len(JSONL)} bytes))" in rest[-1].error


# --- limits --------------------------------------------------------------------------------------


def test_csv_field_limit_is_one_mebibyte_of_characters(tmp_path: Path) -> None:
    limit = csv_source.FIELD_LIMIT
    assert limit == 1024 * 1024  # as the README says
    at_limit = "x" * limit
    rows = f"session_id,text\ns1,{at_limit}\ns2,{at_limit}y\ns3,ok\n".encode()
    path = tmp_path / "in.csv"
    path.write_bytes(rows)

    first, too_big, third = CsvSource(str(path)).records()

    assert first.error is None
    assert first.fields["text"] == at_limit
    assert too_big.location == f"{path}:3"
    assert too_big.error == (
        "malformed CSV: a field is longer than 1048576 characters (the CSV limit)"
    )
    assert third.fields == {"session_id": "s3", "text": "ok"}


def test_jsonl_line_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jsonl_source.LINE_LIMIT == 16 * 1024 * 1024  # as the README says
    monkeypatch.setattr(jsonl_source, "LINE_LIMIT", 64)
    exactly = b'{"session_id": "s1", "text": "' + b"x" * 32 + b'"}'
    assert len(exactly) == 64
    long = b'{"session_id": "s2", "text": "' + b"y" * 300 + b'"}'
    path = tmp_path / "in.jsonl"
    path.write_bytes(exactly + b"\n" + long + b"\n" + b'{"session_id": "s3"}\n' + long)

    records = list(JsonlSource(str(path)).records())

    assert [(r.location, r.fields.get("session_id"), r.error) for r in records] == [
        (f"{path}:1", "s1", None),
        (f"{path}:2", None, "line longer than 64 bytes (the limit)"),
        (f"{path}:3", "s3", None),
        (f"{path}:4", None, "line longer than 64 bytes (the limit)"),
    ]


def test_the_docs_state_the_limits_the_code_has() -> None:
    readme = (ROOT / "docs" / "reference" / "run.md").read_text(encoding="utf-8")
    text = " ".join(readme.split())
    assert f"A CSV field is at most {csv_source.FIELD_LIMIT} characters" in text
    assert f"a JSON line at most {jsonl_source.LINE_LIMIT} bytes" in text
