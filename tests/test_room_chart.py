"""`!lucie stats`' chart: a PNG of approval per prompt version with 95 % intervals, drawn from
aggregate counts only, cached, bounded, optional (no matplotlib: text alone); and, through the
relay, sent after the text as an m.image whose failure costs nothing but the picture."""

from __future__ import annotations

import asyncio
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.text import Text

from bot.app import build_relay
from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.command_registry import CommandRegistry, parse_command
from bot.core.data_commands import DataCommands
from bot.core.events import TextMessage
from bot.core.ports import Image, SendRefused
from bot.core.pseudonyms import LocalPseudonyms
from bot.llm.client import ChatModel
from bot.report import room_chart
from bot.report.intervals import wilson
from bot.report.room_chart import MAX_BARS, MAX_LABEL, Bar, RoomCharts, bars_of, draw, render
from bot.storage.store import Store
from bot.texts import PromptTexts
from tests.support.bot_process import ROOT
from tests.support.chat_port import MemoryPort

PNG = b"\x89PNG\r\n\x1a\n"
ROOM = "!room:x"


def row(version: int, up: int, down: int, model: str | None = "lucie") -> dict[str, Any]:
    return {"prompt_version": version, "model": model, "up": up, "down": down}


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every PNG chunk, CRCs checked: the file is a well-formed PNG."""
    assert png.startswith(PNG)
    found, at = [], len(PNG)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + data) == crc
        found.append((kind, data))
        at += 12 + length
    assert found[-1][0] == b"IEND"
    return found


def texts_of(figure: Any) -> list[str]:
    return [text.get_text() for text in figure.findobj(Text) if text.get_text()]


def test_a_png_with_one_bar_per_version_its_interval_and_its_votes():
    bars = bars_of([row(0, 10, 5), row(1, 3, 0), row(2, 0, 0), row(3, 1, 19)])
    image = render(bars, "fr")
    header = dict(chunks(image.data))[b"IHDR"]
    assert struct.unpack(">II", header[:8]) == (image.width, image.height) == (800, 450)
    assert image.name == "approbation-par-version.png" and image.mimetype == "image/png"

    axes = draw(bars, "fr").axes[0]
    drawn = [c for c in axes.containers if isinstance(c, BarContainer)]
    heights = [patch.get_height() for c in drawn for patch in c.patches]
    assert heights == pytest.approx([10 / 15, 1.0, 0.0, 1 / 20])
    labels = [t.get_text() for t in axes.get_xticklabels()]
    assert labels == ["v0\nn = 15", "v1\nn = 3", "v2\nn = 0", "v3\nn = 20"]
    (errors,) = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    segments = errors.lines[2][0].get_segments()
    # one interval per version with votes (none drawn on nothing), bounds from wilson()
    assert [s[0][0] for s in segments] == [0, 1, 3]
    for segment, (up, votes) in zip(segments, [(10, 15), (3, 3), (1, 20)], strict=True):
        assert (segment[0][1], segment[1][1]) == pytest.approx(wilson(up, votes))
    assert render(bars, "en").name == "approval-per-version.png"


def test_only_the_latest_versions_and_models_named_only_when_several():
    many = bars_of([row(v, v, 1) for v in range(30)])
    assert len(many) == MAX_BARS and [b.version for b in many] == list(range(30 - MAX_BARS, 30))
    assert {b.model for b in many} == {None}  # one model: versions alone tell the bars apart
    mixed = bars_of([row(2, 1, 1, "b"), row(1, 1, 0, "a"), row(2, 3, 0, "a")])
    assert mixed == (Bar(1, "a", 1, 0), Bar(2, "a", 3, 0), Bar(2, "b", 1, 1))
    legend = draw(mixed, "en").legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]


def test_labels_are_plain_short_and_never_interpreted():
    hostile = "$\\frac{1}{2}$\u202eévil\x00\nmodèle-au-nom-très-très-long"
    figure = draw(bars_of([row(1, 1, 1), row(1, 2, 0, hostile)]), "fr")
    (shown,) = [t for t in figure.legends[0].get_texts() if "frac" in t.get_text()]
    # bidi override, NUL and newline gone, accents folded, cut at MAX_LABEL characters
    assert shown.get_text() == "$\\frac{1}{2}$ evil…" and len(shown.get_text()) <= MAX_LABEL
    assert not shown.get_parse_math()  # drawn as typed, not as TeX
    assert render(bars_of([row(1, 1, 1), row(1, 2, 0, hostile)]), "fr").data.startswith(PNG)


def message(sender: str) -> TextMessage:
    return TextMessage(ROOM, "$cmd", sender, 1, "m.text", "!lucie stats", None, None, None, (),
                       False)  # fmt: skip


async def answers_with_votes(store: Store, voters: list[str], model: str = "lucie-7b") -> None:
    for n, voter in enumerate(voters):
        await store.conversations.queue_answer(ROOM, f"$q{n}", 1, None, 1)
        answer = await store.conversations.answer_for_question(ROOM, f"$q{n}")
        await store.conversations.update_answer(
            answer.id, answer_event_id=f"$a{n}", status="complete", prompt_version=n % 2,
            model=model,
        )  # fmt: skip
        await store.feedback.add_vote(f"$v{n}", f"$a{n}", ROOM, voter, "up", "x", 2)


async def test_the_chart_holds_aggregates_only_never_who_voted(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    settings = Settings(matrix={"homeserver": "http://h", "user_id": "@bot:x", "password": "p"})

    async def admin(room_id: str, user_id: str) -> bool:
        return True

    async def regenerate(answer: Any, requester: str) -> str:
        raise AssertionError("not used here")

    seen: list[tuple[Bar, ...]] = []

    async def renderer(bars: Any, lang: str) -> Image:
        seen.append(tuple(bars))
        return render(bars, lang)

    commands = CommandRegistry("!lucie", admin)
    commands.add(*DataCommands(settings, store, regenerate, charts=RoomCharts(renderer)).specs())
    try:
        voters = ["@alice.secret:x", "@bob.secret:x", "@alice.secret:x"]
        await answers_with_votes(store, voters, model="@carol.secret:x")
        reply = await commands.reply(parse_command("!lucie stats", "!lucie"), message("@a:x"), "en")
        assert "prompt v0: 2 answers" in reply.text and reply.image is not None
        image = await reply.image()
        assert image is not None
    finally:
        await store.close()
    assert seen == [(Bar(0, None, 2, 0), Bar(1, None, 1, 0))]  # counts, and nothing else
    kinds = [kind for kind, _ in chunks(image.data)]
    assert not {b"tEXt", b"zTXt", b"iTXt", b"eXIf"} & set(kinds)  # no metadata at all
    assert b"secret" not in image.data
    assert not [t for t in texts_of(draw(seen[0], "en")) if "secret" in t or "@" in t]


async def test_charts_are_cached_on_their_figures_and_drawn_one_at_a_time():
    drawn: list[int] = []
    running = 0

    async def renderer(bars: Any, lang: str) -> Image:
        nonlocal running
        running += 1
        await asyncio.sleep(0.01)  # another request may come in while this one draws
        assert running == 1  # never two charts drawing at once
        drawn.append(len(bars))
        running -= 1
        return Image(b"png", "x.png", 1, 1)

    charts = RoomCharts(renderer)
    rows = [row(0, 1, 1)]
    same = await asyncio.gather(*[charts.chart(rows, "fr") for _ in range(5)])
    assert drawn == [1] and all(image is same[0] for image in same)
    await charts.chart([row(0, 2, 1)], "fr")  # a new vote: a new chart
    await charts.chart(rows, "en")
    assert drawn == [1, 1, 1]
    assert await charts.chart([row(0, 0, 0)], "fr") is None and len(drawn) == 3  # no votes


def test_the_bot_draws_in_a_child_process_and_keeps_no_matplotlib():
    script = (
        "import asyncio, sys\n"
        "from bot.report.room_chart import RoomCharts\n"
        "rows = [{'prompt_version': 0, 'model': 'm', 'up': 3, 'down': 1}]\n"
        "image = asyncio.run(RoomCharts().chart(rows, 'en'))\n"
        f"print(image.width, image.height, len(image.data), image.data[:8] == {PNG!r})\n"
        "print('matplotlib' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    size, loaded = done.stdout.splitlines()
    width, height, length, is_png = size.split()
    assert (width, height, is_png) == ("800", "450", "True") and int(length) > 1000
    assert loaded == "False"  # the fonts and caches left with the child


async def test_a_chart_that_fails_to_draw_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(room_chart, "RENDER_TIMEOUT_S", 0.01)
    with pytest.raises(room_chart.ChartFailed, match="no chart within"):
        await room_chart.render_apart([Bar(0, None, 1, 0)], "fr")


async def test_without_matplotlib_the_text_goes_alone_and_the_log_says_why(monkeypatch, caplog):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with caplog.at_level(logging.INFO, logger="bot.report.room_chart"):
        assert await RoomCharts().chart([row(0, 1, 1)], "fr") is None
    assert "without its chart" in caplog.text and "matplotlib" in caplog.text


class UploadingPort(MemoryPort):
    def __init__(self, refuse: bool = False) -> None:
        super().__init__(dm=False)
        self.power_levels = {"users": {"@admin:x": 100}, "users_default": 0}
        self.uploads: list[Image] = []
        self.refuse_upload = refuse

    async def upload(self, room_id: str, image: Image) -> dict[str, Any]:
        if self.refuse_upload:
            raise SendRefused("M_TOO_LARGE: Upload request body is too large (HTTP 413)")
        self.uploads.append(image)
        return {"url": "mxc://x/chart"}


async def relay_with(port: UploadingPort, tmp_path: Path):
    settings = Settings(
        matrix={"homeserver": "http://h", "user_id": port.user_id, "password": "p"},
        llm={"base_url": "http://127.0.0.1:9/v1", "model": "m"},
        data_dir=tmp_path,
    )
    store = await Store.open(tmp_path / "lucie-bot.sqlite3")
    relay = build_relay(
        settings, store, ChatModel(settings.llm), port, PromptTexts(None),
        LocalPseudonyms(b"k" * 32),
    )  # fmt: skip
    await store.rooms.add_room(ROOM, now_ms() - 60_000)
    return relay, store


async def command(relay: Any, sender: str, body: str, n: int) -> None:
    content = {"msgtype": "m.text", "body": body}
    event = {"type": "m.room.message", "event_id": f"$c{n}", "sender": sender,
             "origin_server_ts": now_ms(), "content": content}  # fmt: skip
    await relay.on_message(ROOM, event, is_dm=False)
    await relay.tasks.drain(30)


async def test_the_text_goes_first_then_the_image_replying_to_the_command(tmp_path):
    port = UploadingPort()
    relay, store = await relay_with(port, tmp_path)
    try:
        await answers_with_votes(store, ["@p1:x", "@p2:x"])
        await command(relay, "@admin:x", "!lucie stats", 1)
    finally:
        await relay.drain(5)
        await store.close()
    (text, image) = [content for _, content in port.sent]
    assert text["msgtype"] == "m.notice" and "Statistiques" in text["body"]
    assert image["msgtype"] == "m.image" and image["url"] == "mxc://x/chart"
    (uploaded,) = port.uploads
    assert image["body"] == image["filename"] == "approbation-par-version.png"
    assert image["info"] == {"mimetype": "image/png", "w": uploaded.width, "h": uploaded.height,
                             "size": len(uploaded.data)}  # fmt: skip
    assert image["m.relates_to"] == {"m.in_reply_to": {"event_id": "$c1"}}
    assert uploaded.data.startswith(PNG)


async def test_a_refused_upload_loses_the_picture_only(tmp_path, caplog):
    port = UploadingPort(refuse=True)
    relay, store = await relay_with(port, tmp_path)
    try:
        await answers_with_votes(store, ["@p1:x"])
        with caplog.at_level(logging.WARNING):
            await command(relay, "@admin:x", "!lucie stats", 1)
        await command(relay, "@admin:x", "!lucie help", 2)  # the bot carries on
    finally:
        await relay.drain(5)
        await store.close()
    assert [c["msgtype"] for _, c in port.sent] == ["m.notice", "m.notice"]
    assert "Statistiques" in port.sent[0][1]["body"] and "!lucie stats" in port.sent[1][1]["body"]
    assert "could not post a picture" in caplog.text and "M_TOO_LARGE" in caplog.text


def test_every_interval_holds_its_rate_and_a_unanimous_bar_draws():
    for total in range(1, 300):
        for up in range(total + 1):
            low, high = wilson(up, total)
            assert 0.0 <= low <= up / total <= high <= 1.0, (up, total)
    # 4 👍 of 4: the upper bound came out a hair under 100 %, and matplotlib refused the bar
    assert render(bars_of([row(0, 4, 0), row(1, 10, 0)]), "fr").data.startswith(PNG)
