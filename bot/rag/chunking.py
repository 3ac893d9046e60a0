"""Passages cut along the document's own structure. A passage never spans two sections or two
pages, so that what it cites (a page, a heading) is true of all its text; within one, whole
paragraphs are packed up to the target size. Only a paragraph longer than the target is cut,
at sentence ends (at spaces for an endless sentence), and its pieces overlap so that a fact
straddling a cut is whole in at least one of them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from bot.rag.documents import Block, Passage

# Control and invisible characters extraction leaves behind (PDF hyphen marks, zero widths).
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\xad\u200b-\u200d\u2060\ufeff\ufffe]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'»”’)\]])\s+")


Place = tuple[int | None, str | None]  # (page, section)
# A heading is a line: one made of a whole chapter (or of line breaks that would step out of
# the sources' fences and lists) is cut to this, on one line.
MAX_SECTION_CHARS = 200


def section_title(section: str | None) -> str | None:
    if section is None:
        return None
    flat = " ".join(_INVISIBLE.sub("", section).split())
    return flat[:MAX_SECTION_CHARS] or None


def split_passages(
    blocks: Iterable[Block], target_chars: int, overlap_chars: int, first_ordinal: int = 0
) -> Iterator[Passage]:
    """Passages of at most target_chars, numbered from first_ordinal; each keeps the page it
    starts on and its section. Lazy: memory stays that of one passage and one paragraph."""
    target = max(target_chars, 1)
    # overlap is bounded by half a passage, so that each piece moves the text forward
    overlap = max(0, min(overlap_chars, target // 2))
    ordinal = first_ordinal
    for text, (page, section) in _pieces(blocks, target, overlap):
        if any(char.isalnum() for char in text):  # not empty, not only punctuation
            yield Passage(ordinal, text, page, section)
            ordinal += 1


def _pieces(blocks: Iterable[Block], target: int, overlap: int) -> Iterator[tuple[str, Place]]:
    packed: list[str] = []
    size = 0
    where: Place = (None, None)
    for block in blocks:
        place = (block.page, section_title(block.section))
        for paragraph in paragraphs_of(block.text):
            if packed and (place != where or size + 1 + len(paragraph) > target):
                yield " ".join(packed), where
                packed, size = [], 0
            where = place
            if len(paragraph) > target:
                for piece in split_long(paragraph, target, overlap):
                    yield piece, place
                continue
            size += len(paragraph) + (1 if packed else 0)
            packed.append(paragraph)
    if packed:
        yield " ".join(packed), where


def paragraphs_of(text: str) -> list[str]:
    """The block's paragraphs (split at blank lines), whitespace normalised to single spaces."""
    cleaned = _INVISIBLE.sub("", text)
    found = (" ".join(part.split()) for part in _PARAGRAPH_BREAK.split(cleaned))
    return [paragraph for paragraph in found if paragraph]


def split_long(paragraph: str, target: int, overlap: int) -> Iterator[str]:
    """Pieces of at most target characters, cut at sentence ends where possible; each piece
    after the first begins with (up to) the last `overlap` characters of the one before."""
    piece = ""
    # units leave room for the overlap, or a piece of one long unit could not carry any
    for unit in _units(paragraph, max(target - overlap - 1, 1)):
        joined = f"{piece} {unit}" if piece else unit
        if len(joined) <= target:
            piece = joined
            continue
        yield piece
        tail = overlap_tail(piece, min(overlap, target - len(unit) - 1))
        piece = f"{tail} {unit}" if tail else unit
    if piece:
        yield piece


def _units(paragraph: str, limit: int) -> Iterator[str]:
    """Sentences no longer than limit; a longer sentence is cut at spaces, a longer word
    (a URL, a hash) anywhere."""
    for sentence in _SENTENCE_BREAK.split(paragraph):
        if len(sentence) <= limit:
            if sentence:
                yield sentence
            continue
        words = ""
        for word in sentence.split(" "):
            while len(word) > limit:
                if words:
                    yield words
                    words = ""
                yield word[:limit]
                word = word[limit:]
            joined = f"{words} {word}" if words else word
            if len(joined) > limit:
                yield words
                joined = word
            words = joined
        if words:
            yield words


def overlap_tail(text: str, limit: int) -> str:
    """At most `limit` characters from the end of text, starting at a sentence if one starts
    in the first half of that window, else at a word."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    window = text[-limit:]
    sentence = _SENTENCE_BREAK.search(window)
    if sentence and sentence.end() <= limit // 2:
        return window[sentence.end() :]
    if text[-limit - 1] == " ":
        return window
    space = window.find(" ")
    return window[space + 1 :] if space >= 0 else window  # one endless word: cut inside it
