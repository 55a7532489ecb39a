"""Prometheus metrics of one run, with prometheus-client (never a hand-written exposition).

Each run has its own :class:`CollectorRegistry` (no global state: two runs in one process, as
in the tests, never share a counter). What the summary and the delivery already count is read
when scraped (a collector over :meth:`Monitor.snapshot`); what happens per request (status,
latency) is observed as it happens, from :class:`pipeline.observe.monitor.ObservedClient`.

``--metrics-port N`` serves them while the run goes (for a worker following a queue);
``--metrics-textfile PATH`` writes them when it ends, aborted or not, atomically (the file
is written beside itself and renamed), for node_exporter's textfile collector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError
from pipeline.observe.monitor import Monitor
from pipeline.observe.pulse import Pulse

#: Seconds: from a fast loopback answer to the default 30 s timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OUTCOMES = ("sent", "failed", "invalid", "skipped", "duplicate", "unknown")


class _RunCollector(Collector):
    """The run's counts and flow-control state, read from the monitor at each scrape."""

    def __init__(self, monitor: Monitor, pulse: Pulse | None = None) -> None:
        self._monitor = monitor
        self._pulse = pulse

    def collect(self) -> Iterator[Metric]:
        snap = self._monitor.snapshot()
        read = CounterMetricFamily("feedback_records_read", "Records read from the sources.")
        read.add_metric([], snap.read)
        yield read
        outcomes = CounterMetricFamily(
            "feedback_records", "Records by outcome so far.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            outcomes.add_metric([outcome], getattr(snap, outcome))
        yield outcomes
        retries = CounterMetricFamily("feedback_retries", "Requests that were retries.")
        retries.add_metric([], snap.retries)
        yield retries
        if snap.limit is not None:
            yield GaugeMetricFamily(
                "feedback_concurrency_limit",
                "The adaptive concurrency limit: requests in flight at most, now.",
                value=snap.limit,
            )
            # The ceilings the limits move under: an alert compares the limit with them.
            yield GaugeMetricFamily(
                "feedback_concurrency_ceiling",
                "--concurrency: the most the adaptive concurrency limit may reach.",
                value=snap.ceiling or 0,
            )
        yield GaugeMetricFamily(
            "feedback_rate_limit",
            "--rate: the user's fixed request-rate limit in requests per second (0: none).",
            value=snap.rate_limit or 0.0,
        )
        yield GaugeMetricFamily(
            "feedback_rate_cap",
            "The adaptive request-rate cap in requests per second (0: none).",
            value=snap.rate_cap or 0.0,
        )
        if snap.input is not None:
            yield GaugeMetricFamily(
                "feedback_input_bytes_read", "Bytes of the input files read.", value=snap.input[0]
            )
            yield GaugeMetricFamily(
                "feedback_input_bytes", "Bytes of the input files in all.", value=snap.input[1]
            )
        if self._pulse is not None:
            yield from _pulse_metrics(self._pulse, snap.waiting, self._monitor.summary.aborted)


def _pulse_metrics(pulse: Pulse, waiting: str | None, aborted: str | None) -> Iterator[Metric]:
    """Which worker this is (``run``, ``consumer`` labels: many workers' series side by side),
    and its pulse: a dead worker's heartbeat stops, a stuck one's last progress ages, a queue
    that falls behind shows its lag."""
    labels = ["run", "consumer"]
    values = [pulse.run_id, pulse.consumer]
    info = GaugeMetricFamily("feedback_run_info", "This worker: its run id and consumer.",
                             labels=labels)  # fmt: skip
    info.add_metric(values, 1)
    yield info
    gauges = (
        ("feedback_heartbeat_timestamp_seconds", "When the run was last alive (epoch s).",
         pulse.heartbeat_at),
        ("feedback_last_progress_timestamp_seconds", "When a record last settled (epoch s).",
         pulse.progress_at),
        ("feedback_queue_backlog", "Queue entries not handed out yet (the group's lag).",
         pulse.backlog),
        ("feedback_queue_pending", "Queue entries handed out and not acked.", pulse.pending),
        # 1 while a --drain run waits for something it names on its progress line (another
        # consumer's entries, uncertain records): the alert on a drain that does not end.
        ("feedback_drain_waiting", "1 while a draining run waits (its progress line says for "
         "what), else 0.", 1 if waiting else 0),
        # A lost lease ends the run (exit 3): the textfile, and a scrape in its last moments,
        # still say why; after that the target is down, which the worker-gone alert hears.
        ("feedback_lease_lost", "1 once the run lost its lease on the shared ledger, else 0.",
         1 if aborted and aborted.startswith("lease lost") else 0),
    )  # fmt: skip
    for name, help_text, value in gauges:
        if value is not None:
            gauge = GaugeMetricFamily(name, help_text, labels=labels)
            gauge.add_metric(values, value)
            yield gauge


class RunMetrics:
    def __init__(self, monitor: Monitor, pulse: Pulse | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_RunCollector(monitor, pulse))
        self._requests = Counter(
            "feedback_requests",
            "POST attempts by HTTP status ('none': no answer, a transport error).",
            ["status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "feedback_request_duration_seconds",
            "Seconds one POST attempt took, answer read.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def on_response(self, status: int | None, seconds: float) -> None:
        self._requests.labels(str(status) if status is not None else "none").inc()
        self._latency.observe(seconds)

    def serve(self, port: int, origin: str = "--metrics-port", address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``address`` (every interface by default) at ``port`` until
        :meth:`close`."""
        try:
            self._server, self._thread = start_http_server(
                port, addr=address, registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(
                f"configuration error: {origin}: cannot listen on {address} port {port}: "
                f"{exc.strerror or exc}"
            ) from None

    def write_textfile(self, path: str) -> None:
        write_to_textfile(path, self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
