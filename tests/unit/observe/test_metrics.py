"""Prometheus metrics (prometheus-client): the textfile written at the end (also on an abort)
and the endpoint scraped during a real run, both parsed with prometheus_client's parser and
held against the fake API's own counts."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import Cli, make_rows, run_command, write_csv
from prometheus_client.parser import text_string_to_metric_families

from pipeline.fake import FakeServer, FakeState, Faults

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_the_textfile_holds_the_runs_counts_and_the_servers_answers(
    run_cli: Cli, tmp_path: Path
) -> None:
    state = run_cli.server.state
    state.known_assistants = {"aia_asst_test"}
    state.update_faults({"fail_rate": 0.1})
    rows = make_rows(40) + make_rows(2, assistant="aia_asst_gone", prefix="g")
    rows.append({**make_rows(1, prefix="bad")[0], "score": "5"})
    textfile = tmp_path / "run.prom"

    # --new-ledger send: no List lookup first, whose answers the server counts but POST
    # metrics do not.
    result = run_cli.run(
        str(write_csv(tmp_path / "in.csv", rows)),
        "--metrics-textfile",
        str(textfile),
        "--new-ledger",
        "send",
    )

    assert result.exit_code == 1, result.output
    samples = _samples(textfile.read_text())
    assert _value(samples, "feedback_records_read_total") == 43
    assert _value(samples, "feedback_records_total", outcome="sent") == state.stored_count == 40
    assert _value(samples, "feedback_records_total", outcome="failed") == 2
    assert _value(samples, "feedback_records_total", outcome="invalid") == 1
    assert state.responses[503] > 0
    for status, count in state.responses.items():
        assert _value(samples, "feedback_requests_total", status=str(status)) == count
    posts = sum(state.responses.values())
    assert _value(samples, "feedback_request_duration_seconds_count") == posts
    assert _value(samples, "feedback_request_duration_seconds_bucket", le="+Inf") == posts
    # Every 503 is retried, but for a record of the missing assistant whose retry comes
    # after the other one's 404: that one is not sent again (at most 2 here).
    retries = _value(samples, "feedback_retries_total")
    assert state.responses[503] - 2 <= retries <= state.responses[503]
    assert 1 <= _value(samples, "feedback_concurrency_limit") <= 16
    assert _value(samples, "feedback_rate_cap") >= 0
    size = (tmp_path / "in.csv").stat().st_size
    assert _value(samples, "feedback_input_bytes") == size
    assert _value(samples, "feedback_input_bytes_read") == size


def test_the_textfile_is_written_on_an_abort(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong")
    textfile = tmp_path / "run.prom"

    source = str(write_csv(tmp_path / "in.csv", make_rows(10)))
    # --new-ledger send: the 401 comes to a POST (the lookup would meet it first).
    result = run_cli.run(source, "--metrics-textfile", str(textfile), "--new-ledger", "send")

    assert result.exit_code == 3, result.output
    samples = _samples(textfile.read_text())
    assert _value(samples, "feedback_requests_total", status="401") >= 1
    assert _value(samples, "feedback_records_total", outcome="sent") == 0
    assert not list(tmp_path.glob("*.prom.*"))  # written beside itself, then renamed


def test_each_run_has_its_own_registry(run_cli: Cli, tmp_path: Path) -> None:
    source = str(write_csv(tmp_path / "in.csv", make_rows(10)))
    first, second = tmp_path / "1.prom", tmp_path / "2.prom"

    assert run_cli.run(source, "--metrics-textfile", str(first)).exit_code == 0
    assert run_cli.run(source, "--metrics-textfile", str(second)).exit_code == 0

    assert _value(_samples(first.read_text()), "feedback_requests_total", status="201") == 10
    again = _samples(second.read_text())
    assert ("feedback_requests_total", (("status", "201"),)) not in again  # nothing sent
    assert _value(again, "feedback_records_total", outcome="skipped") == 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_endpoint_serves_live_counts_during_a_run(clean_env: None, tmp_path: Path) -> None:
    rows = make_rows(400)
    port = _free_port()
    state = FakeState(faults=Faults(latency_ms=20))
    with FakeServer(state) as server:
        command = run_command(
            server, str(write_csv(tmp_path / "a.csv", rows)), tmp_path / "l.sqlite3"
        )
        proc = subprocess.Popen(
            [*command, "--concurrency", "4", "--metrics-port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        scraped: list[Samples] = []
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    samples = _samples(r.read().decode())
            except OSError:
                time.sleep(0.02)  # not listening yet (or just closed): poll again
                continue
            sent = samples.get(("feedback_records_total", (("outcome", "sent"),)), 0)
            if 0 < sent < len(rows):
                scraped.append(samples)
                if len(scraped) >= 2:
                    break
        out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    assert len(scraped) >= 2, "never scraped the run while it was sending"
    first, last = scraped[0], scraped[-1]
    assert _value(first, "feedback_records_total", outcome="sent") <= _value(
        last, "feedback_records_total", outcome="sent"
    )
    assert _value(last, "feedback_concurrency_limit") <= 4
    assert _value(last, "feedback_requests_total", status="201") >= _value(
        last, "feedback_records_total", outcome="sent"
    )
    assert state.stored_count == len(rows)


def test_a_port_in_use_is_a_configuration_error(run_cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli.run(
            str(write_csv(tmp_path / "in.csv", make_rows(3))), "--metrics-port", str(port)
        )

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("feedback-pipeline: configuration error: --metrics-port: ")
    assert result.stderr.count("\n") == 1
    assert run_cli.server.state.posts_received == 0


class _Flow:
    limit, cap, api_cap, rate, ceiling = 2, 40.0, 40.0, 200.0, 64


class _Sending:
    flow, retries = _Flow(), 3


class _Draining:
    """A queue source whose drain waits (its words go on the progress line)."""

    def waiting(self) -> str:
        return "3 entries held by consumer w1, idle 12 s"


def test_the_alerts_metrics_say_ceilings_drain_waits_and_a_lost_lease() -> None:
    from prometheus_client import generate_latest

    from pipeline.observe.metrics import RunMetrics
    from pipeline.observe.monitor import Monitor
    from pipeline.observe.pulse import Pulse
    from pipeline.observe.summary import Summary

    summary = Summary("run", "r1")
    pulse = Pulse("r1", "w2", heartbeat_at=1.0, progress_at=1.0)
    metrics = RunMetrics(Monitor(summary, [_Draining()], sending=_Sending()), pulse)
    labels = {"run": "r1", "consumer": "w2"}

    before = _samples(generate_latest(metrics.registry).decode())
    summary.aborted = "lease lost: no renewal reached the ledger for 36.1 s (lease 15 s)"
    after = _samples(generate_latest(metrics.registry).decode())

    assert _value(before, "feedback_concurrency_limit") == 2
    assert _value(before, "feedback_concurrency_ceiling") == 64
    assert _value(before, "feedback_rate_limit") == 200
    assert _value(before, "feedback_rate_cap") == 40
    assert _value(before, "feedback_drain_waiting", **labels) == 1
    assert _value(before, "feedback_lease_lost", **labels) == 0
    assert _value(after, "feedback_lease_lost", **labels) == 1


def test_a_run_that_waits_for_nothing_says_0() -> None:
    from prometheus_client import generate_latest

    from pipeline.observe.metrics import RunMetrics
    from pipeline.observe.monitor import Monitor
    from pipeline.observe.pulse import Pulse
    from pipeline.observe.summary import Summary

    summary = Summary("run", "r1")
    summary.aborted = "authentication refused"
    metrics = RunMetrics(Monitor(summary), Pulse("r1", "w1"))
    shown = _samples(generate_latest(metrics.registry).decode())

    assert _value(shown, "feedback_drain_waiting", run="r1", consumer="w1") == 0
    assert _value(shown, "feedback_lease_lost", run="r1", consumer="w1") == 0
    assert _value(shown, "feedback_rate_limit") == 0  # a run that sends nothing: no --rate
    assert ("feedback_concurrency_ceiling", ()) not in shown
