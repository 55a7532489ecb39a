"""The HTML report's sections about the run itself, for the on-call person who opens it
first: what was run (sources, base URL, ledger, every setting with where it came from), the
first problem rows (with the command that lists them all), what reconciliation settled, and
what the run advises for next time. Charts are :mod:`pipeline.observe.html.charts`'."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from pipeline.config import Settings
from pipeline.observe.summary import Summary
from pipeline.urls import mask_url

#: Settings shown as URLs: their passwords masked.
_URLS = ("ledger", "base_url", "rate_scope")


@dataclass(frozen=True)
class RunFacts:
    """What a run was told: its sources and every setting, with where each came from."""

    sources: Sequence[str]
    settings: Sequence[tuple[str, str, str]]  # (name, value, origin)
    ledger: str

    @classmethod
    def of(cls, settings: Settings, sources: Sequence[object]) -> RunFacts:
        rows = []
        for name in Settings.model_fields:
            value = getattr(settings, name)
            shown = mask_url(value) if name in _URLS and isinstance(value, str) else value
            rows.append((name, "" if shown is None else str(shown), settings.source_of(name)))
        names = [mask_url(str(getattr(s, "name", s))) for s in sources]
        return cls(names, rows, mask_url(settings.ledger))


def facts_section(facts: RunFacts | None, assistants: Sequence[str] = ()) -> str:
    if facts is None:
        return ""
    sources = "".join(f"<li>{escape(s)}</li>" for s in facts.sources) or "<li>(the ledger)</li>"
    to = ", ".join(escape(a) for a in assistants) or "none"
    rows = "".join(
        f'<tr><td class="reason">{escape(n)}</td><td class="reason">{escape(v)}</td>'
        f'<td class="reason">{escape(o)}</td></tr>'
        for n, v, o in facts.settings
    )
    return (
        '<h2>What was run</h2><div id="run"><p>Sources:</p><ul id="sources">'
        f'{sources}</ul><p id="assistants">Sent to the assistants: {to}</p>'
        "<details><summary>Every setting and where it came from</summary>"
        '<table id="settings"><tr><th class="reason">setting</th><th class="reason">value</th>'
        f'<th class="reason">from</th></tr>{rows}</table></details></div>'
    )


def problems_section(first: Sequence[tuple[str, str]], summary: Summary, ledger: str) -> str:
    more = summary.invalid + summary.failed + summary.unknown
    if not summary.unknown:  # every unknown outcome was settled since: no problem left
        first = [(loc, msg) for loc, msg in first if not msg.startswith("unknown")]
    if not first:
        body = '<tr><td class="reason" colspan="2">No invalid, failed or unknown records.</td></tr>'
    else:
        body = "".join(
            f'<tr><td class="reason">{escape(loc)}</td><td class="reason">{escape(msg)}</td></tr>'
            for loc, msg in first
        )
    pointer = (
        f"<p>The first {len(first)} problems; all {more} invalid, failed and unknown records: "
        f"<code>feedback-pipeline failures --ledger {escape(ledger)} --output fix.csv</code></p>"
        if first
        else ""
    )
    return (
        '<h2>Problem records</h2><table id="problems"><tr><th class="reason">'
        f'where</th><th class="reason">what</th></tr>{body}</table>{pointer}'
    )


def reconciliation_section(summary: Summary) -> str:
    rows = [
        ("uncertain records of earlier runs", summary.reconciled_found, summary.reconciled_missing),
        (
            "this run's unknown outcomes, at its end",
            summary.reconciled_own_found,
            summary.reconciled_own_missing,
        ),
    ]
    body = "".join(
        f'<tr><td class="reason">{what}</td><td>{found}</td><td>{missing}</td></tr>'
        for what, found, missing in rows
    )
    return (
        '<h2>Reconciliation</h2><table id="reconciliation"><tr><th class="reason">checked'
        "</th><th>stored at the API (now sent)</th><th>not stored (now failed)</th></tr>"
        f"{body}</table>"
    )


def advice_section(summary: Summary) -> str:
    lines = "\n".join(escape(line.strip()) for line in summary.details(reasons=False))
    return f'<h2>What the run says (and next time)</h2><pre id="advice">{lines}</pre>'
