"""Sources and ledgers chosen by URL: the registries, their one-line errors, masked URLs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ledger import SqliteLedger, open_ledger
from pipeline.models import Accepted, FeedbackRecord, RawRecord
from pipeline.sources import (
    Done,
    FileSource,
    open_publisher,
    open_source,
    source_options,
)
from pipeline.urls import local_path, mask_url, scheme

OPTIONS = source_options(Settings.model_validate({}))


# --- urls -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (
            "amqp://guest:guest@localhost:5672/%2F?queue=q",
            "amqp://guest:***@localhost:5672/%2F?queue=q",
        ),
        ("postgresql://u:p%40ss@db/ledger", "postgresql://u:***@db/ledger"),
        ("redis://localhost/0", "redis://localhost/0"),
        ("amqp://user@host/", "amqp://user@host/"),
        ("data/in.csv", "data/in.csv"),
        ("-", "-"),
        ("redis://u:pw@host:notaport/0", "redis://u:***@host:notaport/0"),
        ("redis://u:pw@[::1/0", "redis://***@[::1/0"),  # unparsable: all userinfo hidden
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_scheme_tells_urls_from_paths() -> None:
    assert scheme("REDIS://x") == "redis"
    assert scheme("sqlite:///x.db") == "sqlite"
    assert scheme("a/b://c.csv") is None  # a path with "://" inside is still a path
    assert scheme("-") is None
    assert scheme("c:\\in.csv") is None


def test_local_path_of_sqlite_urls() -> None:
    assert local_path("ledger.sqlite3") == "ledger.sqlite3"
    assert local_path("sqlite:///rel/l.db") == "rel/l.db"
    assert local_path("sqlite:////abs/l%20x.db") == "/abs/l x.db"
    assert local_path("postgresql://db/x") is None
    with pytest.raises(ConfigError, match="expected sqlite:///"):
        local_path("sqlite://host/l.db")


# --- ledger registry ----------------------------------------------------------------------


async def test_a_sqlite_url_and_a_path_open_the_same_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    record = Accepted.of("x:1", FeedbackRecord(assistant_id="aia_asst_1", session_id="s1"))
    ledger = await open_ledger("sqlite:///l.db", "run-1", command="run")
    assert isinstance(ledger, SqliteLedger)
    await ledger.claim([record])
    await ledger.close()

    by_path = await open_ledger(str(tmp_path / "l.db"), "run-2", command="status", read_only=True)
    by_abs_url = await open_ledger(f"sqlite:///{tmp_path}/l.db", "run-3", command="status")
    try:
        assert await by_path.counts() == {"in_flight": 1}
    finally:
        await by_path.close()
    try:
        assert await by_abs_url.counts() == {"in_flight": 1}
    finally:
        await by_abs_url.close()


@pytest.mark.parametrize("url", ["foo://x", "mysql://u:secret@db/ledger"])
async def test_an_unknown_ledger_scheme_is_a_one_line_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        await open_ledger(url, "run-1", command="run")
    message = str(info.value)
    assert "\n" not in message
    assert "no ledger backend" in message
    assert "secret" not in message


# --- source registry ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["foo://x", "kafka://:s3cret@localhost:9092/0?topic=s"])
async def test_an_unregistered_source_scheme_is_a_one_line_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        await open_source(url, OPTIONS)
    message = str(info.value)
    assert "\n" not in message
    assert f"no source for {scheme(url)}://" in message
    assert "s3cret" not in message


async def test_a_path_is_a_file_source_that_acks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"session_id": "s1"}\n{"session_id": "s2"}\n{"session_id": "s3"}\n')
    options = source_options(Settings.model_validate({"batch_size": 2}))

    source = await open_source(str(path), options)

    assert isinstance(source, FileSource)
    assert source.name == str(path)
    batches = [batch async for batch in source.batches(asyncio.Event())]
    assert [[r.fields["session_id"] for r in b] for b in batches] == [["s1", "s2"], ["s3"]]
    assert all(r.handle is None for b in batches for r in b)
    await source.ack([Done(object())])  # a no-op
    await source.close()


async def test_a_file_source_stops_between_batches(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"session_id": "s{i}"}}\n' for i in range(10)))
    source = await open_source(
        str(path), source_options(Settings.model_validate({"batch_size": 2}))
    )
    stop = asyncio.Event()
    seen = []
    async for batch in source.batches(stop):
        seen.append(batch)
        stop.set()
    assert len(seen) == 1


async def test_a_reader_that_breaks_costs_the_rest_of_its_file() -> None:
    class Broken:
        name = "broken.csv"

        def records(self):  # type: ignore[no-untyped-def]
            yield RawRecord("broken.csv:2", {"session_id": "s1"})
            raise RuntimeError("bug")

    source = FileSource(Broken(), 10)
    [batch] = [b async for b in source.batches(asyncio.Event())]
    assert batch[0].fields == {"session_id": "s1"}
    assert batch[1].error == "unreadable from here on: RuntimeError: bug"


async def test_a_file_is_not_a_publisher(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a queue URL"):
        await open_publisher(str(tmp_path / "x.csv"), OPTIONS)


# --- the command line -----------------------------------------------------------------------


def test_run_with_an_unknown_scheme_fails_with_one_line(clean_env: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "foo://user:pw@host/q", "--ledger", str(tmp_path / "l.db")]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "no source for foo://" in result.output
    assert "pw" not in result.output
    assert not (tmp_path / "l.db").exists()


def test_status_takes_a_sqlite_url(clean_env: None, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing.db"
    result = CliRunner().invoke(cli, ["status", "--ledger", url])
    assert result.exit_code == 2
    assert f"no ledger at {tmp_path}/missing.db" in result.output
