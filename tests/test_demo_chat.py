"""The demo's terminal chat without servers: its commands parsed, what they send (through a
stand-in client), the answers numbered and shown in both modes, its language."""

from __future__ import annotations

import io
import re
import unicodedata
from typing import Any

import pytest
from nio import RoomRedactResponse, RoomSendError, RoomSendResponse, UploadResponse

from bot.config import DEFAULT_REASONS
from bot.core.render import LIVE_MARKER, edit_content, message_content
from bot.demo.chat import Chat, ChatOptions
from bot.demo.chat_commands import (
    DOWN,
    UP,
    Help,
    Problem,
    Quit,
    React,
    Reply,
    Send,
    Unreact,
    Upload,
    parse_line,
)
from bot.demo.chat_texts import HINTS, help_text, lang_set_by
from bot.demo.chat_view import REDRAW, Transcript
from bot.texts import say

BOT, ROOM = "@lucie:localhost", "!room:localhost"


def parse(line: str) -> Any:
    return parse_line(line, "!lucie", DEFAULT_REASONS)


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("/react 2 👍", React(2, UP)),
        ("/react 👎", React(None, DOWN)),  # no number: the last answer
        ("/react 3 +", React(3, UP)),
        ("/react 1 too_long", React(1, "✂️")),  # a reason by its label
        ("/react 1 ❌", React(1, "❌")),
        ("/react 1 🦄", React(1, "🦄")),  # any emoji goes, as in any client
        ("/react -1", React(None, DOWN)),  # the vote "-1", not answer -1
        ("/+ 2", React(2, UP)),
        ("/-", React(None, DOWN)),
        ("/unreact 2 👍", Unreact(2, UP)),
        ("/unreact accurate", Unreact(None, "🎯")),
        ("/reply 2 !lucie sources", Reply(2, "!lucie sources")),
        ("/correct 1 La bonne réponse", Reply(1, "!lucie correct La bonne réponse")),
        ("/retry 4", Reply(4, "!lucie retry")),
        ("/retry", Reply(None, "!lucie retry")),
        ("/upload '/tmp/a b.pdf'", Upload("/tmp/a b.pdf")),
        ("/help", Help()),
        ("/quit", Quit()),
        ("Bonjour Lucie", Send("Bonjour Lucie")),
        ("//react is a word", Send("/react is a word")),  # "//" sends a leading slash
        ("   ", None),
    ],
)
def test_lines_become_actions(line, action):
    assert parse(line) == action


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("/react", "react_usage"),
        ("/react 2", "react_usage"),  # a number, no emoji
        ("/react 1 2 3", "react_usage"),
        ("/react x 👍", "bad_number"),
        ("/react -1 👍", "bad_number"),
        ("/react 1 merci", "react_unknown"),  # a word that names no reason: a slip
        ("/+ deux", "bad_number"),
        ("/- 1.5", "bad_number"),
        ("/unreact", "unreact_usage"),
        ("/reply", "reply_usage"),
        ("/reply 2", "reply_usage"),  # no text
        ("/reply two words", "bad_number"),  # N is required: a text may start with a number
        ("/correct 1", "reply_usage"),
        ("/retry last", "bad_number"),
        ("/upload", "upload_usage"),
        ("/nope", "unknown"),
        ("/help me", "unknown"),
    ],
)
def test_lines_it_cannot_act_on_say_why(line, key):
    problem = parse(line)
    assert isinstance(problem, Problem) and problem.key == key
    for lang in ("fr", "en"):  # each hint is worded in both languages
        assert HINTS[lang][problem.key]


def test_every_hint_and_the_help_exist_in_both_languages():
    assert HINTS["fr"].keys() == HINTS["en"].keys()
    for lang, words in (("fr", "Commandes du terminal"), ("en", "Terminal commands")):
        text = help_text(lang, "!lucie", DEFAULT_REASONS)
        assert words in text and "/react N EMOJI" in text and "/correct N" in text
        assert all(emoji in text for emoji in DEFAULT_REASONS)


def test_the_bots_confirmation_of_a_language_is_what_switches_the_chat():
    assert lang_set_by(say("en", "cmd.lang.set")) == "en"
    assert lang_set_by(say("fr", "cmd.lang.set")) == "fr"
    assert lang_set_by("!lucie lang en") is None  # the request alone proves nothing
    assert lang_set_by(say("fr", "cmd.lang.usage", prefix="!lucie")) is None


# the bot's events, as the chat receives them


def message(event_id: str, text: str, live: bool = False, notice: bool = False) -> dict:
    content = message_content(text, msgtype="m.notice" if notice else "m.text", live=live)
    return {"type": "m.room.message", "sender": BOT, "event_id": event_id, "content": content}


def edit(event_id: str, target: str, text: str, live: bool = False) -> dict:
    content = edit_content(target, text, live=live)
    return {"type": "m.room.message", "sender": BOT, "event_id": event_id, "content": content}


def test_not_on_a_terminal_each_message_is_printed_once_when_final():
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=False)
    transcript.show(message("$a", "Bon", live=True))
    transcript.show(edit("$e1", "$a", "Bonjour", live=True))
    assert out.getvalue() == ""  # nothing while it streams
    transcript.show(edit("$e2", "$a", "Bonjour **à vous**."))
    transcript.show(edit("$e2", "$a", "Bonjour **à vous**."))  # the same final text again
    transcript.show(message("$n", "Merci : votre accord est enregistré.", notice=True))
    chart = message("$i", "approval-per-version.png")
    chart["content"]["msgtype"] = "m.image"  # as `!lucie stats` sends its chart
    transcript.show(chart)
    transcript.show(message("$b", "Seconde réponse."))  # not streamed: final at once
    assert out.getvalue() == (
        "\nLucie [1]: Bonjour **à vous**.\n\n"  # the Markdown as written: scripts read it
        "\nLucie (notice): Merci : votre accord est enregistré.\n\n"
        "\nLucie (fichier): approval-per-version.png\n\n"
        "\nLucie [2]: Seconde réponse.\n\n"
    )
    assert "\x1b" not in out.getvalue()
    assert transcript.answers == ["$a", "$b"]  # notices are not numbered
    # a final answer changed later (say replaced by a refusal) is printed again
    transcript.show(edit("$e3", "$a", "Réponse retirée."))
    assert out.getvalue().endswith("\nLucie [1]: Réponse retirée.\n\n")


def test_not_the_bots_events_and_late_live_edits_are_left_alone():
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=False)
    transcript.show({**message("$x", "moi"), "sender": "@demo:localhost"})
    transcript.show({"type": "m.reaction", "sender": BOT, "event_id": "$r", "content": {}})
    transcript.show(message("$a", "Fin."))
    transcript.show(edit("$late", "$a", "Fi", live=True))  # arrived after the final one
    assert out.getvalue() == "\nLucie [1]: Fin.\n\n" and transcript.answers == ["$a"]


def rows_drawn(text: str) -> list[str]:
    return text.split("\n")


def test_on_a_terminal_a_growing_answer_is_redrawn_in_place():
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=True, size=(60, 30))
    transcript.show(message("$a", "Paris", live=True))
    first = out.getvalue()
    assert "Lucie [1]" in first and " …" in first and "Paris" in first  # shown at once
    assert "\x1b[" in first  # styled
    transcript.show(edit("$e1", "$a", "Paris est la **capitale**", live=True))
    transcript.show(edit("$e2", "$a", "Paris est la **capitale** de la France."))
    drawn = out.getvalue()
    rows = first.count("\n")
    # each redraw climbs back over the rows drawn before and clears them
    assert drawn.count(REDRAW.format(rows=rows)) == 2
    final = drawn.rsplit("\x1b[J", 1)[1]
    assert " …" not in final and "capitale" in final and "**" not in final  # rendered


def test_on_a_terminal_an_answer_with_lines_below_is_printed_again_when_final():
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=True, size=(60, 30))
    transcript.show(message("$a", "Un", live=True))
    transcript.typed()  # the person pressed Enter: their line is below the answer now
    transcript.show(edit("$e1", "$a", "Un deux", live=True))
    assert "deux" not in out.getvalue()  # not drawn over the person's line
    transcript.say("👍 envoyé sur la réponse [1].")
    transcript.show(edit("$e2", "$a", "Un deux trois."))
    drawn = out.getvalue()
    assert "\x1b[J" not in drawn and "F\x1b" not in drawn  # no cursor moved up
    assert drawn.count("Lucie [1]") == 2 and drawn.endswith("Un deux trois.".ljust(60) + "\n")


def test_on_a_terminal_an_answer_taller_than_the_screen_is_not_redrawn():
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=True, size=(40, 6))
    long = "\n\n".join(f"Paragraphe {n}." for n in range(5))
    transcript.show(message("$a", long, live=True))
    transcript.show(edit("$e1", "$a", long + "\n\nSuite", live=True))
    assert "Suite" not in out.getvalue() and "\x1b[J" not in out.getvalue()
    transcript.show(edit("$e2", "$a", long + "\n\nSuite et fin."))
    assert out.getvalue().count("Lucie [1]") == 2 and "Suite et fin." in out.getvalue()


def test_two_answers_streaming_together_each_reach_the_screen():
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=True, size=(60, 30))
    transcript.show(message("$a", "Premier", live=True))
    transcript.show(message("$b", "Second", live=True))
    transcript.show(edit("$e1", "$a", "Premier fini."))  # [2] is below it: printed again
    transcript.show(edit("$e2", "$b", "Second fini."))  # and now [1] is below [2]
    text = out.getvalue()
    assert "Premier fini." in text and "Second fini." in text and "\x1b[J" not in text
    assert text.count("Lucie [1]") == 2 and text.count("Lucie [2]") == 2
    assert transcript.answers == ["$a", "$b"]


# the chat's actions, through a stand-in client


class FakeRoom:
    encrypted = False


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.redacted: list[str] = []
        self.rooms = {ROOM: FakeRoom()}
        self.olm = None
        self.refuse = False

    async def room_send(self, room_id: str, kind: str, content: dict, **_: Any) -> Any:
        if self.refuse:
            return RoomSendError("M_FORBIDDEN: no")
        self.sent.append((kind, content))
        return RoomSendResponse(f"$sent{len(self.sent)}", room_id)

    async def room_redact(self, room_id: str, event_id: str) -> Any:
        self.redacted.append(event_id)
        return RoomRedactResponse(f"$redaction{len(self.redacted)}", room_id)


def chat_with(answers: int, lang: str = "fr") -> tuple[Chat, FakeClient, io.StringIO]:
    client, out = FakeClient(), io.StringIO()
    transcript = Transcript(BOT, out, terminal=False, lang=lang)
    for n in range(1, answers + 1):
        transcript.show(message(f"$answer{n}", f"Réponse {n}"))
    return Chat(client, ROOM, ChatOptions(BOT), transcript), client, out  # a stand-in client


async def test_reactions_go_to_the_answer_numbered_and_can_be_taken_back():
    chat, client, _ = chat_with(2)
    assert await chat.handle("/react 1 👍") == "👍 envoyé sur la réponse [1]."
    assert client.sent[-1] == (
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$answer1", "key": UP}},
    )
    assert await chat.handle("/+") == "👍 envoyé sur la réponse [2]."  # the last answer
    assert client.sent[-1][1]["m.relates_to"]["event_id"] == "$answer2"
    assert await chat.handle("/react 1 👍️") == "Vous avez déjà réagi 👍️ à la réponse [1]."
    assert len(client.sent) == 2  # not sent twice
    assert await chat.handle("/react 2 missing_sources") == "📚 envoyé sur la réponse [2]."
    # taking one back redacts the reaction event sent for it, and only that one
    assert await chat.handle("/unreact 1 👍") == "Réaction 👍 retirée de la réponse [1]."
    assert client.redacted == ["$sent1"]
    assert "n'avez pas réagi" in (await chat.handle("/unreact 1 👍") or "")
    assert "n'avez pas réagi" in (await chat.handle("/unreact 2 👎") or "")
    assert await chat.handle("/react 1 👍") == "👍 envoyé sur la réponse [1]."  # again, anew


async def test_replies_carry_the_relation_the_bot_reads_and_no_fallback():
    chat, client, _ = chat_with(2)
    assert await chat.handle("/correct 2 Mieux ainsi.") == ""
    kind, content = client.sent[-1]
    assert kind == "m.room.message" and content == {
        "msgtype": "m.text",
        "body": "!lucie correct Mieux ainsi.",
        "m.mentions": {"user_ids": [BOT]},
        "m.relates_to": {"m.in_reply_to": {"event_id": "$answer2"}},
    }
    assert await chat.handle("/retry") == ""
    assert client.sent[-1][1]["body"] == "!lucie retry"
    assert client.sent[-1][1]["m.relates_to"]["m.in_reply_to"]["event_id"] == "$answer2"
    assert await chat.handle("Une question") == ""
    assert client.sent[-1][1] == {"msgtype": "m.text", "body": "Une question", "m.mentions": {}}


async def test_numbers_that_name_no_answer_are_refused_in_the_rooms_language():
    chat, client, _ = chat_with(0)
    assert await chat.handle("/react 👍") == HINTS["fr"]["answer_none"]
    chat, client, _ = chat_with(2)
    assert await chat.handle("/react 3 👍") == (
        "Pas de réponse [3] : les réponses vont de [1] à [2]."
    )
    assert "Pas de réponse [0]" in (await chat.handle("/retry 0") or "")
    assert await chat.handle("/reply 1") == (
        "Usage : /reply N TEXTE (par exemple /reply 1 Pouvez-vous préciser ?)"
    )
    chat, client, _ = chat_with(2, lang="en")
    assert await chat.handle("/+ 5") == "No answer [5]: answers go from [1] to [2]."
    assert await chat.handle("/- x") == "“x” is not an answer number: /- N …"
    assert (await chat.handle("/help") or "").startswith("Terminal commands")
    assert client.sent == []
    assert await chat.handle("/quit") is None


async def test_a_refused_send_is_said():
    chat, client, _ = chat_with(1)
    client.refuse = True
    assert (await chat.handle("/+ 1") or "").startswith("Refusé par le serveur")
    assert (await chat.handle("Bonjour") or "").startswith("Message refusé")


def test_the_chat_learns_the_rooms_language_from_the_bots_confirmation():
    chat, _, out = chat_with(0)

    class Event:
        def __init__(self, source: dict) -> None:
            self.source = source

    chat.on_event(Event(message("$n", say("en", "cmd.lang.set"), notice=True)))
    assert chat.lang == "en"
    # the same words from someone else, or not as a notice, change nothing
    chat.on_event(
        Event({**message("$p", say("fr", "cmd.lang.set"), notice=True), "sender": "@x:y"})
    )
    chat.on_event(Event(message("$q", say("fr", "cmd.lang.set"))))
    assert chat.lang == "en"
    assert "Lucie (notice): Room language: English." in out.getvalue()
    chat.on_event(Event(message("$r", say("fr", "cmd.lang.set"), notice=True)))
    assert chat.lang == "fr"


def test_the_live_marker_is_the_one_the_bot_sends():
    assert LIVE_MARKER in message_content("x", live=True)


# what reaches the terminal from the room

HOSTILE = [
    "\x1b]52;c;cHduZWQ=\x1b\\",  # OSC 52: writes the clipboard
    "\x1b[2J",  # clears the screen
    "\x9b2J",  # the same with a single-byte CSI (C1)
    "\x1b]0;pwned\x07after",  # retitles the window (and, BEL dropped, swallows what follows)
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "\x1b[5A",  # cursor up, over earlier lines
    "`\x1b[2J in code`",
    "[docs](https://evil.example/x)",  # a Markdown link: its target must show
    "bidi \u202eevil\u202c zero\u200bwidth \u2066x\u2069",
    "lone \ud800 surrogate",  # valid JSON can carry one; printing it would fail
]
# the only sequences the chat itself writes: SGR styles (rich) and its redraw (REDRAW)
OWN_SEQUENCES = re.compile(r"\x1b\[[0-9;]*m|\x1b\[[0-9]+F\x1b\[J")


def raw(event_id: str, body: str, msgtype: str = "m.text") -> dict:
    """An event as a hostile sender may write it (message_content would refuse a surrogate)."""
    content = {"msgtype": msgtype, "body": body}
    return {"type": "m.room.message", "sender": BOT, "event_id": event_id, "content": content}


def assert_harmless(text: str) -> None:
    left = OWN_SEQUENCES.sub("", text)
    assert "\x1b" not in left, repr(left)
    assert not [char for char in left if 0x80 <= ord(char) <= 0x9F or char == "\x07"]
    assert not [char for char in left if unicodedata.category(char) in ("Cf", "Cs")]
    assert not [char for char in left if unicodedata.category(char) == "Cc" and char != "\n"]
    left.encode("utf-8")  # what a UTF-8 terminal is sent


@pytest.mark.parametrize("terminal", [False, True])
def test_escape_sequences_from_the_room_never_reach_the_terminal(terminal):
    out = io.StringIO()
    transcript = Transcript(BOT, out, terminal=terminal, size=(60, 30))
    transcript.show(raw("$a", "\n\n".join(HOSTILE)))
    transcript.show(raw("$n", "Commande inconnue : !lucie \x1b]52;c;eA==\x07", "m.notice"))
    # a streamed answer whose edits carry them too, redrawn in place
    live = raw("$l", "\x1b[5Avite")
    live["content"][LIVE_MARKER] = True
    transcript.show(live)
    transcript.show(edit("$e", "$l", "\x1b[2J\x1b[H fini"))
    transcript.say("Refusé par le serveur : M_FORBIDDEN \x1b]0;titre\x1b\\")  # a homeserver's
    text = out.getvalue()
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x1b[5A" not in text
    assert_harmless(text)
    assert "https://evil.example/x" in text  # the link's target is shown, not hidden
    assert "cHduZWQ=" in text and "after" in text and "fini" in text  # the words stay
    if terminal:  # the chat's own cursor moves are still there: the answer redrawn in place
        assert re.search(r"\x1b\[[0-9]+F\x1b\[J", text)


async def test_a_refusal_quoting_the_homeserver_is_cleaned_too():
    chat, client, out = chat_with(1)

    async def room_send(*_: Any, **__: Any) -> Any:
        return RoomSendError("M_FORBIDDEN: \x1b]52;c;cHduZWQ=\x1b\\ \x9b2J")

    client.room_send = room_send
    chat.transcript.say(await chat.handle("Bonjour") or "")
    text = out.getvalue()
    assert "Message refusé" in text and "cHduZWQ=" in text
    assert_harmless(text)


def test_an_answer_number_too_long_for_int_is_no_answer():
    many = "9" * 5000  # more digits than int() accepts
    for line in (f"/+ {many}", f"/react {many} 👍", f"/reply {many} texte", f"/retry {many}"):
        assert parse(line) == Problem("answer_too_big"), line
    assert parse("/+ 999999") == React(999999, UP)  # six digits still read


async def test_a_number_too_long_is_said_in_the_rooms_language():
    chat, client, _ = chat_with(1, lang="en")
    assert await chat.handle("/- " + "1" * 5000) == "No answer has so large a number."
    assert client.sent == []


async def test_a_file_shared_in_an_encrypted_room_goes_up_without_its_name(tmp_path):
    chat, client, _ = chat_with(0)
    client.rooms[ROOM].encrypted = True
    uploads: list[dict[str, Any]] = []

    async def upload(provide: Any, **options: Any) -> tuple[Any, None]:
        uploads.append({"data": provide(0, 0).read(), **options})
        return UploadResponse("mxc://localhost/1"), None

    client.upload = upload
    secret = tmp_path / "diagnostic-de-bob.txt"
    secret.write_text("confidentiel")
    assert "chiffré" in await chat.handle(f"/upload {secret}")
    (sent,) = uploads
    assert sent["filename"] is None and b"confidentiel" not in sent["data"]
    assert client.sent[0][1]["body"] == secret.name  # named in the encrypted event only
