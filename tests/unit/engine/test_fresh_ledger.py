"""Issue 23, item 2: a mistyped ledger. A run that creates its ledger says so (absolute path);
``--ledger-must-exist`` refuses a missing one; a new ledger's records found at the API stop
the run before they are sent twice (or are adopted, or sent on purpose)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import Cli, make_rows, write_csv

from pipeline.delivery.client import FeedbackClient
from pipeline.engine.stages import Item
from pipeline.errors import ConfigError
from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState
from pipeline.models import Accepted, FeedbackRecord

ROWS = make_rows(30)


def _run(cli: Cli, source: Path, ledger: Path, *extra: str) -> tuple[int, str, str]:
    result = cli(
        "run", str(source), "--base-url", cli.server.url, "--ledger", str(ledger),
        "--no-progress", *extra,
    )  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def test_a_run_that_creates_its_ledger_says_so_with_its_absolute_path(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(tmp_path / "in.csv", ROWS)
    monkeypatch.chdir(tmp_path)

    code, _, stderr = _run(run_cli, source, Path("backfill.sqlite3"))

    assert code == 0
    assert f"new ledger {tmp_path / 'backfill.sqlite3'}: created by this run" in stderr


def test_a_mistyped_ledger_stops_before_sending_anything_twice(
    run_cli: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", ROWS)
    assert _run(run_cli, source, tmp_path / "backfill.sqlite3")[0] == 0

    code, _, stderr = _run(run_cli, source, tmp_path / "backfil.sqlite3")

    assert code == 2
    assert "is new, but 30 of the first 30 records are already at the API" in stderr
    assert "--new-ledger adopt" in stderr
    assert "--new-ledger send" in stderr
    assert run_cli.server.state.stored_count == 30  # not one sent twice
    assert not run_cli.server.state.duplicates()


def test_adopt_records_them_as_sent_and_sends_only_the_rest(run_cli: Cli, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "first.csv", ROWS[:20])
    assert _run(run_cli, first, tmp_path / "a.sqlite3")[0] == 0
    both = write_csv(tmp_path / "all.csv", ROWS)
    ledger = tmp_path / "b.sqlite3"

    code, stdout, stderr = _run(run_cli, both, ledger, "--new-ledger", "adopt")

    assert code == 0, stderr
    assert "20 of the first 30 records are already at the API" in stderr
    assert "sent 10, skipped 20" in stdout
    assert run_cli.server.state.stored_count == 30
    assert not run_cli.server.state.duplicates()
    with sqlite3.connect(ledger) as db:
        states = dict(db.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall())
    assert states == {"sent": 30}


def test_send_sends_them_again_on_purpose(run_cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ROWS[:5])
    assert _run(run_cli, source, tmp_path / "a.sqlite3")[0] == 0

    code, _, _ = _run(run_cli, source, tmp_path / "b.sqlite3", "--new-ledger", "send")

    assert code == 0
    assert run_cli.server.state.stored_count == 10


def test_ledger_must_exist_refuses_a_missing_ledger(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(tmp_path / "in.csv", ROWS[:5])
    missing = tmp_path / "nightly.sqlite3"

    by_flag = _run(run_cli, source, missing, "--ledger-must-exist")
    monkeypatch.setenv("FEEDBACK_PIPELINE_LEDGER_MUST_EXIST", "true")
    by_env = _run(run_cli, source, missing)

    assert by_flag[0] == 2
    assert f"{missing} does not exist, and --ledger-must-exist" in by_flag[2]
    assert by_env[0] == 2
    assert "FEEDBACK_PIPELINE_LEDGER_MUST_EXIST" in by_env[2]
    assert not missing.exists()
    assert run_cli.server.state.stored_count == 0


def test_the_lookup_is_bounded_in_pages() -> None:
    from pipeline.engine.fresh_ledger import look_up  # here: the module is new with this check

    state = FakeState()
    for i in range(2500):  # three List pages of 1000
        state.store("aia_asst_b", {"session_id": f"s{i}"}, account_sid=DEFAULT_ACCOUNT_SID)
    early = Accepted.of("x:1", FeedbackRecord(assistant_id="aia_asst_b", session_id="s5"))
    late = Accepted.of("x:2", FeedbackRecord(assistant_id="aia_asst_b", session_id="s2400"))

    async def lookup(pages: int) -> tuple[list[str], list[str]]:
        auth = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
            client = FeedbackClient(session, server.url)
            found = await look_up(client, [early, late], _free, max_pages=pages)
        return [item.location or "" for item, _ in found.items], found.unchecked

    with FakeServer(state) as server:
        one_page = asyncio.run(lookup(1))
        all_pages = asyncio.run(lookup(3))

    assert one_page == (["x:1"], ["aia_asst_b: more than 1 pages, the rest not read"])
    assert all_pages == (["x:1", "x:2"], [])


async def _free() -> None:
    return None


def test_records_found_once_another_worker_filled_the_ledger_do_not_stop_the_run(
    tmp_path: Path,
) -> None:
    # Two workers start on one new shared ledger; one sends before the other's lookup: the
    # ledger is no longer new then, and the found records are that worker's, not a mistake.
    from pipeline.engine.fresh_ledger import guard
    from pipeline.ledger import open_ledger
    from pipeline.models import Outcome, Status

    state = FakeState()
    state.store("aia_asst_b", {"session_id": "s1"}, account_sid=DEFAULT_ACCOUNT_SID)
    record = Accepted.of("x:1", FeedbackRecord(assistant_id="aia_asst_b", session_id="s1"))

    async def first_batch(filled: bool) -> list[object]:
        ledger = await open_ledger(str(tmp_path / f"{filled}.sqlite3"), "run-1", command="run")
        if filled:  # the other worker's claim and outcome
            await ledger.claim([record])
            await ledger.record([Outcome(record.key, Status.SENT, 201, feedback_id="aia_fdbk_1")])

        async def batches() -> AsyncIterator[list[Item]]:
            yield [record]

        auth = aiohttp.encode_basic_auth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        try:
            async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
                guarded = await guard(
                    batches(), url="l.sqlite3", mode="check", ledger=ledger,
                    client=FeedbackClient(session, server.url), acquire=_free, notice=print,
                )  # fmt: skip
                return [item async for batch in guarded for item in batch]
        finally:
            await ledger.close()

    with FakeServer(state) as server:
        assert asyncio.run(first_batch(True)) == [record]
        with pytest.raises(ConfigError, match="already at the API"):
            asyncio.run(first_batch(False))
