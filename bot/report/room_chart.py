"""The chart `!lucie stats` attaches: the approval rate of each prompt version (and model, where
a room's answers came from several), with its 95 % Wilson interval and the number of votes
under each bar.

Only aggregate counts come in (version, model name, 👍 and 👎 totals): no message, no person,
no event id can reach the picture. matplotlib is imported only in the child process that draws
a chart, never in the bot; without it, `!lucie stats` answers with its text alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import io
import json
import logging
import sys
import unicodedata
from asyncio.subprocess import PIPE
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.core.ports import Image
from bot.report.intervals import wilson

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MAX_BARS = 12  # the latest versions: bounds the drawing's time and keeps labels legible
MAX_LABEL = 20  # characters of a model's name under its bar
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 100  # 800 × 450 pixels, readable on a phone
CACHED = 32  # charts kept, each some 30 KB
RENDER_TIMEOUT_S = 60  # importing matplotlib and drawing take about a second
MAX_REQUEST = 64 * 1024  # MAX_BARS bars as JSON take a few hundred bytes
NAMES = {"fr": "approbation-par-version.png", "en": "approval-per-version.png"}
TEXTS = {
    # no emoji: the bundled DejaVu fonts have none, and a missing glyph draws as a box
    "fr": ("Approbation des réponses par version du prompt", "votes positifs (IC 95 %)"),
    "en": ("Approval of answers per prompt version", "positive votes (95 % CI)"),
}
# one colour per model (colour-blind-safe Okabe-Ito), cycling past eight models
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
ERROR = "#222222"


@dataclass(frozen=True)
class Bar:
    version: int
    model: str | None
    up: int
    down: int

    @property
    def votes(self) -> int:
        return self.up + self.down


def bars_of(rows: Iterable[Mapping[str, Any]]) -> tuple[Bar, ...]:
    """Rows of feedback.approval (prompt_version, model, up, down), as the bars of the latest
    MAX_BARS versions, oldest first; the model is named only when there were several."""
    found = [
        Bar(int(row["prompt_version"]), row["model"], int(row["up"]), int(row["down"]))
        for row in rows
    ]
    several = len({bar.model for bar in found}) > 1
    if not several:
        found = [Bar(bar.version, None, bar.up, bar.down) for bar in found]
    found.sort(key=lambda bar: (bar.version, bar.model or ""))
    return tuple(found[-MAX_BARS:])


def plain(text: str, limit: int = MAX_LABEL) -> str:
    """A label every font draws and nothing interprets: accents folded, ASCII printable only
    (no control characters, no bidi overrides), truncated."""
    folded = unicodedata.normalize("NFKD", text)
    kept = "".join(c if " " <= c <= "~" else " " for c in folded if not unicodedata.combining(c))
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1].rstrip() + "…"


def label(bar: Bar) -> str:
    """Under each bar: its version and how many votes it stands on."""
    return f"v{bar.version}\nn = {bar.votes}"


def draw(bars: Sequence[Bar], lang: str) -> Figure:
    """The chart as a matplotlib Figure of its own, through the object API (no pyplot: no global
    figure registry, no current figure, no GUI backend)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    title, axis = TEXTS.get(lang, TEXTS["en"])
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    models = list(dict.fromkeys(bar.model for bar in bars))
    rates = [bar.up / bar.votes if bar.votes else 0.0 for bar in bars]
    for n, model in enumerate(models):
        mine = [i for i, bar in enumerate(bars) if bar.model == model]
        ax.bar(mine, [rates[i] for i in mine], width=0.6, color=COLOURS[n % len(COLOURS)],
               label=plain(model) if model is not None else None)  # fmt: skip
    voted = [i for i, bar in enumerate(bars) if bar.votes]
    if voted:
        bounds = [wilson(bars[i].up, bars[i].votes) for i in voted]
        below = [rates[i] - low for i, (low, _) in zip(voted, bounds, strict=True)]
        above = [high - rates[i] for i, (_, high) in zip(voted, bounds, strict=True)]
        ax.errorbar(voted, [rates[i] for i in voted], yerr=[below, above], fmt="none",
                    ecolor=ERROR, capsize=5, elinewidth=1.2)  # fmt: skip
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0, symbol=" %"))
    ax.set_xticks(range(len(bars)), [label(bar) for bar in bars])
    ax.set_ylabel(axis)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if len(models) > 1:
        legend = figure.legend(loc="outside right upper", fontsize=8)
        for text in legend.get_texts():
            text.set_parse_math(False)  # a "$" in a model's name stays a dollar sign
    return figure


def render(bars: Sequence[Bar], lang: str) -> Image:
    """The chart as PNG bytes. CPU work (about 0.12 s; 0.55 s for the first, which imports
    matplotlib): the bot calls it in a child process (render_apart)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = draw(bars, lang)
    canvas = FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # no "Software" text chunk either: the file carries the pixels and nothing else
    figure.savefig(buffer, format="png", metadata={"Software": None})
    width, height = canvas.get_width_height()
    return Image(buffer.getvalue(), NAMES.get(lang, NAMES["en"]), width, height)


class RoomCharts:
    """Charts drawn one at a time, each in a short-lived child process, and kept for the figures
    they show: the same counts asked for again (another admin, a repeated command) cost a
    dictionary lookup. Keyed on the data itself rather than on the room, so a chart is never
    stale.

    A child process rather than a thread: matplotlib's fonts and caches (some 75 MiB, measured,
    after a few dozen charts) leave with it, so a bot that drew a chart once does not carry
    them for the rest of its life; and a chart that misbehaves cannot stall the bot."""

    def __init__(
        self, renderer: Callable[[Sequence[Bar], str], Awaitable[Image]] | None = None
    ) -> None:
        self._render = renderer or render_apart
        self._kept: OrderedDict[tuple[tuple[Bar, ...], str], Image] = OrderedDict()
        self._drawing = asyncio.Lock()

    async def chart(self, rows: Iterable[Mapping[str, Any]], lang: str) -> Image | None:
        """The chart of these approval rows; None when no vote was cast (nothing to show) or
        when matplotlib is not installed."""
        bars = bars_of(rows)
        if not any(bar.votes for bar in bars):
            return None
        key = (bars, lang)
        async with self._drawing:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
            try:
                image = await self._render(bars, lang)
            except ImportError as exc:
                log.info("`stats` answers without its chart: %s is not installed (pip install "
                         "matplotlib)", exc.name)  # fmt: skip
                return None
            self._kept[key] = image
            if len(self._kept) > CACHED:
                self._kept.popitem(last=False)
            return image


class ChartFailed(Exception):
    """The child process drawing a chart failed or took too long."""


async def render_apart(bars: Sequence[Bar], lang: str) -> Image:
    """render() in a child process (`python -m bot.report.room_chart`): the bars go in as JSON,
    the PNG comes back after a line with its width and height."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("no matplotlib", name="matplotlib")
    request = json.dumps({"lang": lang, "bars": [dataclasses.asdict(bar) for bar in bars]})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__,
        stdin=PIPE, stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            out, err = await process.communicate(request.encode())
    except TimeoutError:
        raise ChartFailed(f"no chart within {RENDER_TIMEOUT_S} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ChartFailed(f"exit {process.returncode}: {last[0][:200]}")
    size, _, data = out.partition(b"\n")
    width, height = (int(number) for number in size.split())
    return Image(data, NAMES.get(lang, NAMES["en"]), width, height)


def _main() -> None:
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
    bars = [Bar(**bar) for bar in request["bars"][:MAX_BARS]]
    image = render(bars, str(request["lang"]))
    sys.stdout.buffer.write(f"{image.width} {image.height}\n".encode() + image.data)


if __name__ == "__main__":
    _main()
