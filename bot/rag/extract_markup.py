"""HTML (lxml, forgiving of broken markup), Markdown (markdown-it-py's tokens) and plain text.
Headings start sections; paragraphs, list items and table rows become blocks. Text files carry
no reliable encoding, so UTF-8 is tried first, then Windows-1252 (what French Windows writes),
then latin-1, which decodes anything."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

from lxml import etree, html  # type: ignore[import-untyped]
from markdown_it import MarkdownIt
from markdown_it.token import Token

from bot.rag.documents import BadDocument, Block

# Text formats are read whole: past this the file is refused rather than half-read.
MAX_TEXT_BYTES = 20 * 1024 * 1024

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_DROPPED = ("script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object")
_BLOCKS = {
    *("p", "div", "li", "tr", "pre", "blockquote", "dd", "dt", "section", "article", "header"),
    *("footer", "main", "aside", "nav", "table", "thead", "tbody", "ul", "ol", "dl", "figure"),
    *("figcaption", "caption", "address", "form", "fieldset", "hr", "body", "details", "summary"),
}
_CELLS = {"td", "th"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""")
_BLANK_LINE = re.compile(r"\n[ \t\f\v\r]*\n")
_TAG = re.compile(r"<[^>]*>")


def read_bytes(path: Path) -> bytes:
    with path.open("rb") as file:
        data = file.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise BadDocument("too_big", "text past the cap")
    return data


def decode_text(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


# --- plain text ----------------------------------------------------------------------------


def read_text(path: Path) -> Iterator[Block]:
    """Paragraphs separated by blank lines."""
    text = decode_text(read_bytes(path)).replace("\r\n", "\n").replace("\r", "\n")
    for paragraph in _BLANK_LINE.split(text):
        if paragraph.strip():
            yield Block(paragraph.strip())


# --- Markdown ------------------------------------------------------------------------------


def read_markdown(path: Path) -> Iterator[Block]:
    """Headings as sections; paragraphs, list items, code blocks and table rows as blocks."""
    parser = MarkdownIt("commonmark").enable("table")
    section: str | None = None
    cells: list[str] = []
    inside = ""  # "heading" or "cell" while reading one
    for token in parser.parse(decode_text(read_bytes(path))):
        kind = token.type
        if kind in ("heading_open", "th_open", "td_open"):
            inside = "heading" if kind == "heading_open" else "cell"
        elif kind in ("heading_close", "th_close", "td_close"):
            inside = ""
        elif kind == "inline":
            text = " ".join(_inline_text(token).split())
            if inside == "heading":
                section = text or section
            elif inside == "cell":
                cells.append(text)
            elif text:
                yield Block(text, section=section)
        elif kind == "tr_close":
            row = " | ".join(cell for cell in cells if cell)
            cells = []
            if row:
                yield Block(row, section=section)
        elif kind in ("fence", "code_block", "html_block"):
            text = _TAG.sub(" ", token.content) if kind == "html_block" else token.content
            if text.strip():
                yield Block(text, section=section)


def _inline_text(token: Token) -> str:
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


# --- HTML ----------------------------------------------------------------------------------


def read_html(path: Path) -> Iterator[Block]:
    """Headings h1-h6 as sections; paragraphs, list items, table rows and other blocks' text;
    scripts, styles and the head left out."""
    data = read_bytes(path)
    parser = html.HTMLParser(encoding=_html_encoding(data), remove_comments=True, remove_pis=True)
    try:
        root = html.document_fromstring(data, parser=parser)
    except (etree.ParserError, ValueError):
        return  # an empty document: no text
    etree.strip_elements(root, *_DROPPED, with_tail=False)
    yield from _html_blocks(root)


def _html_encoding(data: bytes) -> str:
    head = data[:4096]
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    declared = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    if declared:
        name = declared.group(1).decode("ascii")
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def _html_blocks(root: html.HtmlElement) -> Iterator[Block]:
    section: str | None = None
    buffer: list[str] = []
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start":
            if tag in _HEADINGS or tag in _BLOCKS:
                yield from _flush(buffer, section)
            if tag in _HEADINGS:
                section = " ".join(element.text_content().split()) or section
                walker.skip_subtree()
                continue
            if tag in _CELLS and "".join(buffer).strip():
                buffer.append(" | ")
            elif tag == "br":
                buffer.append(" ")
            buffer.append(element.text or "")
        else:
            if tag in _BLOCKS:
                yield from _flush(buffer, section)
            buffer.append(element.tail or "")
    yield from _flush(buffer, section)


def _flush(buffer: list[str], section: str | None) -> Iterator[Block]:
    text = "".join(buffer).strip()
    buffer.clear()
    if text:
        yield Block(text, section=section)
