"""Pseudonymous ids and text scrubbing for exported rows."""

from __future__ import annotations

import hashlib
import hmac
import re

# Order matters: Matrix ids and URLs before e-mails, e-mails before phone numbers.
_PATTERNS = [
    (re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE), "<URL>"),
    (re.compile(r"[@!#$][\w.=\-/+]+:[\w.\-]+(?::\d+)?"), "<MATRIX_ID>"),
    (re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), "<EMAIL>"),
    (
        re.compile(r"(?<!\w)(?:\+\d{1,3}[ .\-]?)?(?:\(?\d{1,4}\)?[ .\-]?){2,5}\d{2,4}(?!\w)"),
        "<PHONE>",
    ),
]
_MIN_PHONE_DIGITS = 8


class Pseudonyms:
    """Keyed hashes: stable across exports with the same secret, useless without it."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")

    def of(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}_{digest[:20]}"


class NameMask:
    """People's display names and user-id localparts, replaced in every exported text: a model
    told who speaks in a group room may repeat a name in its answer.

    Names are indexed by their first word, so a text is scanned once whatever the number of
    people (a regular expression with thousands of alternatives is tried at every character)."""

    MIN_LENGTH = 3

    def __init__(self, names: set[str]) -> None:
        self._by_word: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            first = _WORD.search(name)
            if len(name) < self.MIN_LENGTH or first is None:
                continue
            entry = (first.start(), name.lower())
            self._by_word.setdefault(first.group(0).lower(), []).append(entry)
        for entries in self._by_word.values():
            entries.sort(key=lambda entry: -len(entry[1]))  # the longest name wins

    def __call__(self, text: str) -> str:
        if not self._by_word:
            return text
        lowered, spans, end = text.lower(), [], 0
        if len(lowered) != len(text):  # "İ" lowers to two characters: keep offsets aligned
            lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        for word in _WORD.finditer(lowered):
            for offset, name in self._by_word.get(word.group(0), ()):
                start = word.start() - offset
                stop = start + len(name)
                if start < end or not lowered.startswith(name, start):
                    continue
                if _is_word(lowered, start - 1) or _is_word(lowered, stop):
                    continue
                spans.append((start, stop))
                end = stop
                break
        if not spans:
            return text
        pieces, cursor = [], 0
        for start, stop in spans:
            pieces += [text[cursor:start], "<NAME>"]
            cursor = stop
        return "".join([*pieces, text[cursor:]])


_WORD = re.compile(r"\w+")


def _is_word(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")


def scrub(text: str) -> str:
    for pattern, placeholder in _PATTERNS:
        if placeholder == "<PHONE>":
            text = pattern.sub(_phone, text)
        else:
            text = pattern.sub(placeholder, text)
    return text


def _phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "<PHONE>" if digits >= _MIN_PHONE_DIGITS else match.group(0)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
