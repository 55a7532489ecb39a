"""Small inline SVG charts for the HTML report: no script, no external asset, any browser.

Every text that goes into the markup is escaped; numbers are formatted by Python. Two kinds:
a line chart of one or more series over the run's time, and a horizontal bar chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT = 760, 260
# The legend has a row of its own under the x axis: beside the title it overlapped it.
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 34, 56
#: A peak this many times the 95th percentile is clipped (drawn at the top, its value said):
#: one burst of bookkeeping at a run's end (reconciliation) flattened the whole chart.
CLIP_FACTOR = 3.0
#: Colour per series, in order (distinct also for colour-blind readers: Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (seconds since the start, value)


def _nice_max(value: float) -> float:
    """A round upper bound for an axis (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 5.0, 10.0) if step * power >= value)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"


def line_chart(
    title: str,
    series: Sequence[Series],
    unit: str,
    chart_id: str,
    *,
    start: datetime | None = None,
    clip: bool = False,
) -> str:
    """One SVG with a line per series, a y axis from 0, the x axis in seconds (and clock
    times from ``start``, UTC); ``clip``: peaks far above the rest are cut at the top."""
    points = [p for s in series for p in s.points]
    x_max = max((x for x, _ in points), default=0.0) or 1.0
    top = max((y for _, y in points), default=0.0)
    clipped = _clip_at([y for _, y in points]) if clip else None
    y_max = _nice_max(clipped if clipped is not None else top)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def xy(x: float, y: float) -> str:
        y = min(y, y_max)
        return f"{_LEFT + x / x_max * plot_w:.1f},{_TOP + plot_h - y / y_max * plot_h:.1f}"

    parts = [_open(f"{title} ({unit})", chart_id), _axes(plot_w, plot_h)]
    if clipped is not None:
        parts.append(
            f'<text class="clipped" x="{WIDTH - _RIGHT}" y="16" text-anchor="end">'
            f"peaks up to {_number(top)} cut at the top</text>"
        )
    for i in range(5):  # horizontal grid lines with their values
        value = y_max * i / 4
        y = _TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
            f'stroke="#ddd"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_number(value)}</text>"
        )
    for i in range(5):
        x = _LEFT + plot_w * i / 4
        anchor = "end" if i == 4 else "middle"
        seconds = x_max * i / 4
        clock = ""
        if start is not None:
            clock = (start + timedelta(seconds=seconds)).strftime("%H:%M:%S") + " · "
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="{anchor}">'
            f"{clock}{_number(seconds)} s</text>"
        )
    for index, line in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(xy(x, y) for x, y in line.points)
        if line.points:
            parts.append(
                f'<polyline class="series" data-name="{escape(line.name)}" fill="none" '
                f'stroke="{colour}" stroke-width="2" points="{coords}"/>'
            )
        parts.append(_legend(index, line.name, colour))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Sequence[tuple[str, float]], unit: str, chart_id: str) -> str:
    """Horizontal bars, one per (label, value)."""
    height = _TOP + 26 * max(1, len(bars)) + 10
    top = max((v for _, v in bars), default=0.0) or 1.0
    plot_w = WIDTH - 140 - _RIGHT - 90
    parts = [_open(f"{title} ({unit})", chart_id, height)]
    for i, (label, value) in enumerate(bars):
        y = _TOP + 26 * i
        width = max(1.0, value / top * plot_w)
        parts.append(
            f'<text x="132" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar" x="140" y="{y}" width="{width:.1f}" height="20" '
            f'fill="{PALETTE[0]}"/><text x="{140 + width + 6:.1f}" y="{y + 15}">'
            f"{escape(f'{value:.1f} {unit}')}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _open(title: str, chart_id: str, height: int = HEIGHT) -> str:
    return (
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11" fill="#333">'
        f'<text x="{_LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'
    )


def _axes(plot_w: int, plot_h: int) -> str:
    return (
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#333"/>'
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" '
        'stroke="#333"/>'
    )


def _legend(index: int, name: str, colour: str) -> str:
    """Left to right under the x axis, clear of the title and the plot."""
    x, y = _LEFT + 170 * index, HEIGHT - 18
    return (
        f'<rect class="legend" x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{x + 14}" y="{y + 9}">{escape(name)}</text>'
    )


def _clip_at(values: Sequence[float]) -> float | None:
    """Where to cut the y axis: above the 95th percentile times :data:`CLIP_FACTOR`, when a
    peak goes beyond it; None when nothing stands out."""
    ordered = sorted(v for v in values if v > 0)
    if len(ordered) < 10:
        return None
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    limit = p95 * CLIP_FACTOR
    return limit if ordered[-1] > limit else None
