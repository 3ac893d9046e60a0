"""The sources of grounded answers in exports: the passages go into the exported prompt exactly
as the model read them, but only when every one may be exported (an operator collection marked
exportable, or a file whose sharer consented) and is still there. Otherwise the answer, which
cites them, is left out whole. The list of sources the bot appended is not the model's text
and is taken off the answer."""

from __future__ import annotations

from typing import Any

from bot.rag.citations import sources_block
from bot.rag.documents import Found

FOOTER = "\n\n---\n"


def answer_text(text: str, grounded: int | None) -> str:
    if grounded is None:
        return text
    head, separator, _ = text.rpartition(FOOTER)
    return head if separator else text


def exportable_block(
    grounded: int | None, rows: list[dict[str, Any]], lang: str, may_use: Any
) -> str | None:
    """The sources block the model read, or None when the answer may not be exported."""
    if grounded == 0:
        return sources_block([], lang)
    if not rows or [row["rank"] for row in rows] != list(range(1, len(rows) + 1)):
        return None  # a source was removed since (its document erased)
    found = []
    for row in rows:
        allowed = row["exportable"] == 1 if row["collection"] else may_use(row["sharer"])
        if row["text"] is None or not allowed or (row["sharer"] is None and not row["collection"]):
            return None
        found.append(
            Found(
                passage_id=0,
                document_id=row["document_id"] or 0,
                document_version=row["document_version"] or "",
                document_name=row["document_name"] or "",
                text=row["text"],
                page=row["page"],
                section=row["section"],
                room_id=row["room_id"],
                event_id=row["event_id"],
                collection=row["collection"],
                score=0.0,
            )
        )
    return sources_block(found, lang)
