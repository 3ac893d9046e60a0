"""Word (DOCX, through python-docx) and OpenDocument text (ODT, through the standard library:
content.xml is plain ODF XML, read as a stream). Both are zip files, so both are checked
against zip bombs before anything is inflated: the sizes the archive declares are capped, and
ODT's content is also counted as it is read, since a declared size is only a claim."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

import docx
from docx.document import Document
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from bot.rag.documents import BadDocument, Block

# An office file inflating past this is refused: far above real documents (a 500-page report's
# XML is a few dozen MB), far below what would strain the worker.
MAX_UNCOMPRESSED = 256 * 1024 * 1024
MAX_ENTRIES = 20_000
_READ_CHUNK = 64 * 1024

_HEADING_STYLE = re.compile(r"^(?:heading|titre|überschrift|título|titolo)\s*(\d)$", re.IGNORECASE)

_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_PARAGRAPHS = {f"{_TEXT}p", f"{_TEXT}h"}


def check_archive(path: Path) -> zipfile.ZipFile:
    """The zip, opened after its declared contents passed the bomb caps; raises BadDocument."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadDocument("corrupt", str(exc)) from exc
    entries = archive.infolist()
    declared = sum(entry.file_size for entry in entries)
    if len(entries) > MAX_ENTRIES or declared > MAX_UNCOMPRESSED:
        archive.close()
        raise BadDocument("too_big", f"{len(entries)} entries, {declared} bytes inflated")
    return archive


# --- DOCX ----------------------------------------------------------------------------------


def read_docx(path: Path) -> Iterator[Block]:
    """Paragraphs and table rows in reading order, each with the heading above it."""
    check_archive(path).close()
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx has no single error for a broken package
        raise BadDocument("corrupt", f"{type(exc).__name__}: {exc}") from exc
    yield from _docx_blocks(document)


def _docx_blocks(document: Document) -> Iterator[Block]:
    section: str | None = None
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            if _docx_heading_level(item) is not None:
                section = text
            else:
                yield Block(text, section=section)
        elif isinstance(item, Table):
            for row in _docx_rows(item):
                yield Block(row, section=section)


def _docx_heading_level(paragraph: Paragraph) -> int | None:
    """Word's built-in headings ("Heading 1", "Titre 1" in a French Word), or any paragraph
    whose style gives it an outline level (how LibreOffice marks headings in DOCX)."""
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    matched = _HEADING_STYLE.match(name.strip())
    if matched:
        return int(matched.group(1))
    while style is not None:
        properties = style.element.pPr
        level = properties.find(qn("w:outlineLvl")) if properties is not None else None
        if level is not None:
            value = level.get(qn("w:val"), "9")
            return int(value) + 1 if value.isdigit() and int(value) < 9 else None
        style = style.base_style
    return None


def _docx_rows(table: Table) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            # a merged cell is repeated once per grid column it spans
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            yield " | ".join(cells)


# --- ODT -----------------------------------------------------------------------------------


def read_odt(path: Path) -> Iterator[Block]:
    """Headings (text:h) as sections; paragraphs, list items and table rows as blocks."""
    archive = check_archive(path)
    try:
        try:
            stream = archive.open("content.xml")
        except KeyError as exc:
            raise BadDocument("corrupt", "no content.xml") from exc
        with stream:
            yield from _odt_blocks(stream)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        # a damaged entry, or content that did not match its declared size and checksum
        raise BadDocument("corrupt", f"{type(exc).__name__}: {exc}") from exc
    finally:
        archive.close()


def _xml_events(stream: IO[bytes]) -> Iterator[tuple[str, ElementTree.Element]]:
    """start/end events of the stream, read in chunks and counted; entity declarations (the
    "billion laughs") are refused, since ODF has no use for them."""
    parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(
        events=("start", "end")
    )
    read, tail = 0, b""
    while chunk := stream.read(_READ_CHUNK):
        read += len(chunk)
        if read > MAX_UNCOMPRESSED:
            raise BadDocument("too_big", "content.xml inflates past the cap")
        if b"<!ENTITY" in tail + chunk:
            raise BadDocument("corrupt", "entity declarations")
        tail = chunk[-8:]
        try:
            parser.feed(chunk)
        except ElementTree.ParseError as exc:
            raise BadDocument("corrupt", str(exc)) from exc
        yield from _drain(parser)
    try:
        parser.close()
    except ElementTree.ParseError as exc:
        raise BadDocument("corrupt", str(exc)) from exc
    yield from _drain(parser)


def _drain(
    parser: ElementTree.XMLPullParser[ElementTree.Element],
) -> Iterator[tuple[str, ElementTree.Element]]:
    for event in parser.read_events():
        if len(event) == 2 and isinstance(event[1], ElementTree.Element):
            yield event[0], event[1]


def _odt_blocks(stream: IO[bytes]) -> Iterator[Block]:
    section: str | None = None
    parents: list[ElementTree.Element] = []
    open_paragraphs = 0
    rows: list[list[str]] = []  # the cells of the table rows being read, innermost last
    for event, element in _xml_events(stream):
        tag = element.tag
        if event == "start":
            parents.append(element)
            open_paragraphs += tag in _PARAGRAPHS
            if tag == f"{_TABLE}table-row":
                rows.append([])
            continue
        parents.pop()
        if tag == f"{_TABLE}table-row" and rows:
            cells = rows.pop()
            if cells:
                yield Block(" | ".join(cells), section=section)
        if tag not in _PARAGRAPHS:
            continue
        open_paragraphs -= 1
        if open_paragraphs:
            continue  # a paragraph inside another (a footnote's) is read with its outer one
        text = " ".join(_odt_text(element).split())
        if parents:
            parents[-1].remove(element)  # what has been read is let go: memory stays flat
        if not text:
            continue
        if tag == f"{_TEXT}h":
            section = text
        elif rows:
            rows[-1].append(text)
        else:
            yield Block(text, section=section)


def _odt_text(element: ElementTree.Element) -> str:
    """The text of a paragraph with ODF's space, tab and line-break elements spelled out."""
    parts: list[str] = []
    stack: list[tuple[ElementTree.Element, bool]] = [(element, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            parts.append(" " if node.tag in _PARAGRAPHS else "")  # a footnote's own paragraph
            parts.append(node.tail or "")
            continue
        if node.tag == f"{_TEXT}note-citation":  # the footnote's number, not its words
            stack.append((node, True))
            continue
        if node.tag in _PARAGRAPHS and node is not element:
            parts.append(" ")
        if node.tag == f"{_TEXT}s":
            count = node.get(f"{_TEXT}c", "1")
            parts.append(" " * min(int(count) if count.isdigit() else 1, 8))
        elif node.tag in (f"{_TEXT}tab", f"{_TEXT}line-break"):
            parts.append(" ")
        parts.append(node.text or "")
        if node is not element:
            stack.append((node, True))
        stack.extend((child, False) for child in reversed(node))
    return "".join(parts)
