"""A question's rows as JSONL lines, the bytes `json.dumps(row, ensure_ascii=False)` makes."""

from __future__ import annotations

import json
from collections.abc import Callable

from bot.export.formats import BUILDERS, RowMaker, openwebui_parts
from bot.export.source import Answer

# json.dumps(row, ensure_ascii=False) without making an encoder for every row
encode: Callable[[object], str] = json.JSONEncoder(ensure_ascii=False).encode

Lines = Callable[[RowMaker, list[Answer]], list[str]]


def lines_of(name: str) -> Lines:
    if name == "openwebui":
        return _openwebui_lines
    build = BUILDERS[name]
    return lambda maker, group: [encode(row) + "\n" for row in build(maker, group)]


def _openwebui_lines(maker: RowMaker, group: list[Answer]) -> list[str]:
    """Each vote's record repeats its answer's chat (two thirds of its bytes): the chat is
    encoded once per answer and put between the vote's own keys as text. With the default
    separators, {"a": 1, "s": S, "b": 2} is "{"a": 1" + ", "s": " + S + ", " + "\"b\": 2}"."""
    lines: list[str] = []
    chat: object = None
    snapshot = ""
    for messages, head, tail in openwebui_parts(maker, group):
        if messages is not chat:
            chat, snapshot = messages, encode({"chat": {"messages": messages}})
        lines.append(f'{encode(head)[:-1]}, "snapshot": {snapshot}, {encode(tail)[1:]}\n')
    return lines
