"""The monitoring that ships (config/monitoring/), checked against a real Prometheus server:
it scrapes a following worker's ``--metrics-port``, loads the alert rules, and every query of
the Grafana dashboard returns data. A panel whose metric was renamed or never served fails
here, not on an on-call person's screen.

Prometheus is Debian's ``prometheus`` package (``.ci/run`` installs it): its own port, config
and data directory here, scraping every second.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exactly_once, make_rows, run_command, write_csv
from paths import ROOT
from redis_helpers import Stream, free_port, stream, unavailable

from pipeline.fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeServer, FakeState, Faults

__all__ = ["stream"]  # a fixture, used by name
MONITORING = ROOT / "config" / "monitoring"
#: Grafana's variables, as a dashboard would fill them: a rate window of several scrapes.
VARIABLES = {"$__rate_interval": "10s", "$job": "feedback-pipeline"}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def _query(base: str, expr: str) -> list[Any]:
    found = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert found["status"] == "success", found
    result: list[Any] = found["data"]["result"]
    return result


def _until(what: str, check: Any, seconds: float = 60) -> Any:
    """Ask again (bounded) until ``check()`` gives something; fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: nothing within {seconds} s")
        time.sleep(0.2)


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [(panel["title"], t["expr"]) for panel in board["panels"] for t in panel["targets"]]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """A Prometheus server of the test's own (config written by the test, rules loaded)."""
    binary = shutil.which("prometheus")
    if binary is None:
        unavailable("the prometheus binary (Debian's prometheus package)")
    assert binary is not None
    worker_port, port = free_port(), free_port()
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        "  - job_name: feedback-pipeline\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{worker_port}']}}]\n",
        encoding="utf-8",
    )
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}", worker_port, tmp_path
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_real_prometheus_scrapes_a_worker_and_every_panel_has_data(
    clean_env: None, stream: Stream, prometheus: tuple[str, int, Path]
) -> None:
    base, worker_port, tmp = prometheus
    rows = make_rows(120)
    write_csv(tmp / "rows.csv", rows)
    env = {**os.environ, "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID}
    env["TWILIO_AUTH_TOKEN"] = DEFAULT_AUTH_TOKEN
    with FakeServer(FakeState(faults=Faults(seed=3, latency_ms=5))) as api:
        enqueue = ["enqueue", str(tmp / "rows.csv"), "--to", stream.publish_url()]
        subprocess.run([sys.executable, "-m", "pipeline", *enqueue], env=env, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        worker = subprocess.Popen(
            [*run_command(api, stream.url("w1"), tmp / "ledger.sqlite3"),
             "--metrics-port", str(worker_port), "--metrics-address", "127.0.0.1",
             "--rate", "0", "--log-every", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _until("the worker scraped", lambda: _query(base, 'up{job="feedback-pipeline"} == 1'))
            _until(
                "every record sent",
                lambda: _query(base, 'feedback_records_total{outcome="sent"} == 120'),
            )
            rules = _get(f"{base}/api/v1/rules")["data"]["groups"][0]["rules"]
            empty = []
            for title, expr in dashboard_queries():
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                try:
                    _until(f"{title}: {expr}", lambda e=expr: _query(base, e), seconds=20)
                except pytest.fail.Exception:
                    empty.append(f"{title}: {expr}")
        finally:
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=60)
        assert_exactly_once(api, rows)

    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    assert len(rules) == 7
    assert all(rule["health"] == "ok" for rule in rules), rules
    assert worker.returncode == 0, out + err
