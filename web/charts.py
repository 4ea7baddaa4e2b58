"""Server-side SVG geometry for the supply chart: cumulative LLAMA granted over time, one bar per grant. No Django."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 260
# Room for the axis labels, in SVG user units.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 16, 36
BAR_WIDTH = 4
# The time axis runs a little before the first grant and after the last, so that one grant, or a few close
# together, shows as a step in the middle with two different times under the axis, not a line along the edge.
PAD_FRACTION = 0.08
MIN_PAD_S = 1800.0


@dataclass(frozen=True)
class Bar:
    """One grant: a bar at its time, as tall as its amount on the bar scale."""

    x: float
    y: float
    height: float
    amount: int
    at: dt.datetime


@dataclass(frozen=True)
class Chart:
    """Everything a template needs to draw the chart; `line` is an SVG polyline points list."""

    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    line: str
    bars: tuple[Bar, ...]
    total: int
    largest: int
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def empty(self) -> bool:
        """No grants yet."""
        return not self.bars


def supply_chart(series: Sequence[tuple[dt.datetime, int]], *, width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """A step line of cumulative grants and a bar per grant (bars on their own scale), over the grants' time span
    padded on both sides (`start` and `end` are the axis's ends)."""
    left, right = MARGIN_LEFT, width - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, height - MARGIN_BOTTOM
    if not series:
        return Chart(width, height, left, right, top, bottom, "", (), 0, 0, None, None)
    first, last = series[0][0], series[-1][0]
    pad = dt.timedelta(seconds=max((last - first).total_seconds() * PAD_FRACTION, MIN_PAD_S))
    start, end = first - pad, last + pad
    span = (end - start).total_seconds()
    total = sum(amount for _, amount in series)
    largest = max(amount for _, amount in series)
    plot_w, plot_h = right - left, bottom - top

    def x_of(at: dt.datetime) -> float:
        return round(left + plot_w * (at - start).total_seconds() / span, 2)

    def y_of(value: int, scale: int) -> float:
        return round(bottom - plot_h * value / scale, 2) if scale else float(bottom)

    points = [(float(left), float(bottom))]
    bars = []
    running = 0
    for at, amount in series:
        x = x_of(at)
        points.append((x, y_of(running, total)))  # a step: flat until the grant, then up
        running += amount
        points.append((x, y_of(running, total)))
        bar_top = y_of(amount, largest)
        bars.append(Bar(x=round(x - BAR_WIDTH / 2, 2), y=bar_top, height=round(bottom - bar_top, 2), amount=amount,
                        at=at))
    points.append((float(right), y_of(running, total)))
    line = " ".join(f"{x},{y}" for x, y in points)
    return Chart(width, height, left, right, top, bottom, line, tuple(bars), total, largest, start, end)
