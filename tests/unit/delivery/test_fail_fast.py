"""Issue 23, item 3: nothing answers at --base-url. Before anything ever succeeded a run
fails fast (exit 3 within about 30 s, naming --base-url and suggesting check), not after
--max-outage; a base URL with /v1 is said to look wrong (run and check)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import Cli, make_rows, write_csv
from fakeclock import Clock

from pipeline.delivery.circuit import Gate
from pipeline.errors import OutageError

FIRST_CONTACT_S = 30.0  # the bound the docs state (docs/explanation/exactly-once.md)


def _gate(clock: Clock) -> Gate:
    async def sleep(seconds: float) -> None:
        clock.now += seconds

    return Gate(
        sleep=sleep,
        stopped=lambda: False,
        notice=lambda _: None,
        clock=clock,
        threshold=3,
        max_outage=600.0,
        target="--base-url http://127.0.0.1:9",
    )


async def test_a_never_answering_api_fails_within_first_contact_not_max_outage() -> None:
    clock = Clock()
    gate = _gate(clock)
    for _ in range(3):
        gate.failed("connection refused")

    async def probes() -> None:
        for _ in range(100):
            await gate.admit()
            gate.failed("connection refused")  # every probe fails too

    with pytest.raises(OutageError) as raised:
        await probes()

    assert clock.now - 1000.0 == pytest.approx(FIRST_CONTACT_S, abs=5)
    message = str(raised.value)
    assert "--base-url http://127.0.0.1:9" in message
    assert "feedback-pipeline check" in message
    assert "connection refused" in message


async def test_after_a_success_an_outage_waits_for_max_outage() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.succeeded()
    for _ in range(3):
        gate.failed("HTTP 503")

    for _ in range(10):  # 10 probes, cool-downs of up to 30 s: well past first contact
        await gate.admit()
        gate.failed("HTTP 503")

    assert clock.now - 1000.0 > FIRST_CONTACT_S
    assert gate.is_open


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_run_names_base_url_and_suggests_check(run_cli: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", make_rows(20))
    url = f"http://127.0.0.1:{_closed_port()}"

    result = run_cli(
        "run", str(source), "--base-url", url, "--ledger", str(tmp_path / "l.sqlite3"),
        "--no-progress", "--max-outage", "1", "--new-ledger", "send",
    )  # fmt: skip

    assert result.exit_code == 3
    assert f"nothing has ever answered at --base-url {url}" in result.stderr
    assert "feedback-pipeline check" in result.stderr


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_base_url_with_v1_looks_wrong(run_cli: Cli, tmp_path: Path, command: str) -> None:
    source = write_csv(tmp_path / "in.csv", make_rows(3))
    url = run_cli.server.url + "/v1"

    ledger = ["--ledger", str(tmp_path / "l")] if command == "run" else []
    result = run_cli(command, str(source), "--base-url", url, *ledger)

    assert result.exit_code == 2
    assert "--base-url: looks wrong: it has /v1 in its path" in result.stderr
    assert run_cli.server.state.stored_count == 0
