"""The terminal chat's own commands, parsed from a line into what to do; nothing is sent here.

A number N names an answer as the chat numbered it ([1], [2]… as they appear); where N may be
left out, the last answer is meant (None here)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

UP, DOWN = "\U0001f44d", "\U0001f44e"  # 👍 👎
# words for the two votes, beside the reason labels the bot's configuration names
VOTE_WORDS = {"+": UP, "+1": UP, "up": UP, "-": DOWN, "-1": DOWN, "down": DOWN}
MAX_DIGITS = 6  # of an answer's number


@dataclass(frozen=True)
class Send:
    body: str


@dataclass(frozen=True)
class React:
    number: int | None
    key: str


@dataclass(frozen=True)
class Unreact:
    number: int | None
    key: str


@dataclass(frozen=True)
class Reply:
    number: int | None
    body: str


@dataclass(frozen=True)
class Upload:
    path: str


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Problem:
    """A line the chat cannot act on: a hint key (bot.demo.chat_texts) and its values."""

    key: str
    values: dict[str, object] = field(default_factory=dict)


Action = Send | React | Unreact | Reply | Upload | Help | Quit | Problem


def parse_line(line: str, prefix: str, reasons: dict[str, str]) -> Action | None:
    """What a line typed in the chat asks for; None for an empty line. `reasons` maps the reason
    emojis the bot knows to their labels, whose names are shortcuts for the emojis."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("//"):
        return Send(line[1:])  # "//x" sends "/x"
    if not line.startswith("/"):
        return Send(line)
    command, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if command in ("+", "-"):
        return _with_number(command, rest, lambda n: React(n, VOTE_WORDS[command]))
    if command in ("react", "unreact"):
        return _reaction(command, rest, reasons)
    if command == "reply":
        return _reply(command, rest, lambda text: text)
    if command == "correct":
        return _reply(command, rest, lambda text: f"{prefix} correct {text}")
    if command == "retry":
        return _with_number(command, rest, lambda n: Reply(n, f"{prefix} retry"))
    if command == "upload":
        path = rest.strip("'\"")
        return Upload(path) if path else Problem("upload_usage")
    if command == "help" and not rest:
        return Help()
    if command == "quit" and not rest:
        return Quit()
    return Problem("unknown", {"command": line.split()[0]})


def _is_number(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _number(value: str, command: str) -> int | Problem:
    """An answer's number, or the hint for a value that is none."""
    if not _is_number(value):
        return Problem("bad_number", {"value": value, "command": command})
    if len(value) > MAX_DIGITS:
        # int() refuses more than 4300 digits (and would be slow well before): no session
        # numbers that many answers anyway
        return Problem("answer_too_big")
    return int(value)


def _with_number(
    command: str, rest: str, make: Callable[[int | None], React | Reply]
) -> React | Reply | Problem:
    """One optional number, and nothing else."""
    if not rest:
        return make(None)
    number = _number(rest, command)
    return number if isinstance(number, Problem) else make(number)


def _reaction(command: str, rest: str, reasons: dict[str, str]) -> Action:
    usage = Problem(f"{command}_usage")
    words = rest.split()
    if not words or len(words) > 2:
        return usage
    number: int | None = None
    if len(words) == 2:
        found = _number(words[0], command)
        if isinstance(found, Problem):
            return found
        number = found
    elif _is_number(words[0]):
        return usage  # "/react 2": a number and no emoji
    key = reaction_key(words[-1], reasons)
    if key is None:
        names = ", ".join([*VOTE_WORDS, *reasons.values()])
        return Problem("react_unknown", {"key": words[-1], "names": names})
    return React(number, key) if command == "react" else Unreact(number, key)


def reaction_key(word: str, reasons: dict[str, str]) -> str | None:
    """The emoji a word stands for: itself when it is one, or the vote or reason it names. A
    word of letters that names nothing is a typing slip, not a key worth sending."""
    if word.lower() in VOTE_WORDS:
        return VOTE_WORDS[word.lower()]
    labels = {label.lower(): emoji for emoji, label in reasons.items()}
    if word.lower() in labels:
        return labels[word.lower()]
    if any(unicodedata.category(ch)[0] in "LN" for ch in word):
        return None
    return word


def _reply(command: str, rest: str, body: Callable[[str], str]) -> Reply | Problem:
    """N is required: a text may itself start with a number."""
    first, _, text = rest.partition(" ")
    if not rest or (_is_number(first) and not text.strip()):
        return Problem("reply_usage", {"command": command})
    number = _number(first, command)
    return number if isinstance(number, Problem) else Reply(number, body(text.strip()))
