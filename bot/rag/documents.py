"""What grounding works with, as plain data: text blocks read from a file, passages cut from
them, passages found for a question, and why a file could not be indexed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["pdf", "docx", "odt", "html", "markdown", "text"]
BadReason = Literal["corrupt", "encrypted", "no_text", "too_big", "unknown_type"]


class BadDocument(Exception):
    """A file that cannot be indexed, for one short reason people can be told."""

    def __init__(self, reason: BadReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: BadReason = reason


@dataclass(frozen=True)
class Block:
    """A piece of a document's own structure: a paragraph, a heading's section, a page's text."""

    text: str
    page: int | None = None  # 1-based, for paged formats
    section: str | None = None  # the nearest heading above it


@dataclass(frozen=True)
class Passage:
    """A retrieval-sized piece of a document, keeping where it comes from."""

    ordinal: int  # position in the document, from 0
    text: str
    page: int | None
    section: str | None


@dataclass(frozen=True)
class PreparedPassage:
    passage: Passage
    terms: str  # the text as the full-text index reads it (folded, stemmed, stop words out)


@dataclass(frozen=True)
class Scope:
    """Where a search may look: one room's own documents and the collections it uses."""

    room_id: str | None
    collections: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    """A passage retrieved for a question, with what to cite."""

    passage_id: int
    document_id: int
    document_version: str
    document_name: str
    text: str
    page: int | None
    section: str | None
    room_id: str | None  # a file shared in a room
    event_id: str | None  # the message that shared it
    collection: str | None  # or an operator's collection
    score: float  # the fused score (or the reranker's)
    lexical_rank: int | None = None  # 1-based rank in the BM25 list, None if absent
    dense_rank: int | None = None
