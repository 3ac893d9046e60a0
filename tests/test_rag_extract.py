"""Extraction from real files: each kind's text, structure and page numbers, French accents,
and every way a file can be refused (corrupt, encrypted, unknown, too big, a zip bomb)."""

from __future__ import annotations

import random
import struct
import zipfile
from pathlib import Path

import pytest

from bot.rag import extract_markup, extract_office
from bot.rag.documents import BadDocument, Block
from bot.rag.extract import HEAD_BYTES, detect_kind, page_count, read_blocks
from tests.support.documents import (
    make_corrupt,
    make_docx,
    make_encrypted_pdf,
    make_image_pdf,
    make_odt,
    make_odt_bomb,
    make_pdf,
    odt_content,
    write_odt,
)

ITEMS = [
    ("h1", "Allocations familiales"),
    ("p", "Les allocations sont versées à partir du deuxième enfant à charge."),
    ("h2", "Démarches à effectuer"),
    ("p", "Déclarez la naissance auprès de la caisse d'allocations familiales."),
    ("li", "Un justificatif d'identité"),
    ("row", "Pièce | Délai"),
]
EXPECTED = [
    (
        "Les allocations sont versées à partir du deuxième enfant à charge.",
        "Allocations familiales",
    ),
    (
        "Déclarez la naissance auprès de la caisse d'allocations familiales.",
        "Démarches à effectuer",
    ),
    ("Un justificatif d'identité", "Démarches à effectuer"),
    ("Pièce | Délai", "Démarches à effectuer"),
]


def kind_of(path: Path, mimetype: str | None = None) -> str:
    return detect_kind(path.name, mimetype, path.read_bytes()[:HEAD_BYTES])


def texts(blocks: list[Block]) -> list[tuple[str, str | None]]:
    return [(" ".join(block.text.split()), block.section) for block in blocks]


def reason(excinfo: pytest.ExceptionInfo[BadDocument]) -> str:
    return excinfo.value.reason


# --- kinds ----------------------------------------------------------------------------------


def test_kinds_are_told_by_content_before_name(tmp_path: Path) -> None:
    pdf = make_pdf(["Bonjour."], tmp_path / "rapport.txt")  # misnamed: the bytes win
    docx_file = make_docx(ITEMS, tmp_path / "note.bin")
    odt = make_odt(ITEMS, tmp_path / "compte-rendu")
    assert kind_of(pdf) == "pdf"
    assert kind_of(docx_file) == "docx"
    assert kind_of(odt) == "odt"
    html = b"<!DOCTYPE html><html><body><p>x</p></body></html>"
    assert detect_kind("page", None, html) == "html"


def test_a_docx_with_its_parts_in_another_order(tmp_path: Path) -> None:
    original = make_docx(ITEMS, tmp_path / "word.docx")
    reordered = tmp_path / "libreoffice"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(reordered, "w") as target:
        for entry in sorted(source.infolist(), key=lambda e: not e.filename.startswith("word/")):
            target.writestr(entry, source.read(entry))
    assert kind_of(reordered) == "docx"
    assert texts(list(read_blocks(reordered, "docx"))) == EXPECTED


def test_a_text_file_quoting_a_pdf_header_stays_text() -> None:
    head = b"Un PDF commence par %PDF-1.7 puis ses objets."
    assert detect_kind("notes.txt", None, head) == "text"
    assert detect_kind("scan", None, b"\r\n" + head) == "pdf"  # junk before the header


def test_text_kinds_by_extension_then_mimetype() -> None:
    text = "Bonjour à tous".encode()
    assert detect_kind("guide.md", None, text) == "markdown"
    assert detect_kind("guide.MARKDOWN", "text/plain", text) == "markdown"
    assert detect_kind("notes.txt", None, text) == "text"
    assert detect_kind("page.htm", None, text) == "html"
    assert detect_kind("sans-nom", "text/markdown; charset=utf-8", text) == "markdown"
    assert detect_kind("sans-nom", "text/plain", text) == "text"
    assert detect_kind("sans-nom", "text/html", text) == "html"


@pytest.mark.parametrize(
    ("name", "mimetype", "head"),
    [
        ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
        ("programme", None, b"\x7fELF\x02\x01\x01"),
        ("notes.txt", None, b"MZ\x90\x00\x03\x00\x00\x00"),  # binary named as text
        ("sans-nom", None, b"Du texte sans nom ni type"),
        ("archive.zip", None, b"PK\x03\x04" + b"\x00" * 60),
    ],
)
def test_unknown_types_are_refused(name: str, mimetype: str | None, head: bytes) -> None:
    with pytest.raises(BadDocument) as excinfo:
        detect_kind(name, mimetype, head)
    assert reason(excinfo) == "unknown_type"


def test_other_opendocument_kinds_are_unknown(tmp_path: Path) -> None:
    spreadsheet = tmp_path / "tableur.ods"
    with zipfile.ZipFile(spreadsheet, "w") as archive:
        mimetype = "application/vnd.oasis.opendocument.spreadsheet"
        archive.writestr("mimetype", mimetype, compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", "<x/>")
    with pytest.raises(BadDocument) as excinfo:
        kind_of(spreadsheet)
    assert reason(excinfo) == "unknown_type"


def test_a_file_named_pdf_that_is_not_one_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(BadDocument) as excinfo:
        kind_of(make_corrupt(tmp_path / "rapport.pdf"))
    assert reason(excinfo) == "corrupt"


# --- PDF ------------------------------------------------------------------------------------


def test_pdf_pages_are_numbered_from_one_and_read_by_range(tmp_path: Path) -> None:
    pages = ["Première page : l'élève.", "Deuxième page, déjà.", "Troisième page où tout finit."]
    pdf = make_pdf(pages, tmp_path / "cours.pdf")
    assert page_count(pdf, "pdf") == 3
    assert [(b.text, b.page) for b in read_blocks(pdf, "pdf")] == [
        (text, number) for number, text in enumerate(pages, start=1)
    ]
    middle = list(read_blocks(pdf, "pdf", first_page=1, max_pages=1))
    assert [(b.text, b.page) for b in middle] == [("Deuxième page, déjà.", 2)]
    assert list(read_blocks(pdf, "pdf", first_page=3, max_pages=5)) == []


def test_pdf_paragraphs_and_hyphenated_lines(tmp_path: Path) -> None:
    long = " ".join(["Les prestations familiales sont versées chaque mois."] * 6)
    pdf = make_pdf([f"{long}\n\nUn second paragraphe, court."], tmp_path / "p.pdf")
    blocks = list(read_blocks(pdf, "pdf"))
    assert [" ".join(b.text.split()) for b in blocks] == [long, "Un second paragraphe, court."]


def test_encrypted_pdf(tmp_path: Path) -> None:
    pdf = make_encrypted_pdf(tmp_path / "secret.pdf")
    assert kind_of(pdf) == "pdf"
    with pytest.raises(BadDocument) as excinfo:
        page_count(pdf, "pdf")
    assert reason(excinfo) == "encrypted"
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(pdf, "pdf"))
    assert reason(excinfo) == "encrypted"


def test_corrupt_pdf(tmp_path: Path) -> None:
    pdf = make_corrupt(tmp_path / "abime.pdf", head=b"%PDF-1.7\n")
    assert kind_of(pdf) == "pdf"
    with pytest.raises(BadDocument) as excinfo:
        page_count(pdf, "pdf")
    assert reason(excinfo) == "corrupt"


def test_image_only_pdf_has_pages_but_no_text(tmp_path: Path) -> None:
    pdf = make_image_pdf(tmp_path / "scan.pdf", pages=3)
    assert page_count(pdf, "pdf") == 3
    assert list(read_blocks(pdf, "pdf")) == []


# --- office files ---------------------------------------------------------------------------


@pytest.mark.parametrize("french_styles", [False, True])
def test_docx_sections_paragraphs_lists_tables(tmp_path: Path, french_styles: bool) -> None:
    path = make_docx(ITEMS, tmp_path / "fiche.docx", french_styles=french_styles)
    assert kind_of(path) == "docx"
    assert texts(list(read_blocks(path, "docx"))) == EXPECTED


def test_odt_sections_paragraphs_lists_tables(tmp_path: Path) -> None:
    path = make_odt(ITEMS, tmp_path / "fiche.odt")
    assert kind_of(path) == "odt"
    assert texts(list(read_blocks(path, "odt"))) == EXPECTED


def test_odt_spaces_tabs_and_footnotes_are_read(tmp_path: Path) -> None:
    content = odt_content([("p", "MARKER")]).replace(
        "MARKER",
        'Article<text:s text:c="2"/>premier<text:tab/>alinéa<text:line-break/>suite'
        "<text:note><text:note-citation>1</text:note-citation>"
        "<text:note-body><text:p>Note de bas de page.</text:p></text:note-body>"
        "</text:note> fin.",
    )
    path = write_odt(content.encode(), tmp_path / "note.odt")
    blocks = list(read_blocks(path, "odt"))
    assert [b.text for b in blocks] == ["Article premier alinéa suite Note de bas de page. fin."]


def test_broken_office_files_are_corrupt(tmp_path: Path) -> None:
    fake_docx = make_corrupt(tmp_path / "faux.docx", head=b"PK\x03\x04")
    assert kind_of(fake_docx) == "docx"
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(fake_docx, "docx"))
    assert reason(excinfo) == "corrupt"
    truncated = tmp_path / "coupe.odt"
    truncated.write_bytes(make_odt(ITEMS * 50, tmp_path / "entier.odt").read_bytes()[:700])
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(truncated, "odt"))
    assert reason(excinfo) == "corrupt"
    broken_xml = write_odt(b"<office:document-content><text:p>", tmp_path / "xml.odt")
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(broken_xml, "odt"))
    assert reason(excinfo) == "corrupt"


def test_odt_entity_expansion_is_refused(tmp_path: Path) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "hahahahaha">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><d>&b;</d>'
    )
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(write_odt(laughs, tmp_path / "rires.odt"), "odt"))
    assert reason(excinfo) == "corrupt"


def count_inflated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes read out of zip entries from now on."""
    read: list[int] = [0]
    original = zipfile.ZipExtFile.read

    def counting(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        data = original(self, n)
        read[0] += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    return read


def test_zip_bomb_odt_is_refused_before_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = make_odt_bomb(tmp_path / "bombe.odt", megabytes=300)
    assert bomb.stat().st_size < 5 * 1024 * 1024
    assert kind_of(bomb) == "odt"
    inflated = count_inflated(monkeypatch)
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(bomb, "odt"))
    assert reason(excinfo) == "too_big"
    assert inflated[0] < 1024 * 1024


def test_a_zip_that_understates_its_size_is_read_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_odt(
        [("p", "Un paragraphe assez long pour compter. " * 20)] * 200, tmp_path / "m.odt"
    )
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02", data.index(b"content.xml") + 1)  # its central record
    while data[entry + 46 : entry + 46 + len(b"content.xml")] != b"content.xml":
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", data, entry + 24, 1000)  # claims 1,000 bytes inflated
    path.write_bytes(bytes(data))
    inflated = count_inflated(monkeypatch)
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(path, "odt"))
    assert reason(excinfo) == "corrupt"
    assert inflated[0] <= 1000


def test_docx_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_office, "MAX_UNCOMPRESSED", 10_000)  # a real docx is ~40 kB
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(make_docx(ITEMS, tmp_path / "f.docx"), "docx"))
    assert reason(excinfo) == "too_big"


# --- markup and text ------------------------------------------------------------------------


def test_html_sections_blocks_and_dropped_scripts(tmp_path: Path) -> None:
    page = """<!DOCTYPE html><html><head><meta charset="windows-1252"><title>Titre</title>
    <style>p { color: red }</style></head><body>
    <nav><a href="/">Accueil</a></nav>
    <h1>Congé <em>parental</em></h1>
    <p>Le congé est ouvert à tout salarié<!-- note --> ayant un an d'ancienneté.
    <script>alert("piège")</script></p>
    <h2>Durée</h2><ul><li>Un an, renouvelable</li><li>Deux fois</li></ul>
    <table><tr><th>Enfant</th><th>Durée</th></tr><tr><td>Premier</td><td>6 mois</td></tr></table>
    Texte libre<br>après un saut.</body></html>"""
    path = tmp_path / "conge.html"
    path.write_bytes(page.encode("cp1252"))
    assert kind_of(path) == "html"
    assert texts(list(read_blocks(path, "html"))) == [
        ("Accueil", None),
        ("Le congé est ouvert à tout salarié ayant un an d'ancienneté.", "Congé parental"),
        ("Un an, renouvelable", "Durée"),
        ("Deux fois", "Durée"),
        ("Enfant | Durée", "Durée"),
        ("Premier | 6 mois", "Durée"),
        ("Texte libre après un saut.", "Durée"),
    ]


def test_markdown_sections_paragraphs_lists_tables_code(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "# Voter\n\nRéagissez avec 👍 ou **👎** à une [réponse](https://exemple.fr).\n\n"
        "## Commandes\n\n- `!lucie help`\n- une ligne\n  qui continue\n\n"
        "| commande | rôle |\n|---|---|\n| reset | recommencer |\n\n"
        "```\n!lucie sources\n```\n\n<div>Un bloc <b>HTML</b></div>\n",
        encoding="utf-8",
    )
    assert kind_of(path) == "markdown"
    assert texts(list(read_blocks(path, "markdown"))) == [
        ("Réagissez avec 👍 ou 👎 à une réponse.", "Voter"),
        ("!lucie help", "Commandes"),
        ("une ligne qui continue", "Commandes"),
        ("commande | rôle", "Commandes"),
        ("reset | recommencer", "Commandes"),
        ("!lucie sources", "Commandes"),
        ("Un bloc HTML", "Commandes"),
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"])
def test_plain_text_paragraphs_in_any_common_encoding(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(
        "Première ligne,\nsuite à la ligne.\n\n \nSecond paragraphe : où ?".encode(encoding)
    )
    assert kind_of(path) == "text"
    assert texts(list(read_blocks(path, "text"))) == [
        ("Première ligne, suite à la ligne.", None),
        ("Second paragraphe : où ?", None),
    ]


def test_text_past_the_cap_is_too_big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_markup, "MAX_TEXT_BYTES", 1000)
    path = tmp_path / "long.txt"
    path.write_text("mot " * 300, encoding="utf-8")
    with pytest.raises(BadDocument) as excinfo:
        list(read_blocks(path, "text"))
    assert reason(excinfo) == "too_big"


def test_empty_and_broken_markup_yield_nothing_or_text(tmp_path: Path) -> None:
    empty = tmp_path / "vide.html"
    empty.write_bytes(b"   ")
    assert list(read_blocks(empty, "html")) == []
    broken = tmp_path / "casse.html"
    broken.write_bytes(b"<p>ouvert <b>jamais <i>ferm\xc3\xa9 " + b"<div>" * 5000 + b"fin")
    assert "fermé" in " ".join(b.text for b in read_blocks(broken, "html"))


@pytest.mark.parametrize("seed", range(8))
def test_damaged_files_only_ever_raise_bad_document(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    originals = [
        make_docx(ITEMS, tmp_path / "f.docx"),
        make_odt(ITEMS, tmp_path / "f.odt"),
        _written(tmp_path / "f.html", "<h1>Titre</h1><p>Un <b>paragraphe</b>.</p>" * 20),
        _written(tmp_path / "f.md", "# Titre\n\n| a | b |\n|--|--|\n| 1 | 2 |\n\n- un\n" * 20),
        _written(tmp_path / "f.txt", "Un paragraphe.\n\nUn autre, accentué.\n" * 20),
    ]
    for original in originals:
        data = bytearray(original.read_bytes())
        for _ in range(rng.randint(1, 30)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        damaged = tmp_path / f"abime-{original.name}"
        damaged.write_bytes(bytes(data[: rng.randint(len(data) // 2, len(data))]))
        try:
            kind = kind_of(damaged)
            list(read_blocks(damaged, kind))
        except BadDocument:
            pass


def _written(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
