"""The Python API (pipeline.run, replay, reconcile) against the fake API on a real socket,
judged by the fake server's own counts: from a plain call, from inside a running event loop,
from a worker thread; no signal handler unless asked; settings and credentials from what the
program gives only; the documented errors; the sample nightly job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exactly_once, make_rows, write_csv
from paths import ROOT

import pipeline
from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState, Faults

CREDENTIALS = pipeline.Credentials.of(
    account_sid=DEFAULT_ACCOUNT_SID, auth_token=DEFAULT_AUTH_TOKEN
)


@pytest.fixture
def api() -> Iterator[FakeServer]:
    with FakeServer(FakeState(faults=Faults(seed=7))) as server:
        yield server


def _settings(server: FakeServer, tmp_path: Path, **more: Any) -> pipeline.Settings:
    return pipeline.Settings(
        ledger=str(tmp_path / "ledger.sqlite3"),
        base_url=server.url,
        rate=0,
        backoff=0.01,
        max_backoff=0.05,
        progress=False,
        **more,
    )


def _rows(tmp_path: Path, n: int = 30) -> tuple[Path, list[dict[str, Any]]]:
    rows = make_rows(n)
    return write_csv(tmp_path / "in.csv", rows), rows


def test_run_sends_every_record_once_and_a_rerun_nothing(api: FakeServer, tmp_path: Path) -> None:
    path, rows = _rows(tmp_path)
    settings = _settings(api, tmp_path)

    first = pipeline.run([path], settings=settings, credentials=CREDENTIALS)
    again = pipeline.run([str(path)], settings=settings, credentials=CREDENTIALS)

    assert (first.sent, first.exit_code) == (30, 0)
    assert (again.sent, again.skipped) == (0, 30)
    assert_exactly_once(api, rows)


async def test_run_from_inside_a_running_event_loop(api: FakeServer, tmp_path: Path) -> None:
    path, rows = _rows(tmp_path)
    asyncio.get_running_loop()  # a loop runs here: the run goes on a loop of its own

    summary = pipeline.run([path], settings=_settings(api, tmp_path), credentials=CREDENTIALS)

    assert summary.sent == 30
    assert_exactly_once(api, rows)


async def test_arun_is_awaited_on_the_callers_loop(api: FakeServer, tmp_path: Path) -> None:
    path, rows = _rows(tmp_path)

    summary = await pipeline.arun(
        [path], settings=_settings(api, tmp_path), credentials=CREDENTIALS
    )

    assert summary.sent == 30
    assert_exactly_once(api, rows)


def test_run_from_a_worker_thread(api: FakeServer, tmp_path: Path) -> None:
    path, rows = _rows(tmp_path)
    done: list[pipeline.Summary | BaseException] = []

    def job() -> None:
        try:
            done.append(
                pipeline.run([path], settings=_settings(api, tmp_path), credentials=CREDENTIALS)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            done.append(exc)

    worker = threading.Thread(target=job)
    worker.start()
    worker.join(timeout=60)

    [summary] = done
    assert isinstance(summary, pipeline.Summary), summary
    assert summary.sent == 30
    assert_exactly_once(api, rows)


@pytest.mark.parametrize("handle_signals", [False, True])
def test_no_signal_handler_unless_asked(
    api: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handle_signals: bool
) -> None:
    installed: list[int] = []
    loop_class = asyncio.SelectorEventLoop  # the loop asyncio.run makes here
    real = loop_class.add_signal_handler

    def spy(self: asyncio.SelectorEventLoop, sig: int, *args: Any) -> None:
        installed.append(sig)
        real(self, sig, *args)

    monkeypatch.setattr(loop_class, "add_signal_handler", spy)
    path, _ = _rows(tmp_path, 3)

    pipeline.run(
        [path],
        settings=_settings(api, tmp_path),
        credentials=CREDENTIALS,
        handle_signals=handle_signals,
    )

    assert installed == ([signal.SIGINT, signal.SIGTERM] if handle_signals else [])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_settings_read_no_environment_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_RATE", "7")
    monkeypatch.setenv("FEEDBACK_PIPELINE_CONCURRENCY", "not a number")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")

    assert pipeline.Settings().rate == 50.0
    assert pipeline.Credentials.of(account_sid="AC1", auth_token="given").basic_auth() == (
        "AC1",
        "given",
    )
    with pytest.raises(pipeline.ConfigError, match="FEEDBACK_PIPELINE_CONCURRENCY"):
        pipeline.Settings.from_env()


def test_a_bad_setting_is_a_config_error_naming_it() -> None:
    with pytest.raises(pipeline.ConfigError, match="^configuration error: rate: "):
        pipeline.Settings(rate=-1)


def test_credentials_never_show_in_a_repr_or_the_log(
    api: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = _rows(tmp_path, 3)
    caplog.set_level("DEBUG", logger="pipeline")

    pipeline.run([path], settings=_settings(api, tmp_path), credentials=CREDENTIALS)

    assert DEFAULT_AUTH_TOKEN not in repr(CREDENTIALS)
    assert DEFAULT_AUTH_TOKEN not in str(CREDENTIALS)
    assert DEFAULT_AUTH_TOKEN not in caplog.text


def test_the_documented_errors(api: FakeServer, tmp_path: Path) -> None:
    path, _ = _rows(tmp_path, 5)
    settings = _settings(api, tmp_path)

    with pytest.raises(pipeline.ConfigError, match="credentials are required"):
        pipeline.run([path], settings=settings)
    with pytest.raises(pipeline.SourceError):
        pipeline.run([tmp_path / "missing.csv"], settings=settings, credentials=CREDENTIALS)
    wrong = pipeline.Credentials.of(account_sid=DEFAULT_ACCOUNT_SID, auth_token="wrong")
    with pytest.raises(pipeline.AbortedError, match="authentication refused") as aborted:
        pipeline.run([path], settings=settings, credentials=wrong)

    summary = aborted.value.summary
    assert isinstance(summary, pipeline.Summary)
    assert summary.exit_code == 3
    assert api.state.stored_count == 0


def test_a_dry_run_needs_no_credentials_and_sends_nothing(api: FakeServer, tmp_path: Path) -> None:
    path, _ = _rows(tmp_path, 5)

    summary = pipeline.run([path], settings=_settings(api, tmp_path), dry_run=True)

    assert summary.would_send == 5
    assert api.state.posts_received == 0


def test_replay_sends_again_what_failed_and_reconcile_settles(
    api: FakeServer, tmp_path: Path
) -> None:
    path, rows = _rows(tmp_path, 20)
    settings = _settings(api, tmp_path, max_attempts=1)
    api.state.update_faults({"fail_rate": 1.0})
    failed = pipeline.run([path], settings=settings, credentials=CREDENTIALS)
    assert failed.failed == 20
    assert api.state.stored_count == 0
    api.state.update_faults({"fail_rate": 0.0})

    replayed = pipeline.replay(settings=settings, credentials=CREDENTIALS)
    settled = pipeline.reconcile(settings=settings, credentials=CREDENTIALS)

    assert replayed.sent == 20
    assert settled.total == 0  # nothing was left uncertain
    assert_exactly_once(api, rows)


def test_the_sample_nightly_job(api: FakeServer, tmp_path: Path) -> None:
    env = dict(
        os.environ, TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID, TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN
    )
    command = [
        sys.executable,
        str(ROOT / "samples" / "nightly_job.py"),
        str(ROOT / "samples" / "ratings.csv"),
        "--ledger",
        str(tmp_path / "nightly.sqlite3"),
        "--assistant-id",
        "aia_asst_00000000-1111-2222-3333-444444444444",
        "--base-url",
        api.url,
    ]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    stored = api.state.stored_count
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    rows = len((ROOT / "samples" / "ratings.csv").read_text().splitlines()) - 1
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert stored == rows
    assert api.state.stored_count == rows  # the rerun sent nothing
    assert api.state.stats()["duplicates"] == 0
