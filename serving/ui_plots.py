"""Plots of the topic browser as inline SVG, drawn on the server: no JavaScript library, no CDN, nothing fetched.

Each function returns one ``<svg>`` element as a string. Axes are linear unless a function says otherwise; every
label passes through :func:`html.escape`. Points may carry ``data-*`` attributes, which the browser's small script
(``ui_static/ui.js``) reads to show a cover thumbnail on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

# 20 colours that stay apart on white (Tableau 20 reordered: the dark ones first); topic t gets PALETTE[t % 20]
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 14, 40


def topic_colour(topic_id: int) -> str:
    return PALETTE[int(topic_id) % len(PALETTE)] if topic_id >= 0 else "#444444"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step - 1e-9) * step
    ticks, value = [], start
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


@dataclass
class Axes:
    """A linear (or log10) mapping of data to a plot box of ``width`` x ``height`` pixels."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int = 640
    height: int = 360
    x_log: bool = False
    parts: list[str] = field(default_factory=list)

    def _x_value(self, x: float) -> float:
        return math.log10(max(x, 1e-12)) if self.x_log else x

    def px(self, x: float) -> float:
        low, high = (self._x_value(v) for v in self.x_range)
        span = high - low or 1.0
        return MARGIN_LEFT + (self._x_value(x) - low) / span * (self.width - MARGIN_LEFT - MARGIN_RIGHT)

    def py(self, y: float) -> float:
        low, high = self.y_range
        span = high - low or 1.0
        return self.height - MARGIN_BOTTOM - (y - low) / span * (self.height - MARGIN_TOP - MARGIN_BOTTOM)

    def frame(self, x_label: str, y_label: str, x_ticks: Sequence[float] | None = None, y_ticks: Sequence[float] | None = None) -> None:
        left, right = MARGIN_LEFT, self.width - MARGIN_RIGHT
        top, bottom = MARGIN_TOP, self.height - MARGIN_BOTTOM
        self.parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="plot-area"/>')
        if x_ticks is None:
            if self.x_log:
                low, high = (math.floor(self._x_value(v)) for v in self.x_range)
                x_ticks = [10.0**p for p in range(low, high + 2) if self.x_range[0] <= 10.0**p <= self.x_range[1]]
            else:
                x_ticks = nice_ticks(*self.x_range)
        for tick in x_ticks:
            x = self.px(tick)
            self.parts.append(
                f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" class="tick"/>'
                f'<text x="{x:.1f}" y="{bottom + 16}" class="tick-label" text-anchor="middle">{escape(_fmt(tick))}</text>'
            )
        for tick in nice_ticks(*self.y_range) if y_ticks is None else y_ticks:
            y = self.py(tick)
            self.parts.append(
                f'<line x1="{left - 4}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick-label" text-anchor="end">{escape(_fmt(tick))}</text>'
            )
        self.parts.append(
            f'<text x="{(left + right) / 2:.0f}" y="{self.height - 6}" class="axis-label" text-anchor="middle">{escape(x_label)}</text>'
            f'<text transform="translate(14 {(top + bottom) / 2:.0f}) rotate(-90)" class="axis-label" text-anchor="middle">{escape(y_label)}</text>'
        )

    def hline(self, y: float, label: str, css: str = "threshold") -> None:
        py = self.py(y)
        self.parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{py:.1f}" x2="{self.width - MARGIN_RIGHT}" y2="{py:.1f}" class="{css}"/>'
            f'<text x="{self.width - MARGIN_RIGHT - 4}" y="{py - 4:.1f}" class="{css}-label" text-anchor="end">{escape(label)}</text>'
        )

    def vline(self, x: float, label: str, css: str = "threshold") -> None:
        px = self.px(x)
        self.parts.append(
            f'<line x1="{px:.1f}" y1="{MARGIN_TOP}" x2="{px:.1f}" y2="{self.height - MARGIN_BOTTOM}" class="{css}"/>'
            f'<text x="{px + 4:.1f}" y="{MARGIN_TOP + 12}" class="{css}-label">{escape(label)}</text>'
        )

    def svg(self, css_class: str, title: str) -> str:
        return (
            f'<svg class="plot {css_class}" viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
            f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(self.parts)}</svg>'
        )


@dataclass
class Point:
    x: float
    y: float
    colour: str
    label: str = ""  # tooltip text (SVG <title>)
    css: str = ""
    radius: float = 3.5
    data: dict[str, str] = field(default_factory=dict)  # data-* attributes (e.g. {"v": video id} for the hover thumbnail)


def _circle(axes: Axes, point: Point) -> str:
    data = "".join(f' data-{k}="{escape(str(v))}"' for k, v in point.data.items())
    css = f' class="{point.css}"' if point.css else ""
    title = f"<title>{escape(point.label)}</title>" if point.label else ""
    return f'<circle cx="{axes.px(point.x):.1f}" cy="{axes.py(point.y):.1f}" r="{point.radius}" fill="{point.colour}"{css}{data}>{title}</circle>'


def _padded(values: Sequence[float], log: bool = False) -> tuple[float, float]:
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if log:
        return max(low, 1.0) / 1.3, max(high, 1.0) * 1.3
    pad = (high - low) * 0.05 or 1.0
    return low - pad, high + pad


def scatter(
    points: Sequence[Point],
    x_label: str,
    y_label: str,
    title: str,
    css_class: str = "scatter",
    x_log: bool = False,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    hlines: Sequence[tuple[float, str]] = (),
    vlines: Sequence[tuple[float, str]] = (),
    width: int = 640,
    height: int = 360,
) -> str:
    """Points on two axes, with labelled threshold lines (``hlines`` / ``vlines``: (value, label))."""
    xs = [p.x for p in points] + [v for v, _ in vlines]
    ys = [p.y for p in points] + [v for v, _ in hlines]
    axes = Axes(x_range or _padded(xs, x_log), y_range or _padded(ys), width, height, x_log)
    axes.frame(x_label, y_label)
    for value, label in hlines:
        axes.hline(value, label)
    for value, label in vlines:
        axes.vline(value, label)
    axes.parts.extend(_circle(axes, p) for p in points)
    return axes.svg(css_class, title)


def video_map(points: Sequence[Point], title: str, width: int = 760, height: int = 560) -> str:
    """The 2-D map of videos: points without axes' units (the projection's coordinates mean nothing on their own)."""
    axes = Axes(_padded([p.x for p in points]), _padded([p.y for p in points]), width, height)
    axes.parts.append(
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{width - MARGIN_LEFT - MARGIN_RIGHT}" '
        f'height="{height - MARGIN_TOP - MARGIN_BOTTOM}" class="plot-area"/>'
    )
    axes.parts.extend(_circle(axes, p) for p in points)
    axes.parts.append(
        f'<text x="{width / 2:.0f}" y="{height - 12}" class="axis-label" text-anchor="middle">'
        "first discriminant direction of the topics (hover a point for its cover)</text>"
    )
    return axes.svg("video-map", title)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    x_label: str,
    y_label: str,
    title: str,
    css_class: str = "bars",
    colours: Sequence[str] | None = None,
    links: Sequence[str | None] | None = None,
    width: int = 760,
    height: int = 300,
    hlines: Sequence[tuple[float, str]] = (),
) -> str:
    """Vertical bars, one per label, in the given order; a label is drawn under every bar when they fit."""
    n = max(len(values), 1)
    top = max(list(values) + [v for v, _ in hlines] + [0.0]) * 1.08 or 1.0
    axes = Axes((0, n), (0, top), width, height)
    axes.frame(x_label, y_label, x_ticks=[])
    for value, label in hlines:
        axes.hline(value, label)
    slot = (width - MARGIN_LEFT - MARGIN_RIGHT) / n
    show_labels = slot >= 14
    for i, (label, value) in enumerate(zip(labels, values)):
        x, y = axes.px(i) + slot * 0.1, axes.py(value)
        colour = colours[i] if colours else PALETTE[0]
        bar = (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{axes.py(0) - y:.1f}" fill="{colour}">'
            f"<title>{escape(label)}: {escape(_fmt(value))}</title></rect>"
        )
        link = links[i] if links else None
        axes.parts.append(f'<a href="{escape(link)}">{bar}</a>' if link else bar)
        if show_labels:
            axes.parts.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{height - MARGIN_BOTTOM + 14}" class="tick-label" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return axes.svg(css_class, title)


def boxes(
    groups: Sequence[tuple[str, Sequence[float]]],
    x_label: str,
    y_label: str,
    title: str,
    hlines: Sequence[tuple[float, str]] = (),
    links: Sequence[str] | None = None,
    width: int = 760,
    height: int = 320,
) -> str:
    """One box per group (quartiles, whiskers at the 5th/95th percentiles, the values as dots), e.g. CTRs per topic."""
    n = max(len(groups), 1)
    values = [v for _, vs in groups for v in vs] + [v for v, _ in hlines]
    axes = Axes((0, n), (0, (max(values) if values else 1.0) * 1.08 or 1.0), width, height)
    axes.frame(x_label, y_label, x_ticks=[])
    for value, label in hlines:
        axes.hline(value, label)
    slot = (width - MARGIN_LEFT - MARGIN_RIGHT) / n
    for i, (label, group) in enumerate(groups):
        centre = axes.px(i) + slot / 2
        colour = PALETTE[i % len(PALETTE)]
        ordered = sorted(group)
        parts = []
        if ordered:
            q = [_quantile(ordered, f) for f in (0.05, 0.25, 0.5, 0.75, 0.95)]
            half = slot * 0.3
            parts.append(
                f'<line x1="{centre:.1f}" y1="{axes.py(q[0]):.1f}" x2="{centre:.1f}" y2="{axes.py(q[4]):.1f}" class="whisker"/>'
                f'<rect x="{centre - half:.1f}" y="{axes.py(q[3]):.1f}" width="{2 * half:.1f}" '
                f'height="{max(axes.py(q[1]) - axes.py(q[3]), 1):.1f}" fill="{colour}" class="box">'
                f"<title>{escape(label)}: {len(ordered)} videos, median {q[2]:.3f}</title></rect>"
                f'<line x1="{centre - half:.1f}" y1="{axes.py(q[2]):.1f}" x2="{centre + half:.1f}" y2="{axes.py(q[2]):.1f}" class="median"/>'
            )
            step = max(len(ordered) // 60, 1)  # at most ~60 dots per box
            parts.extend(
                f'<circle cx="{centre + ((j * 37) % 11 - 5) * slot * 0.03:.1f}" cy="{axes.py(v):.1f}" r="1.6" class="dot"/>'
                for j, v in enumerate(ordered[::step])
            )
        inner = "".join(parts)
        axes.parts.append(f'<a href="{escape(links[i])}">{inner}</a>' if links else inner)
        axes.parts.append(
            f'<text x="{centre:.1f}" y="{height - MARGIN_BOTTOM + 14}" class="tick-label" text-anchor="middle">{escape(label)}</text>'
        )
    return axes.svg("boxes", title)


def _quantile(ordered: Sequence[float], fraction: float) -> float:
    position = fraction * (len(ordered) - 1)
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def vector(values: Sequence[float], title: str, width: int = 360, height: int = 160) -> str:
    """A short vector (the 8-dim topic feature) as signed bars around zero."""
    limit = max([abs(v) for v in values] + [1e-6])
    axes = Axes((0, len(values)), (-limit * 1.1, limit * 1.1), width, height)
    axes.frame("dimension", "value", x_ticks=[])
    slot = (width - MARGIN_LEFT - MARGIN_RIGHT) / max(len(values), 1)
    for i, value in enumerate(values):
        y0, y1 = axes.py(0), axes.py(value)
        colour = PALETTE[0] if value >= 0 else PALETTE[1]
        axes.parts.append(
            f'<rect x="{axes.px(i) + slot * 0.15:.1f}" y="{min(y0, y1):.1f}" width="{slot * 0.7:.1f}" height="{abs(y1 - y0):.1f}" '
            f'fill="{colour}"><title>dim {i}: {value:.4f}</title></rect>'
            f'<text x="{axes.px(i) + slot / 2:.1f}" y="{height - MARGIN_BOTTOM + 14}" class="tick-label" text-anchor="middle">{i}</text>'
        )
    return axes.svg("vector", title)
