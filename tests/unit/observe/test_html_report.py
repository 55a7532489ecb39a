"""--report run.html: one self-contained page, checked in a real headless Chromium (the
system's package): the browser's DOM holds the four charts, and a screenshot shows them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import Cli, make_rows, write_csv
from PIL import Image

from pipeline.fake import DEFAULT_AUTH_TOKEN
from pipeline.observe.html.charts import PALETTE
from pipeline.observe.monitor import Monitor
from pipeline.observe.summary import Summary
from pipeline.observe.timeline import MAX_POINTS, Timeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed (apt-get install chromium); CI installs it",
)


def _report(run_cli: Cli, tmp_path: Path) -> Path:
    state = run_cli.server.state
    state.known_assistants = {"aia_asst_test"}
    state.update_faults({"fail_rate": 0.1, "latency_ms": 5})
    rows = make_rows(300) + make_rows(3, assistant="aia_asst_gone", prefix="g")
    rows.append({**make_rows(1, prefix="bad")[0], "score": "3"})
    page = tmp_path / "run.html"
    result = run_cli.run(str(write_csv(tmp_path / "in.csv", rows)), "--report", str(page))
    assert result.exit_code == 1, result.output
    return page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_is_self_contained_and_embeds_the_summary(run_cli: Cli, tmp_path: Path) -> None:
    html = _report(run_cli, tmp_path).read_text(encoding="utf-8")

    parser = _Tags()
    parser.feed(html)
    for tag, attrs in parser.tags:  # nothing is loaded from anywhere
        assert tag not in ("img", "link", "iframe", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
        assert "href" not in attrs, (tag, attrs)
    assert "url(" not in html
    assert "@import" not in html
    # Besides the SVG namespace, only the --base-url the run was given, as text (what was run).
    urls = set(re.findall(r"https?://[^\s\"'<]+", html)) - {run_cli.server.url}
    assert urls == {"http://www.w3.org/2000/svg"}
    assert [a["id"] for t, a in parser.tags if t == "svg"] == [
        "chart-rate",
        "chart-limit",
        "chart-rate-cap",
        "chart-status",
        "chart-retries",
        "chart-latency",
    ]
    summary = json.loads(re.findall(r'id="summary">(.*?)</script>', html, re.S)[0])
    assert summary["sent"] == 300
    assert summary["failed"] == 3
    assert summary["invalid"] == 1
    assert "invalid: score" in html
    assert "HTTP 404" in html
    assert DEFAULT_AUTH_TOKEN not in html


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None, "Chromium is needed in CI (apt-get install chromium)"
    profile = tmp_path / "profile"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )


@needs_chromium
def test_chromium_renders_the_charts(run_cli: Cli, tmp_path: Path) -> None:
    page = _report(run_cli, tmp_path)
    shot = tmp_path / "shot.png"

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode()
    _chromium(tmp_path, "--window-size=840,3200", f"--screenshot={shot}", page.as_uri())

    # The browser's own DOM: every chart with its lines (200, 201, 503 and 404 answers).
    assert dom.count("<svg") == 6
    rate = re.search(r'<svg id="chart-rate".*?</svg>', dom, re.S)
    assert rate
    assert 'class="series"' in rate[0]
    status = re.search(r'<svg id="chart-status".*?</svg>', dom, re.S)
    assert status
    assert {"HTTP 201", "HTTP 503", "HTTP 404"} <= set(
        re.findall(r'data-name="([^"]+)"', status[0])
    )
    assert dom.count('class="bar"') == 5  # p50, p90, p95, p99, max
    # The screenshot: the charts' colours are painted, in the places the charts take.
    image = Image.open(shot).convert("RGB")
    assert image.size == (840, 3200)
    painted = {colour: count for count, colour in image.getcolors(1 << 24) or []}
    # The first three series' colours (rate, limit and 201s; 404s; 503s) are painted.
    for colour in PALETTE[:3]:
        assert painted.get(_rgb(colour), 0) > 50, (colour, painted.get(_rgb(colour)))
    data, stride = image.tobytes(), image.width * 3
    blue = bytes(_rgb(PALETTE[0]))
    blue_rows = [y for y in range(image.height) if _has(data[y * stride : (y + 1) * stride], blue)]
    assert len(blue_rows) > 120  # several charts' worth of height, not a legend swatch (~10)


def _rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def _has(row: bytes, pixel: bytes) -> bool:
    return any(row[i : i + 3] == pixel for i in range(0, len(row), 3))


def test_the_timeline_stays_bounded_and_keeps_the_counts() -> None:
    now = [0.0]
    summary = Summary("run", "r")
    timeline = Timeline(Monitor(summary, clock=lambda: now[0]), interval=1.0)
    for step in range(MAX_POINTS * 3):
        now[0] = float(step)
        summary.sent = step
        timeline.on_response(201, 0.01 * (step % 100 + 1))
        timeline.sample()

    assert len(timeline.points) <= MAX_POINTS
    assert timeline.interval > 1.0
    assert timeline.points[-1].sent == MAX_POINTS * 3 - 1  # the last point is never dropped
    assert sum(p.statuses["201"] for p in timeline.points) == MAX_POINTS * 3
    percentiles = dict(timeline.percentiles())
    assert percentiles["p50"] == pytest.approx(505, rel=0.05)
    assert percentiles["max"] == pytest.approx(1000)


@needs_chromium
def test_the_page_an_on_call_person_opens_first(run_cli: Cli, tmp_path: Path) -> None:
    """Issue 23: what was run, the first problem rows with the command that lists them all,
    reconciliation, the advice, one axis per kind of limit, clock times on the axes, and a
    legend clear of the title; in the browser's DOM and a screenshot."""
    run_cli.server.state.update_faults({"reset_rate": 0.05, "seed": 3})
    page = _report(run_cli, tmp_path)
    shot = tmp_path / "shot.png"

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout.decode()
    _chromium(tmp_path, "--window-size=900,3200", f"--screenshot={shot}", page.as_uri())

    run = re.search(r'<div id="run">.*?</div>', dom, re.S)
    assert run
    assert str(tmp_path / "in.csv") in run[0]
    assert "Sent to the assistants: aia_asst_test, aia_asst_gone" in run[0]
    settings = dict(re.findall(r'<td class="reason">(\w+)</td><td class="reason">[^<]*</td>'
                               r'<td class="reason">([^<]+)</td>', run[0]))  # fmt: skip
    assert settings["base_url"] == "--base-url"
    assert settings["rate"] == "FEEDBACK_PIPELINE_RATE"
    assert settings["concurrency"] == "default"
    problems = re.search(r'<table id="problems">.*?</table>(.*?)<h2>', dom, re.S)
    assert problems
    assert "invalid: score" in problems[0]
    assert "HTTP 404" in problems[0]
    assert f"feedback-pipeline failures --ledger {run_cli.ledger}" in problems[1]
    assert re.search(r'<table id="reconciliation">.*this run.s unknown outcomes', dom, re.S)
    advice = re.search(r'<pre id="advice">(.*?)</pre>', dom, re.S)
    assert advice
    assert "rate limit 100000/s (--rate), API rate cap" in advice[1]
    # Concurrency and rate on axes of their own; clock times on the x axes.
    limit = re.search(r'<svg id="chart-limit".*?</svg>', dom, re.S)
    assert limit
    assert limit[0].count('class="series"') == 1
    assert 'id="chart-rate-cap"' in dom
    assert 'id="chart-retries"' in dom
    assert re.search(r"\d\d:\d\d:\d\d · 0 s", dom)
    # Legends sit below the plot, under the axis labels: never on the title's line.
    for y in re.findall(r'<rect class="legend" x="[\d.]+" y="([\d.]+)"', dom):
        assert float(y) > 200
    with Image.open(shot) as image:
        assert image.size == (900, 3200)
        assert shot.stat().st_size > 50_000


def test_an_empty_failure_table_says_so_and_a_spike_is_clipped() -> None:
    from pipeline.observe.html.charts import Series, line_chart
    from pipeline.observe.html.report import render

    now = [0.0]
    summary = Summary("run", "r")
    page = render(summary, Timeline(Monitor(summary, clock=lambda: now[0])))
    steady = [(float(t), 50.0) for t in range(30)] + [(30.0, 6000.0)]
    chart = line_chart(
        "Records settled", [Series("records/s", steady)], "records/s", "c", clip=True
    )

    assert "No failures." in page
    assert "No invalid, failed or unknown records." in page
    # An unknown outcome settled since (summary.unknown back to 0) is no problem left.
    from pipeline.observe.html.sections import problems_section

    settled = problems_section([("a.csv:2", "unknown (may be stored; ...)")], summary, "l")
    assert "No invalid, failed or unknown records." in settled
    assert "peaks up to 6k cut at the top" in chart
    assert ">200</text>" in chart  # the axis fits the steady pace (50/s), not the spike
