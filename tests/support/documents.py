"""Real document files for the grounding tests: PDFs made with fpdf2 (text, encrypted,
image-only), Word files made with python-docx, ODT files written by hand as the ODF standard
lays them out, and bytes that are none of these."""

from __future__ import annotations

import textwrap
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import docx
from fpdf import FPDF

# fpdf2 ships no Unicode font; DejaVu is on most Linux machines. Without it the core Helvetica
# font still writes French: its accents are all in latin-1.
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

_LEFT_MM, _TOP_MM, _BOTTOM_MM, _LINE_MM, _PARAGRAPH_GAP_MM = 12, 15, 280, 5, 4
_LINE_CHARS = 95

# A document's content as (style, text): style "h1".."h6" for a heading, "p" for a paragraph,
# "li" for a list item, "row" for a table row (cells separated by " | ").
Items = Sequence[tuple[str, str]]


def _new_pdf() -> tuple[FPDF, str]:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    if _DEJAVU.exists():
        pdf.add_font("DejaVu", fname=str(_DEJAVU))
        return pdf, "DejaVu"
    return pdf, "helvetica"


def make_pdf(pages: Sequence[str], path: Path) -> Path:
    """One PDF page per string (paragraphs separated by blank lines); a string too long for one
    page flows onto the next, so keep page texts short when page numbers matter. Lines are
    wrapped here and placed one by one, which is much faster than fpdf2's own flowing."""
    pdf, font = _new_pdf()
    pdf.set_font(font, size=9)
    for text in pages:
        pdf.add_page()
        top = _TOP_MM
        for paragraph in text.split("\n\n"):
            for line in textwrap.wrap(paragraph, _LINE_CHARS) or [""]:
                if top > _BOTTOM_MM:
                    pdf.add_page()
                    top = _TOP_MM
                pdf.text(_LEFT_MM, top, line)
                top += _LINE_MM
            top += _PARAGRAPH_GAP_MM
    pdf.output(str(path))
    return path


def make_encrypted_pdf(path: Path, text: str = "Document confidentiel.") -> Path:
    """A PDF that opens only with its user password."""
    pdf, font = _new_pdf()
    pdf.set_encryption(owner_password="proprietaire", user_password="secret")
    pdf.set_font(font, size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def make_image_pdf(path: Path, pages: int = 2) -> Path:
    """A 'scanned' PDF: pages with drawings only, no text layer."""
    pdf = FPDF(format="A4")
    for index in range(pages):
        pdf.add_page()
        pdf.set_fill_color(40 + index * 30, 90, 160)
        pdf.rect(20, 20, 170, 240, style="F")
        pdf.set_draw_color(0, 0, 0)
        pdf.line(20, 20, 190, 260)
    pdf.output(str(path))
    return path


def make_docx(items: Items, path: Path, french_styles: bool = False) -> Path:
    """A Word file; `french_styles` names the heading styles "Titre N" as a French Word does."""
    document = docx.Document()
    for style, text in items:
        if style.startswith("h"):
            paragraph = document.add_heading(text, level=int(style[1:]))
            if french_styles:
                paragraph.style = _french_heading(document, int(style[1:]))
        elif style == "li":
            document.add_paragraph(text, style="List Bullet")
        elif style == "row":
            cells = text.split(" | ")
            table = document.add_table(rows=1, cols=len(cells))
            for cell, cell_text in zip(table.rows[0].cells, cells, strict=True):
                cell.text = cell_text
        else:
            document.add_paragraph(text)
    document.save(str(path))
    return path


def _french_heading(document: docx.document.Document, level: int) -> docx.styles.style.BaseStyle:
    name = f"Titre {level}"
    styles = document.styles
    if name not in [style.name for style in styles]:
        style = styles.add_style(name, docx.enum.style.WD_STYLE_TYPE.PARAGRAPH)
        style.base_style = styles["Normal"]
        return style
    return styles[name]


_ODF_NAMESPACES = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"'
)
ODT_MIMETYPE = "application/vnd.oasis.opendocument.text"
_MANIFEST = f"""<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
 manifest:version="1.3">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="{ODT_MIMETYPE}"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>
"""


def odt_content(items: Items) -> str:
    """content.xml for the items, with the markup LibreOffice writes (spans, spaces, lists)."""
    body = []
    for style, text in items:
        words = escape(text).replace("  ", ' <text:s text:c="1"/>')
        if style.startswith("h"):
            body.append(f'<text:h text:outline-level="{style[1:]}">{words}</text:h>')
        elif style == "li":
            body.append(f"<text:list><text:list-item><text:p>{words}</text:p></text:list-item>")
            body.append("</text:list>")
        elif style == "row":
            cells = "".join(
                f"<table:table-cell><text:p>{escape(cell)}</text:p></table:table-cell>"
                for cell in text.split(" | ")
            )
            body.append(f"<table:table><table:table-row>{cells}</table:table-row></table:table>")
        else:
            body.append(f'<text:p text:style-name="P1"><text:span>{words}</text:span></text:p>')
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {_ODF_NAMESPACES} '
        f'office:version="1.3"><office:body><office:text>{"".join(body)}'
        "</office:text></office:body></office:document-content>"
    )


def make_odt(items: Items, path: Path) -> Path:
    """A minimal valid ODT: the mimetype first and stored, then content.xml and the manifest."""
    return write_odt(odt_content(items).encode("utf-8"), path)


def write_odt(content_xml: bytes, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", ODT_MIMETYPE, compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", content_xml, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("META-INF/manifest.xml", _MANIFEST, compress_type=zipfile.ZIP_DEFLATED)
    return path


def make_odt_bomb(path: Path, megabytes: int) -> Path:
    """An ODT whose content.xml inflates to `megabytes` MiB of paragraphs from a small file."""
    head = f'<?xml version="1.0"?><office:document-content {_ODF_NAMESPACES}>'
    paragraph = b"<text:p>" + b"bombe " * 160 + b"</text:p>"
    chunk = paragraph * (1024 * 1024 // len(paragraph))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", ODT_MIMETYPE, compress_type=zipfile.ZIP_STORED)
        with archive.open("content.xml", "w", force_zip64=True) as content:
            content.write(f"{head}<office:body><office:text>".encode())
            for _ in range(megabytes):
                content.write(chunk)
            content.write(b"</office:text></office:body></office:document-content>")
    return path


def make_corrupt(path: Path, head: bytes = b"") -> Path:
    """Bytes that look like nothing, after an optional magic header (b"%PDF-1.7" etc.)."""
    noise = bytes((index * 7919 + 13) % 251 for index in range(4000))
    path.write_bytes(head + noise)
    return path


def make_text_bomb_pdf(path: Path, pages: int, chars_per_page: int) -> Path:
    """A small PDF whose every page draws the same compressed content stream: a few kilobytes
    of file that extract to pages × chars_per_page characters."""
    line = "le texte se répète sans fin sur chaque page du document "[:50].encode("latin-1")
    body = b"BT /F1 1 Tf 0 700 Td 1 TL\n"
    body += (b"(" + line + b") Tj T*\n") * (chars_per_page // 50)
    body += b"ET"
    stream = zlib.compress(body, 9)
    kids = " ".join(f"{4 + n} 0 R" for n in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    font = b"<< /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >>"
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 600 800] /Resources << /Font "
    objects += [page + font + b" >> /Contents 3 0 R >>"] * pages
    data, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body_of in enumerate(objects, 1):
        offsets.append(len(data))
        data += b"%d 0 obj\n" % number + body_of + b"\nendobj\n"
    table = len(data)
    data += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    data += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    data += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    data += b"startxref\n%d\n%%%%EOF\n" % table
    path.write_bytes(bytes(data))
    return path
