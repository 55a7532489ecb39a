"""``--report run.html``: one self-contained page about a run (no script, style sheet, font or
image from anywhere else; the charts are inline SVG made by :mod:`pipeline.observe.html.charts`).

It shows the counts, records/s and the concurrency limit over time, the HTTP statuses over
time, the latency percentiles and the failure reasons; the JSON summary is embedded too
(``<script type="application/json" id="summary">``), so a program can read the same page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from html import escape

from pipeline.observe.html.charts import Series, bar_chart, line_chart
from pipeline.observe.html.sections import (
    RunFacts,
    advice_section,
    facts_section,
    problems_section,
    reconciliation_section,
)
from pipeline.observe.summary import Summary
from pipeline.observe.timeline import Timeline

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 800px; }
pre { background: #f6f6f6; padding: 8px; white-space: pre-wrap; }
table { border-collapse: collapse; margin: 8px 0 20px; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
td.reason, th.reason { text-align: left; }
.aborted { color: #b00; font-weight: bold; }
svg.chart { display: block; margin: 12px 0 24px; }
"""


def is_html(path: str) -> bool:
    return path.lower().endswith((".html", ".htm"))


def _rates(timeline: Timeline) -> Series:
    points = []
    for before, after in zip(timeline.points, timeline.points[1:], strict=False):
        span = after.t - before.t
        if span > 0:
            settled = (after.sent + after.failed) - (before.sent + before.failed)
            points.append((after.t, settled / span))
    return Series("records/s", points)


def _retries(timeline: Timeline) -> Series:
    points = [
        (after.t, float(after.retries - before.retries))
        for before, after in zip(timeline.points, timeline.points[1:], strict=False)
    ]
    return Series("retries", points)


def _charts(timeline: Timeline, summary: Summary) -> list[str]:
    points = timeline.points
    start = datetime.fromisoformat(summary.started_at)
    limits = [(p.t, float(p.limit)) for p in points if p.limit is not None]
    mine = [(p.t, summary.rate_limit) for p in points] if summary.rate_limit else []
    caps = [(p.t, p.api_cap) for p in points if p.api_cap]
    charts = [
        line_chart(
            "Records settled", [_rates(timeline)], "records/s", "chart-rate", start=start, clip=True
        ),
        line_chart(
            "Concurrency limit", [Series("concurrency limit", limits)], "requests in flight",
            "chart-limit", start=start,
        ),
        line_chart(
            "Rate limits",
            [Series("your --rate", mine), Series("the API's cap (found by its 429s)", caps)],
            "requests/s",
            "chart-rate-cap",
            start=start,
        ),
    ]  # fmt: skip
    names = {"none": "no answer (reset, timeout, refused)"}
    statuses = [
        Series(names.get(s, f"HTTP {s}"), [(p.t, p.statuses[s]) for p in points])
        for s in timeline.statuses()
    ]
    unit = f"answers per {timeline.interval:g} s"
    charts.append(
        line_chart("HTTP statuses over time", statuses, unit, "chart-status", start=start)
    )
    charts.append(
        line_chart(
            "Retries over time", [_retries(timeline)], unit.replace("answers", "retries"),
            "chart-retries", start=start,
        )
    )  # fmt: skip
    percentiles = timeline.percentiles()
    charts.append(bar_chart("Request latency percentiles", percentiles, "ms", "chart-latency"))
    return charts


def render(
    summary: Summary,
    timeline: Timeline,
    facts: RunFacts | None = None,
    problems: Sequence[tuple[str, str]] = (),
) -> str:
    data = summary.as_dict()
    counts = ["read", "sent", "skipped", "duplicate", "invalid", "failed", "unknown"]
    counts.append("stopped_records")
    head = "".join(f"<th>{name.removesuffix('_records')}</th>" for name in counts)
    cells = "".join(f"<td>{data[name]}</td>" for name in counts)
    reasons = (
        "".join(
            f'<tr><td>{count}</td><td class="reason">{escape(reason)}</td></tr>'
            for reason, count in summary.top_reasons(20)
        )
        or '<tr><td class="reason" colspan="2">No failures.</td></tr>'
    )
    ledger = facts.ledger if facts is not None else "LEDGER"
    aborted = (
        f'<p class="aborted">aborted: {escape(summary.aborted)}</p>' if summary.aborted else ""
    )
    embedded = json.dumps(data, indent=1).replace("</", "<\\/")
    title = f"feedback-pipeline {summary.command} {summary.run_id}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{escape(title)}</h1>
<p>started {escape(summary.started_at)}, {summary.duration_s:.1f} s, exit code
{summary.exit_code}, {data["records_per_second"]} records/s, {summary.attempts} requests
({summary.retries} retries)</p>{aborted}
<table id="counts"><tr>{head}</tr><tr>{cells}</tr></table>
{advice_section(summary)}
{facts_section(facts, summary.assistants)}
{"".join(_charts(timeline, summary))}
<h2>Failure reasons</h2>
<table id="reasons"><tr><th>count</th><th class="reason">reason</th></tr>{reasons}</table>
{problems_section(problems, summary, ledger)}
{reconciliation_section(summary)}
<script type="application/json" id="summary">{embedded}</script>
</body></html>
"""


def write_html(
    path: str,
    summary: Summary,
    timeline: Timeline,
    facts: RunFacts | None = None,
    problems: Sequence[tuple[str, str]] = (),
) -> None:
    """Written beside itself, then renamed: a reader never sees half a page."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render(summary, timeline, facts, problems))
    os.replace(tmp, path)
