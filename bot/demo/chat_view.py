"""How the terminal chat shows what the bot says, and numbers its answers as they appear.

Two modes, chosen once: on a terminal, an answer is shown as soon as it starts, rendered from
Markdown (rich), and redrawn in place as the bot's edits make it grow; when something else was
printed below it since (or it no longer fits on the screen), its final version is printed again
instead. Anywhere else (a pipe, a file, a test), each message is printed once, as plain text,
when final, so that scripts read whole answers."""

from __future__ import annotations

import shutil
import unicodedata
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.markdown import Markdown
from rich.text import Text

from bot.core.render import LIVE_MARKER
from bot.demo.chat_texts import hint

# ANSI: to the start of the line N rows up, then erase from there to the end of the screen
REDRAW = "\x1b[{rows}F\x1b[J"
WRITING = " …"  # after the header of an answer still streaming
REPLACEMENT = "\ufffd"


def printable(text: str) -> str:
    """Text from the room, made harmless to a terminal. A message (the model's output, which a
    prompt injection steers, or a member's words the bot repeats) could otherwise carry escape
    sequences: ESC and the C1 codes (0x80-0x9F) start them, and they can clear the screen,
    move the cursor, retitle the window or write the clipboard (OSC 52). Control characters
    become a visible U+FFFD so that something is seen to be there; format characters (bidi
    overrides, zero-width) go, as they would make the text read otherwise than it is; lone
    surrogates, which valid JSON can carry, would make printing fail."""
    text = text.replace("\r\n", "\n")
    return "".join(
        char if char.isprintable() or char in "\n\t" else _unprintable(char) for char in text
    )


def _unprintable(char: str) -> str:
    category = unicodedata.category(char)
    if category in ("Cc", "Cs"):
        return REPLACEMENT
    if category == "Cf":
        return ""
    return char  # spaces other than " ", private use, unassigned: harmless as they are


@dataclass
class Shown:
    """One message of the bot as the chat shows it."""

    event_id: str
    number: int | None  # answers only; notices are not numbered
    body: str
    final: bool
    label: str = "notice"  # the hint naming what is not an answer
    rows: int = 0  # terminal rows of its last drawing; 0: never drawn
    width: int = 0  # the terminal's width then
    printed: str | None = None  # the body last printed in plain mode


class Transcript:
    def __init__(
        self,
        bot_id: str,
        out: TextIO,
        terminal: bool,
        lang: str = "fr",
        size: tuple[int, int] | None = None,
    ) -> None:
        self.bot_id = bot_id
        self.out = out
        self.terminal = terminal
        self.lang = lang
        self.size = size  # (columns, rows) for tests; a real terminal is asked each time
        self.messages: dict[str, Shown] = {}
        self.answers: list[str] = []  # event ids; answer [n] is answers[n - 1]
        self.last: Shown | None = None  # what ends the screen, if the chat drew it last
        self.console = Console(file=out, force_terminal=terminal, highlight=False, emoji=False)

    # numbering
    def answer_id(self, number: int) -> str | None:
        return self.answers[number - 1] if 1 <= number <= len(self.answers) else None

    # what else the chat prints
    def say(self, text: str) -> None:
        """A line of the chat's own (hints, help): printed below whatever is there."""
        self.last = None
        # hints may quote the homeserver (its error texts) or a file's name
        print(printable(text), file=self.out, flush=True)

    def typed(self) -> None:
        """The person pressed Enter: the terminal echoed their line below the last drawing."""
        self.last = None

    # the bot's events
    def show(self, event: dict[str, Any]) -> None:
        content = event.get("content")
        event_id = event.get("event_id")
        if event.get("sender") != self.bot_id or not isinstance(content, dict):
            return
        if event.get("type", "m.room.message") != "m.room.message":
            return
        relation = content.get("m.relates_to")
        if isinstance(relation, dict) and relation.get("rel_type") == "m.replace":
            event_id, content = relation.get("event_id"), content.get("m.new_content")
            if not isinstance(content, dict):
                return
        body = content.get("body")
        if not isinstance(event_id, str) or not isinstance(body, str):
            return
        body = printable(body)
        final = LIVE_MARKER not in content
        shown = self.messages.get(event_id)
        if shown is None:
            number, kind = None, content.get("msgtype")
            if kind == "m.text":  # answers; notices, and files such as the stats' charts, aside
                self.answers.append(event_id)
                number = len(self.answers)
            label = "notice" if kind == "m.notice" else "file"
            shown = self.messages[event_id] = Shown(event_id, number, body, final, label)
        elif shown.final and not final:
            return  # an edit that arrived late: the final text is already known
        else:
            shown.body, shown.final = body, final
        self._update(shown)

    def _update(self, shown: Shown) -> None:
        if not self.terminal:
            if shown.final and shown.printed != shown.body:
                shown.printed = shown.body
                print(f"\n{self._label(shown)}: {shown.body}\n", file=self.out, flush=True)
            return
        width, height = self._size()
        in_place = self.last is shown and shown.width == width and 0 < shown.rows < height
        if in_place:
            self.out.write(REDRAW.format(rows=shown.rows))
        elif shown.rows and not shown.final:
            return  # something came below it: its final version will be printed again
        rendered = self._render(shown, width)
        self.out.write(rendered)
        self.out.flush()
        shown.rows, shown.width = rendered.count("\n"), width
        self.last = shown

    def _label(self, shown: Shown) -> str:
        return f"Lucie [{shown.number}]" if shown.number else hint(self.lang, shown.label)

    def _render(self, shown: Shown, width: int) -> str:
        self.console.width = width
        header = Text(self._label(shown), style="bold cyan" if shown.number else "bold")
        if not shown.final:
            header.append(WRITING, style="dim")
        with self.console.capture() as capture:
            self.console.print()
            self.console.print(header)
            # a link shows its target, as "text (url)": a terminal hyperlink would hide it
            self.console.print(Markdown(shown.body, hyperlinks=False))
        return capture.get()

    def _size(self) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        size = shutil.get_terminal_size()
        return size.columns, size.lines
