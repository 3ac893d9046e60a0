"""The report's plots, drawn with matplotlib's object API (no pyplot, no global figure state)
and returned as inline SVG. Labels come from configuration and from servers: they are drawn as
plain text (no math parsing, so a "$" in a model's name is a dollar sign), shortened, and
escaped by the SVG writer."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import matplotlib
from matplotlib import dates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bot.report.intervals import wilson
from bot.report.ratings import Rating

WIDTH = 10.0  # inches; 960 px wide in a browser
MAX_LABEL = 32
MAX_TICKS = 16
COLOURS = {
    "answers": "#9db4d0",
    "up": "#2e7d32",
    "down": "#c62828",
    "corrections": "#ef6c00",
    "refusals": "#6a1b9a",
    "errors": "#c62828",
    "point": "#1f4e8c",
}
_PROLOG = re.compile(r"\A.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SIZE = re.compile(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"')


@contextmanager
def drawing() -> Iterator[None]:
    """Settings for every plot of the page, undone afterwards: labels are plain text."""
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text stays text: smaller, and the browser's fonts draw it
            "text.parse_math": False,
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        yield


def short(label: str) -> str:
    """A label fit for an axis: printable, and cut when long (tables show it whole)."""
    clean = "".join(char if char.isprintable() else "?" for char in label)
    return clean if len(clean) <= MAX_LABEL else clean[: MAX_LABEL - 1] + "…"


def svg(figure: Figure) -> str:
    """The figure as an <svg> element to put in HTML: no XML prolog, no metadata, and a width
    that follows the page's."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1), count=1)
    return _SIZE.sub(r'<svg \1style="max-width: 100%; height: auto"', text, count=1)


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    colour: str


def timeline(starts: Sequence[datetime], bars: Series, lines: Sequence[Series], days: int) -> str:
    """Counts per period of `days` days: one series as bars, the others as lines."""
    figure = Figure(figsize=(WIDTH, 3.6))
    axes = figure.add_subplot()
    width = 0.8 * days
    x = dates.date2num(starts)  # days, so that a bar's width is in days
    axes.bar(x, bars.values, width=width, color=bars.colour, label=bars.name)
    for line in lines:
        axes.plot(x, line.values, marker="o", markersize=3, color=line.colour, label=line.name)
    _date_axis(axes, x)
    axes.set_ylim(bottom=0)
    axes.margins(y=0.15)  # room for the legend above the highest bar
    axes.legend(loc="upper left", frameon=False, ncols=len(lines) + 1)
    figure.autofmt_xdate()
    return svg(figure)


def _date_axis(axes: Axes, x: Sequence[float]) -> None:
    """Dates as days: each period under its own tick when they are few, else matplotlib's."""
    axes.xaxis_date()
    if len(x) <= MAX_TICKS:
        axes.set_xticks(list(x))
    else:
        locator = dates.AutoDateLocator(maxticks=MAX_TICKS)
        axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.DateFormatter("%Y-%m-%d"))


def rates(starts: Sequence[datetime], lines: Sequence[Series], label: str) -> str:
    """Shares (0 to 1) per period, as percentages."""
    figure = Figure(figsize=(WIDTH, 3.2))
    axes = figure.add_subplot()
    x = dates.date2num(starts)
    for line in lines:
        values = [100 * value for value in line.values]
        axes.plot(x, values, marker="o", markersize=3, color=line.colour, label=line.name)
    _date_axis(axes, x)
    axes.set_ylim(bottom=0)
    axes.set_ylabel(f"{label} (%)")
    axes.legend(loc="upper left", frameon=False)
    figure.autofmt_xdate()
    return svg(figure)


def approval(labels: Sequence[str], ups: Sequence[int], totals: Sequence[int], axis: str) -> str:
    """Share of up votes per item, with its Wilson 95 % interval and the number of votes."""
    figure = Figure(figsize=(WIDTH, 0.8 + 0.4 * len(labels)))
    axes = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]  # the first item on top
    for y, up, total in zip(positions, ups, totals, strict=True):
        low, high = wilson(up, total)
        share = up / total if total else 0.5
        axes.plot([100 * low, 100 * high], [y, y], color=COLOURS["point"], linewidth=2)
        axes.plot([100 * share], [y], "o", color=COLOURS["point"])
        axes.annotate(f"n={total}", (100 * high, y), xytext=(6, -3), textcoords="offset points")
    axes.set_yticks(positions, [short(label) for label in labels])
    axes.set_xlim(0, 108)
    axes.set_ylim(-0.7, len(labels) - 0.3)
    axes.set_xlabel(f"{axis} (%)")
    axes.grid(axis="x", alpha=0.3)
    return svg(figure)


def ratings(labels: Sequence[str], found: Sequence[Rating], axis: str) -> str:
    """Chance of being preferred to an average version, with the bootstrap interval."""
    figure = Figure(figsize=(WIDTH, 0.8 + 0.4 * len(labels)))
    axes = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    for y, rating in zip(positions, found, strict=True):
        low, high = (100 * chance(value) for value in (rating.low, rating.high))
        axes.plot([low, high], [y, y], color=COLOURS["point"], linewidth=2)
        axes.plot([100 * rating.versus_average], [y], "o", color=COLOURS["point"])
    axes.axvline(50, color="#888888", linewidth=1, linestyle="--")
    axes.set_yticks(positions, [short(label) for label in labels])
    axes.set_xlim(0, 100)
    axes.set_ylim(-0.7, len(labels) - 0.3)
    axes.set_xlabel(f"{axis} (%)")
    axes.grid(axis="x", alpha=0.3)
    return svg(figure)


def chance(strength: float) -> float:
    """The logistic function, without overflow at the ends (an interval may be infinite)."""
    return 1 / (1 + math.exp(min(-strength, 700.0)))


def bars(labels: Sequence[str], counts: Sequence[int], axis: str) -> str:
    """Counts per item, largest on top."""
    figure = Figure(figsize=(WIDTH, 0.8 + 0.4 * len(labels)))
    axes = figure.add_subplot()
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, counts, color=COLOURS["corrections"])
    for y, count in zip(positions, counts, strict=True):
        axes.annotate(str(count), (count, y), xytext=(4, -3), textcoords="offset points")
    axes.set_yticks(positions, [short(label) for label in labels])
    axes.set_xlabel(axis)
    return svg(figure)
