"""The report as one self-contained HTML page: inline CSS and SVG, nothing fetched, every text
that came from the database or the configuration escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from bot.report import charts
from bot.report.intervals import wilson
from bot.report.queries import DEFAULT, Counts, Figures, Scope, VersionKey, version_id
from bot.report.ratings import RESAMPLES, Rating, compared
from bot.report.words import words

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1000px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.totals td { font-size: 1.2em; font-weight: bold; }
summary { cursor: pointer; color: #1f4e8c; }
.note { background: #f4f6fa; padding: 0.6em 1em; border-left: 4px solid #1f4e8c; }
"""
# rows of a plot (0.4 in each): the versions are as many as anyone inviting the bot makes
MAX_PLOTTED = 40


@dataclass(frozen=True)
class Context:
    scope: Scope
    lang: str
    now_ms: int
    emojis: dict[str, str]  # reason label -> its emoji, from data.reason_emojis


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _percent(up: int, total: int) -> str:
    if not total:
        return "–"
    low, high = wilson(up, total)
    return f"{100 * up / total:.1f} % [{100 * low:.1f}–{100 * high:.1f}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], css: str = "") -> str:
    """Cells are escaped here: whatever a label holds, it stays text."""
    attribute = f' class="{css}"' if css else ""
    lines = [f"<table{attribute}><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        lines.append("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>")
    return "\n".join([*lines, "</table>"])


def _section(title: str, caption: str, plot: str, table: str, fold: str = "") -> str:
    """A plot, its caption and its figures; a long table (one row a period) folded under
    `fold`, so that the plots come one after the other."""
    if fold and table:
        table = f"<details><summary>{escape(fold)}</summary>{table}</details>"
    return (
        f"<section><h2>{escape(title)}</h2><figure>{plot}<figcaption>{escape(caption)}"
        f"</figcaption></figure>\n{table}</section>"
    )


class Page:
    def __init__(self, figures: Figures, found: list[Rating], context: Context) -> None:
        self.figures = figures
        self.ratings = found
        self.context = context
        self.w = words(context.lang)
        days = figures.period.days
        self.period = self.w["day"] if days == 1 else self.w["week"]
        if days > 7:
            self.period = self.w["weeks"].format(n=days // 7)
        answers: dict[str, int] = {}  # per room, summed in one pass: rooms may be thousands
        for (room, version), counts in figures.versions.items():
            if version:
                answers[room] = answers.get(room, 0) + counts.answers
        ranked = sorted(answers, key=lambda room: (-answers[room], room))
        self.aliases = {room: self.w["room_alias"].format(n=n) for n, room in enumerate(ranked, 1)}

    def version_label(self, item: str) -> str:
        """ "default", "v2" in a report of one room, else "R1 v2" (rooms listed at the end)."""
        if item == DEFAULT:
            return self.w["default_prompt"]
        room, _, version = item.partition("\x00")
        if self.context.scope.room is not None:
            return f"v{version}"
        return f"{self.aliases.get(room, '?')} v{version}"

    def html(self) -> str:
        w, lang = self.w, self.context.lang
        parts = [
            f'<!DOCTYPE html>\n<html lang="{escape(lang)}"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(w['title'])}</title><style>{STYLE}</style></head><body>",
            f"<h1>{escape(w['title'])}</h1>",
            self._heading(),
            self._counted(),
        ]
        if self.figures.first_ms is None:
            parts.append(f"<p>{escape(w['empty'])}</p>")
        else:
            parts += [
                self._totals(),
                self._timeline(),
                self._approval("versions"),
                self._approval("models"),
                self._ratings(),
                self._rates(),
                self._labels(),
                self._rooms(),
            ]
        return "\n".join([*parts, "</body></html>\n"])

    def _heading(self) -> str:
        w, figures, scope = self.w, self.figures, self.context.scope
        lines = [w["generated"].format(now=_day(self.context.now_ms))]
        if figures.first_ms is not None and figures.last_ms is not None:
            first, last = _day(figures.first_ms), _day(figures.last_ms)
            lines.insert(0, w["range"].format(first=first, last=last, period=self.period))
        if scope.room is not None:
            lines.append(w["room_only"].format(room=scope.room))
        return "".join(f"<p>{escape(line)}</p>" for line in lines)

    def _counted(self) -> str:
        w, scope = self.w, self.context.scope
        feedback = w["counted_opt_in" if scope.opt_in else "counted_off"]
        lines = [w["counted_answers"], feedback.format(notice=scope.notice_version)]
        lines.append(w["counted_private"])
        body = "".join(f"<p>{escape(line)}</p>" for line in lines)
        return f'<section class="note"><h2>{escape(w["counted_title"])}</h2>{body}</section>'

    def _totals(self) -> str:
        w, t = self.w, self.figures.totals
        head = [w[k] for k in ("answers", "errors", "refusals", "up", "down", "corrections")]
        head.append(w["approval"])
        row: list[object] = [t.answers, t.errors, t.refusals, t.up, t.down, t.corrections]
        row.append(_percent(t.up, t.up + t.down))
        return f"<h2>{escape(w['totals'])}</h2>" + _table(head, [row], "totals")

    def _periods(self) -> tuple[list[datetime], list[Counts]]:
        timeline, period = self.figures.timeline, self.figures.period
        if not timeline:
            return [], []
        buckets = range(min(timeline), max(timeline) + 1)
        starts = [datetime.fromtimestamp(period.start_ms(b) / 1000, UTC) for b in buckets]
        return starts, [timeline.get(b, Counts()) for b in buckets]

    def _timeline(self) -> str:
        w, colours = self.w, charts.COLOURS
        starts, counts = self._periods()
        bars = charts.Series(w["answers"], [c.answers for c in counts], colours["answers"])
        lines = [
            charts.Series(w[name], [getattr(c, name) for c in counts], colours[name])
            for name in ("up", "down", "corrections")
        ]
        lines[0] = charts.Series(w["up_word"], lines[0].values, colours["up"])
        lines[1] = charts.Series(w["down_word"], lines[1].values, colours["down"])
        plot = charts.timeline(starts, bars, lines, self.figures.period.days)
        head = [w["period"], w["answers"], w["up"], w["down"], w["corrections"]]
        rows = [
            [start.strftime("%Y-%m-%d"), c.answers, c.up, c.down, c.corrections]
            for start, c in zip(starts, counts, strict=True)
            if c.answers or c.up or c.down or c.corrections
        ]
        caption = w["timeline_caption"].format(period=self.period)
        return _section(w["timeline_title"], caption, plot, _table(head, rows), w["figures"])

    def _approval(self, kind: str) -> str:
        """Per prompt version or per model: answers, votes, approval and its interval."""
        w = self.w
        if kind == "versions":
            items = [(self.version_label(version_id(k)), c) for k, c in self._sorted_versions()]
        else:
            items = sorted(
                self.figures.models.items(), key=lambda item: (-item[1].answers, item[0])
            )
        voted = [(label, c) for label, c in items if c.up + c.down]
        caption = w[f"{kind}_caption"]
        if len(voted) > MAX_PLOTTED:
            votes = [c.up + c.down for _, c in voted]
            kept = set(sorted(range(len(voted)), key=lambda n: -votes[n])[:MAX_PLOTTED])
            caption += w["plot_left_out"].format(shown=MAX_PLOTTED, n=len(voted) - MAX_PLOTTED)
            voted = [item for n, item in enumerate(voted) if n in kept]  # in the table's order
        plot = f"<p>{escape(w['no_data'])}</p>"
        if voted:
            labels = [label for label, _ in voted]
            ups, totals = [c.up for _, c in voted], [c.up + c.down for _, c in voted]
            plot = charts.approval(labels, ups, totals, w["approval"])
        head = [w["version" if kind == "versions" else "model"], w["answers"], w["up"], w["down"]]
        head += [w["approval"], w["corrections"]]
        rows = [
            [label, c.answers, c.up, c.down, _percent(c.up, c.up + c.down), c.corrections]
            for label, c in items
        ]
        return _section(w[f"{kind}_title"], caption, plot, _table(head, rows))

    def _sorted_versions(self) -> list[tuple[VersionKey, Counts]]:
        def order(item: tuple[VersionKey, Counts]) -> tuple[int, str, int]:
            (room, version), _ = item
            alias = self.aliases.get(room, "")
            return (0 if version == 0 else 1, alias.zfill(8), version)

        return sorted(self.figures.versions.items(), key=order)

    def _ratings(self) -> str:
        w, figures = self.w, self.figures
        pairs = sum(len(group) * count for group, count in figures.comparisons.items())
        caption = w["ratings_caption"].format(
            pairs=pairs, questions=figures.compared_questions, resamples=RESAMPLES
        )
        if not self.ratings:
            return _section(w["ratings_title"], caption, f"<p>{escape(w['ratings_none'])}</p>", "")
        left_out = len(compared(figures.comparisons)) - len(self.ratings)
        if left_out > 0:
            caption += w["ratings_left_out"].format(shown=len(self.ratings), n=left_out)
        labels = [self.version_label(rating.item) for rating in self.ratings]
        plot = charts.ratings(labels, self.ratings, w["preferred"])
        head = [w["version"], w["preferred"], w["interval"], w["wins"], w["losses"]]
        rows = [
            [
                label,
                f"{100 * r.versus_average:.0f} %",
                f"{100 * charts.chance(r.low):.0f}–{100 * charts.chance(r.high):.0f} %",
                r.wins,
                r.losses,
            ]
            for label, r in zip(labels, self.ratings, strict=True)
        ]
        return _section(w["ratings_title"], caption, plot, _table(head, rows))

    def _rates(self) -> str:
        w, colours = self.w, charts.COLOURS
        starts, counts = self._periods()
        shown = [(s, c) for s, c in zip(starts, counts, strict=True) if c.answers]
        lines = [
            charts.Series(w[name], [getattr(c, name) / c.answers for _, c in shown], colours[name])
            for name in ("refusals", "errors")
        ]
        plot = f"<p>{escape(w['no_data'])}</p>"
        if shown:
            plot = charts.rates([s for s, _ in shown], lines, w["rate"])
        head = [w["period"], w["answers"], w["refusals"], w["errors"]]
        rows = [
            [s.strftime("%Y-%m-%d"), c.answers, _share(c.refusals, c.answers),
             _share(c.errors, c.answers)]
            for s, c in shown
        ]  # fmt: skip
        caption = w["rates_caption"].format(period=self.period)
        return _section(w["rates_title"], caption, plot, _table(head, rows), w["figures"])

    def _labels(self) -> str:
        w, found = self.w, self.figures.labels
        plot = f"<p>{escape(w['no_data'])}</p>"
        if found:
            plot = charts.bars([label for label, _ in found], [n for _, n in found], w["count"])
        emojis = self.context.emojis
        named = [
            (f"{emojis[label]} {label}" if label in emojis else label, n) for label, n in found
        ]
        table = _table([w["label"], w["count"]], named)
        return _section(w["labels_title"], w["labels_caption"], plot, table)

    def _rooms(self) -> str:
        if not self.aliases or self.context.scope.room is not None:
            return ""
        rows = [[alias, room] for room, alias in self.aliases.items()]
        return f"<h2>{escape(self.w['rooms_title'])}</h2>" + _table([self.w["room"], "id"], rows)


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f} %)" if whole else str(part)
