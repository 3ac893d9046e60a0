"""Which kind of document a file is, and its text as blocks. Kinds are told by content first
(a file's name and announced type are only what the sender claims), then by name and type for
the text formats, which have no magic bytes.

These functions block and may use much CPU and memory on hostile files: the bot runs them in a
worker process (bot.rag.prepare), never on its event loop."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from bot.rag.documents import BadDocument, Block, Kind
from bot.rag.extract_markup import read_html, read_markdown, read_text
from bot.rag.extract_office import read_docx, read_odt
from bot.rag.extract_pdf import pdf_page_count, read_pdf

# How much of a file detect_kind needs to see.
HEAD_BYTES = 4096
# Text taken from any one non-PDF document; beyond it the document is refused, not half-read.
MAX_TEXT_CHARS = 20_000_000

_ODT_MIMETYPE = b"application/vnd.oasis.opendocument.text"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2xHH8xII2H")

_BY_EXTENSION: dict[str, Kind] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".odt": "odt",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
}
_BY_MIMETYPE: dict[str, Kind] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.oasis.opendocument.text": "odt",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
_BINARY: set[Kind] = {"pdf", "docx", "odt"}


def detect_kind(filename: str, mimetype: str | None, head: bytes) -> Kind:
    """The document's kind from its first bytes (HEAD_BYTES of them), name and announced type;
    raises BadDocument("unknown_type"), or "corrupt" for a file named as a PDF or office file
    whose bytes are not one."""
    claimed = _claimed_kind(filename, mimetype)
    # readers accept up to 1 KiB of junk before a PDF's header; a text file may quote one
    if head.startswith(b"%PDF-") or (b"%PDF-" in head[:1024] and claimed in _BINARY | {None}):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        zipped = _zip_kind(head)
        if zipped is not None:
            return zipped
        if claimed in ("docx", "odt"):
            return claimed  # entries in an unusual order: the reader will tell
        raise BadDocument("unknown_type", "a zip archive that is no text document")
    if claimed in _BINARY:
        raise BadDocument("corrupt", f"not a {claimed} file")
    stripped = head.lstrip()[:64].lower()
    if claimed is None and stripped.startswith((b"<!doctype html", b"<html")):
        claimed = "html"
    if claimed is None:
        raise BadDocument("unknown_type")
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BadDocument("unknown_type", "binary content")
    return claimed


def _claimed_kind(filename: str, mimetype: str | None) -> Kind | None:
    extension = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if extension in _BY_EXTENSION:
        return _BY_EXTENSION[extension]
    if mimetype:
        return _BY_MIMETYPE.get(mimetype.split(";")[0].strip().lower())
    return None


def _zip_kind(head: bytes) -> Kind | None:
    """odt from the zip's first entry (the standard puts "mimetype" first, stored), docx from
    the names of its first entries."""
    if len(head) >= _ZIP_LOCAL_HEADER.size:
        fields = _ZIP_LOCAL_HEADER.unpack_from(head)
        _, method, _, compressed, _, name_length, extra_length = fields
        name = head[_ZIP_LOCAL_HEADER.size : _ZIP_LOCAL_HEADER.size + name_length]
        start = _ZIP_LOCAL_HEADER.size + name_length + extra_length
        if name == b"mimetype" and method == 0:
            if head[start : start + compressed].strip() == _ODT_MIMETYPE:
                return "odt"
            return None  # another OpenDocument kind (a spreadsheet, a presentation)
    if b"word/" in head:  # Word's parts, whichever order the writer put them in
        return "docx"
    return None


def page_count(path: Path, kind: Kind) -> int | None:
    """Pages of a PDF (raises BadDocument if it cannot be opened); None for other kinds."""
    return pdf_page_count(path) if kind == "pdf" else None


def read_blocks(
    path: Path, kind: Kind, first_page: int = 0, max_pages: int | None = None
) -> Iterator[Block]:
    """The document's blocks in reading order; PDF pages from first_page (0-based), at most
    max_pages of them (Block.page is 1-based). Other kinds are read whole. Raises BadDocument."""
    try:
        if kind == "pdf":
            yield from read_pdf(path, first_page, max_pages)
        else:
            yield from _capped(_reader(kind)(path))
    except (BadDocument, MemoryError):
        raise
    except RecursionError as exc:
        raise BadDocument("corrupt", "nested too deep") from exc
    except Exception as exc:  # a parser's surprise on a hostile file is a bad file, no more
        raise BadDocument("corrupt", f"{type(exc).__name__}: {exc}") from exc


def _reader(kind: Kind) -> Callable[[Path], Iterator[Block]]:
    readers: dict[Kind, Callable[[Path], Iterator[Block]]] = {
        "docx": read_docx,
        "odt": read_odt,
        "html": read_html,
        "markdown": read_markdown,
        "text": read_text,
    }
    return readers[kind]


def _capped(blocks: Iterator[Block]) -> Iterator[Block]:
    total = 0
    for block in blocks:
        total += len(block.text)
        if total > MAX_TEXT_CHARS:
            raise BadDocument("too_big", "text past the cap")
        yield block
