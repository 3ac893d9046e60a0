"""PDF text through PDFium (pypdfium2), one page at a time so that memory does not grow with
the file: each page's text is read, cut into paragraphs and released before the next."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]

from bot.rag.documents import BadDocument, Block

# PDFium writes one line per text line; paragraphs have to be guessed from the lines' shape.
_SENTENCE_END = re.compile(r"[.!?:…»\"')\]]$")
# A line ending a sentence and clearly shorter than the page's longest ends its paragraph.
_SHORT_LINE = 0.8
# A dense page of small print holds about 10,000 characters. One content stream can be drawn
# on every page many times over: a few kilobytes of PDF would make millions of characters.
MAX_PAGE_CHARS = 30_000
# PDFium marks a hyphen it found at a line's end with \x02; other control characters are noise.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def open_pdf(path: Path) -> pdfium.PdfDocument:
    """The document, opened lazily (pages are read on demand); raises BadDocument."""
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if exc.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise BadDocument("encrypted") from exc
        raise BadDocument("corrupt", str(exc)) from exc


def pdf_page_count(path: Path) -> int:
    document = open_pdf(path)
    try:
        return len(document)
    finally:
        document.close()


def read_pdf(path: Path, first_page: int = 0, max_pages: int | None = None) -> Iterator[Block]:
    """The paragraphs of pages first_page (0-based) onwards, at most max_pages of them, each
    Block carrying its 1-based page number."""
    document = open_pdf(path)
    try:
        total = len(document)
        last = total if max_pages is None else min(total, first_page + max_pages)
        for index in range(max(first_page, 0), last):
            for paragraph in page_paragraphs(_page_text(document, index)):
                yield Block(paragraph, page=index + 1)
    finally:
        document.close()


def _page_text(document: pdfium.PdfDocument, index: int) -> str:
    try:
        page = document[index]
    except pdfium.PdfiumError as exc:
        raise BadDocument("corrupt", f"page {index + 1}: {exc}") from exc
    try:
        textpage = page.get_textpage()
        try:
            count = min(textpage.count_chars(), MAX_PAGE_CHARS)
            text: str = textpage.get_text_range(0, count) if count > 0 else ""
        finally:
            textpage.close()
    finally:
        page.close()
    return text


def page_paragraphs(text: str) -> list[str]:
    """A page's lines joined into paragraphs: a blank line, or a short line that ends a
    sentence, ends one; a word hyphenated across lines is joined back."""
    text = text.replace("\x02", "-")
    lines = [_CONTROL.sub("", line).strip() for line in text.splitlines()]
    longest = max((len(line) for line in lines), default=0)
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if not line:
            paragraphs.append(current)
            current = ""
            continue
        if current.endswith("-") and not current.endswith(" -"):
            current += line
        else:
            current = f"{current} {line}" if current else line
        if _SENTENCE_END.search(line) and len(line) < _SHORT_LINE * longest:
            paragraphs.append(current)
            current = ""
    paragraphs.append(current)
    return [paragraph for paragraph in paragraphs if paragraph]
