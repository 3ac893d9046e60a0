"""Generated hostile events, and an independent check that HTML is what Matrix clients accept."""

from __future__ import annotations

import random
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

HOSTILE_OUTPUT = (
    "Voici <script>alert('x')</script> et [un lien](javascript:alert(1)) "
    '<img src=x onerror=alert(1)> <a href="jAvAsCrIpT:alert(2)">clic</a> '
    '<iframe src=https://evil.example></iframe> <div style="position:fixed">cadre</div> '
    "![pistage](https://evil.example/p.png) <b><i><u>gras</u></i></b> "
    "<svg onload=alert(3)></svg> <a href='data:text/html,<script>x</script>'>d</a> "
    "[bon lien](https://example.org) <details open ontoggle=alert(4)><summary>s</summary>"
    "</details> fin"
)

WEIRD_TEXT = [
    "\u202eRTL override\u202c",
    "zero\u200bwidth\u200djoiner\ufeff",
    "e" + "\u0301" * 500,
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" * 50,
    "\x00nul\x01\x1f",
    "\ud7ff\ue000\uffff",
    "𝕳𝖔𝖘𝖙𝖎𝖑𝖊 " * 30,
    "<b>unclosed <i>tags <u>",
    "&lt;script&gt; &#x6a;avascript: &amp;&amp;",
    "```\ncode jamais fermé",
    "| a | b |\n|---|---|\n| <script> | x |",
    "[lien](javascript:alert(1))",
    "> " * 200 + "citation profonde",
    "- " * 300 + "liste",
    "\n" * 2000,
]

COMMANDS = [
    "!lucie",
    "!lucie ",
    "!lucie\u00a0help",
    "!LUCIE HELP",
    "!lucie prompt",
    "!lucie prompt show",
    "!lucie prompt history",
    "!lucie prompt set",
    "!lucie mode",
    "!lucie mode tout",
    "!lucie lang xx",
    "!lucie consent peut-être",
    "!lucie forget",
    "!lucie correct",
    "!lucie retry",
    "!lucie collect maybe",
    "!lucie \x00",
    "!lucie 🤖",
]


class Fuzzer:
    def __init__(self, seed: int, bot_id: str, bot_name: str) -> None:
        self.random = random.Random(seed)
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.known_events: list[str] = []  # ids in this room, for relations
        self.foreign_events: list[str] = []  # ids in another room

    def _text(self) -> Any:
        r = self.random
        roll = r.random()
        if roll < 0.25:
            return r.choice(WEIRD_TEXT)
        if roll < 0.30:
            return "x" * r.randint(10_000, 60_000)  # near Synapse's 64 KiB event limit
        if roll < 0.40:
            return r.choice([42, None, [], {"a": 1}, True, 3.5, ["texte"]])
        words = ["bonjour", "ça", "va", "<b>", "**gras**", "`code`", "é", "🙂", "\t", "<", "&"]
        return " ".join(r.choice(words) for _ in range(r.randint(1, 30)))

    def _relation(self) -> Any:
        r = self.random
        target = r.choice(
            [
                "$missing:localhost",
                "$" + "y" * 300,
                42,
                None,
                *self.known_events[-50:],
                *self.foreign_events,
            ]
        )
        return r.choice(
            [
                {"m.in_reply_to": {"event_id": target}},
                {"rel_type": "m.thread", "event_id": target, "is_falling_back": True},
                {"rel_type": "m.thread", "event_id": target, "m.in_reply_to": "nope"},
                {"rel_type": "m.replace", "event_id": target},
                {"rel_type": "m.annotation", "event_id": target, "key": "👍"},
                "garbage",
                [target],
                {"m.in_reply_to": {"event_id": {"nested": target}}},
            ]
        )

    def _html(self) -> str:
        r = self.random
        depth = r.randint(1, 400)
        return r.choice(
            [
                "<b>" * depth + "profond" + "</b>" * r.randint(0, depth),
                "<script>alert(1)</script><mx-reply><blockquote>faux</blockquote></mx-reply>",
                "<a href='javascript:alert(1)'>x</a><img src=x onerror=alert(1)>",
                "<table><tr><td><table><tr><td>" * 50,
                "<" * 1000,
                HOSTILE_OUTPUT,
            ]
        )

    def event(self) -> tuple[str, dict[str, Any]]:
        r = self.random
        roll = r.random()
        if roll < 0.55:
            content: dict[str, Any] = {"msgtype": "m.text", "body": self._text()}
            if r.random() < 0.3:
                content["format"] = r.choice(["org.matrix.custom.html", "text/html", 7])
                content["formatted_body"] = self._html()
            if r.random() < 0.3:
                content["m.relates_to"] = self._relation()
            if r.random() < 0.2:
                content["m.mentions"] = r.choice(
                    [{"user_ids": 5}, {"user_ids": [None, 3]}, "all", {"room": "yes"}]
                )
            if r.random() < 0.1:
                content["msgtype"] = r.choice(["m.notice", "m.emote", "m.image", "", 9, None])
            if r.random() < 0.1:
                content["m.new_content"] = r.choice([{"body": 1}, "x", {"msgtype": "m.text"}])
            return "m.room.message", content
        if roll < 0.62:  # addressed to the bot: answered, with whatever the body holds
            body = f"{self.bot_name}: {r.choice(WEIRD_TEXT)}"
            if r.random() < 0.3:
                body = f"{self.bot_name}: HOSTILE_OUTPUT {r.choice(WEIRD_TEXT)}"
            content = {"msgtype": "m.text", "body": body, "m.mentions": {"user_ids": [self.bot_id]}}
            if r.random() < 0.3:
                content["m.relates_to"] = self._relation()
            return "m.room.message", content
        if roll < 0.66:
            command = r.choice(COMMANDS) + r.choice(["", " " + str(self._text())[:2000]])
            return "m.room.message", {"msgtype": "m.text", "body": command}
        if roll < 0.82:
            target = r.choice(["$unknown:localhost", 7, None, *self.known_events[-30:]])
            key = r.choice(["👍", "👎️", "👎🏽", "🔁", "✅", "❌", "x" * 200, None, 5, "👍" * 50])
            relation = {"rel_type": r.choice(["m.annotation", "m.reference", 3]), "key": key}
            return "m.reaction", {"m.relates_to": {**relation, "event_id": target}}
        if roll < 0.90:
            target = r.choice(["$unknown:localhost", *self.known_events[-30:]])
            return "m.room.redaction", {"redacts": target, "reason": self._text()}
        kind = r.choice(["org.example.custom", "m.room.encrypted", "m.call.invite", "m.sticker"])
        return kind, {"anything": self._text(), "algorithm": r.choice(["x", 1, None])}


# The Matrix spec's allow-list for org.matrix.custom.html, written here independently of the bot.
SPEC_TAGS = {
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
    "sub", "li", "b", "i", "u", "strong", "em", "s", "strike", "code", "hr", "br", "div",
    "table", "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "img", "details",
    "summary", "mx-reply",
}  # fmt: skip
SPEC_ATTRIBUTES = {
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"},
    "div": {"data-mx-maths"},
    "a": {"name", "target", "href"},
    "img": {"width", "height", "alt", "title", "src"},
    "ol": {"start"},
    "code": {"class"},
}
LINK_SCHEMES = {"http", "https", "ftp", "mailto", "magnet"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in SPEC_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name not in SPEC_ATTRIBUTES.get(tag, set()):
                self.problems.append(f"attribute {name} on <{tag}>")
            elif tag == "a" and name == "href":
                scheme = urlsplit((value or "").strip()).scheme.lower()
                if scheme and scheme not in LINK_SCHEMES:
                    self.problems.append(f"link scheme {scheme}")
            elif tag == "img" and name == "src" and not (value or "").startswith("mxc://"):
                self.problems.append(f"image source {value!r}")


def html_problems(html: str) -> list[str]:
    """What a client following the spec would refuse in this HTML (empty when clean)."""
    checker = _Checker()
    checker.feed(html)
    checker.close()
    return checker.problems
