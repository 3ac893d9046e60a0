"""`lucie-bot kb`, run as an operator runs it (a subprocess on a configuration file), on real
files: what lands in the database, the summary line, the exit codes, the progress bar on a
terminal, and a database the bot holds open meanwhile."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

from bot import paths
from bot.config import load_settings
from bot.rag.documents import Scope
from bot.storage.store import Store
from tests.support.bot_process import ROOT
from tests.support.documents import make_corrupt, make_docx, make_image_pdf, make_odt, make_pdf
from tests.support.synapse import free_port

PDF_PAGES = [
    "Page un. La demande de carte d'identité se fait en mairie sur rendez-vous.",
    "Page deux. Le délai de fabrication est de trois semaines environ.",
    "Page trois. Le timbre fiscal coûte vingt-cinq euros en cas de perte.",
]


def write_config(folder: Path, rag: str = "") -> Path:
    config = folder / "config.toml"
    config.write_text(
        f"data_dir = '{folder / 'data'}'\n"
        "[matrix]\nhomeserver = 'http://127.0.0.1:9'\nuser_id = '@a:b'\npassword = 'p'\n"
        f"[ops]\nenabled = false\n[rag]\n{rag}\n"
    )
    return config


def embeddings_rag(base_url: str) -> str:
    return (
        f"embeddings_url = '{base_url}'\nembeddings_input_type = true\n"
        "query_prefix = ''\npassage_prefix = ''\n"
    )


def kb(config: Path, *args: str, stderr: int | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LUCIE_BOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "kb", *args, "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
        env=clean,
        timeout=180,
    )


def query(config: Path, sql: str, *args: object) -> list[tuple]:
    database = paths.database(load_settings(config).data_dir)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def documents(config: Path, collection: str) -> list[tuple]:
    """(id, name, path, pages, passages, embedded) of the searchable documents."""
    return query(
        config,
        "SELECT id, name, path, pages, passages, embedded FROM documents "
        "WHERE collection = ? AND status = 'ready' ORDER BY name",
        collection,
    )


def passage_texts(config: Path, collection: str) -> str:
    rows = query(
        config,
        "SELECT p.text FROM passages p JOIN documents d ON d.id = p.document_id "
        "WHERE d.collection = ? ORDER BY p.id",
        collection,
    )
    return "\n".join(row[0] for row in rows)


def knowledge_base(folder: Path) -> Path:
    base = folder / "base"
    (base / "sub").mkdir(parents=True)
    (base / "guide.md").write_text(
        "# Passeport\n\nLe passeport se demande en mairie.\n\n"
        "## Délais\n\nComptez un mois en été.\n"
    )
    (base / "notes.txt").write_text("La mairie ouvre le samedi matin de 9 h à 12 h.\n")
    (base / ".brouillon.md").write_text("# Brouillon\n\nNe pas indexer ce secret.\n")
    (base / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    make_pdf(PDF_PAGES, base / "sub" / "carte.pdf")
    make_docx([("h1", "Permis"), ("p", "Le permis se demande en ligne sur le site de l'ANTS.")],
              base / "sub" / "permis.docx")  # fmt: skip
    make_odt([("h1", "Vote"), ("p", "La procuration se fait au commissariat.")],
             base / "sub" / "vote.odt")  # fmt: skip
    make_image_pdf(base / "sub" / "scan.pdf")
    make_corrupt(base / "sub" / "abime.pdf", head=b"%PDF-1.7\n")
    return base


def test_a_folder_is_indexed_recursively_bad_files_named_the_rest_kept(tmp_path):
    config = write_config(tmp_path)
    base = knowledge_base(tmp_path)

    result = kb(config, "add", "demarches", str(base), "--exportable")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar off a terminal, no log lines
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    passages = re.fullmatch(
        r"kb add demarches: 5 files indexed \((\d+) passages, 3 pages\), 2 skipped, "
        rf"2 refused \({re.escape(str(base))}/sub/abime\.pdf: corrupt; "
        rf"{re.escape(str(base))}/sub/scan\.pdf: no_text\)",
        lines[0],
    )
    assert passages, lines[0]
    found = documents(config, "demarches")
    assert [row[1] for row in found] == [
        "carte.pdf", "guide.md", "notes.txt", "permis.docx", "vote.odt"
    ]  # fmt: skip
    assert sum(row[4] for row in found) == int(passages.group(1))
    assert all(row[4] > 0 and row[5] == 0 for row in found)  # no embeddings server configured
    carte = next(row for row in found if row[1] == "carte.pdf")
    assert carte[2] == str((base / "sub" / "carte.pdf").resolve()) and carte[3] == 3
    pages = query(config, "SELECT DISTINCT page FROM passages WHERE document_id = ?", carte[0])
    assert sorted(page for (page,) in pages) == [1, 2, 3]
    texts = passage_texts(config, "demarches")
    assert "vingt-cinq euros" in texts and "ANTS" in texts and "commissariat" in texts
    assert "secret" not in texts  # the hidden file stayed out
    assert query(config, "SELECT exportable FROM collections WHERE name = 'demarches'") == [(1,)]


def test_an_unchanged_file_is_left_alone_and_a_changed_one_replaced(tmp_path):
    config = write_config(tmp_path)
    note = tmp_path / "horaires.md"
    note.write_text("# Horaires\n\nLa mairie ouvre le lundi à 8 h 30.\n")

    first = kb(config, "add", "mairie", str(note))
    assert first.stdout.strip() == "kb add mairie: 1 file indexed (1 passage)"
    [(document_id, *_)] = documents(config, "mairie")

    again = kb(config, "add", "mairie", str(note))
    assert again.returncode == 0
    assert again.stdout.strip() == "kb add mairie: 0 files indexed (0 passages), 1 unchanged"
    assert [row[0] for row in documents(config, "mairie")] == [document_id]

    note.write_text("# Horaires\n\nLa mairie ouvre désormais le mardi à 10 h.\n")
    changed = kb(config, "add", "mairie", str(note))
    assert changed.stdout.strip() == "kb add mairie: 1 file indexed (1 passage)"
    [(new_id, name, path, *_)] = documents(config, "mairie")
    assert new_id != document_id and name == "horaires.md" and path == str(note.resolve())
    texts = passage_texts(config, "mairie")
    assert "mardi" in texts and "lundi" not in texts
    assert query(config, "SELECT count(*) FROM documents WHERE collection = 'mairie'") == [(1,)]


def test_nothing_indexed_is_one_error_line_with_each_reason(tmp_path):
    config = write_config(tmp_path)
    corrupt = make_corrupt(tmp_path / "abime.pdf", head=b"%PDF-1.7\n")
    unknown = tmp_path / "photo.png"
    unknown.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    missing = tmp_path / "absent.pdf"

    result = kb(config, "add", "vide", str(missing), str(corrupt), str(unknown))

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        f"lucie-bot: kb add vide: 0 files indexed (0 passages), 3 refused "
        f"({missing}: not found; {corrupt}: corrupt; {unknown}: unknown_type)"
    )
    assert documents(config, "vide") == []


def test_remove_a_file_a_folder_or_the_whole_collection(tmp_path):
    config = write_config(tmp_path)
    base = knowledge_base(tmp_path)
    assert kb(config, "add", "demarches", str(base)).returncode == 0

    one = kb(config, "remove", "demarches", str(base / "notes.txt"))
    assert one.returncode == 0 and one.stdout.strip() == "kb remove demarches: 1 document removed"
    assert "samedi" not in passage_texts(config, "demarches")
    folder = kb(config, "remove", "demarches", str(base / "sub"))
    assert folder.stdout.strip() == "kb remove demarches: 3 documents removed"
    assert [row[1] for row in documents(config, "demarches")] == ["guide.md"]

    absent = kb(config, "remove", "demarches", str(base / "sub"))
    assert absent.returncode == 1
    assert absent.stderr.strip() == (
        f"lucie-bot: kb remove demarches: no document of {base / 'sub'} in this collection"
    )
    whole = kb(config, "remove", "demarches")
    assert whole.stdout.strip() == "kb remove demarches: collection removed (1 document)"
    assert query(config, "SELECT count(*) FROM passages") == [(0,)]
    assert query(config, "SELECT count(*) FROM passage_terms") == [(0,)]
    unknown = kb(config, "remove", "demarches")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "lucie-bot: no collection 'demarches': see `lucie-bot kb list`"
    )


def test_list_shows_collections_and_their_documents(tmp_path):
    config = write_config(tmp_path)
    assert kb(config, "list").stdout.strip().startswith("no collections yet")
    note = tmp_path / "horaires.md"
    note.write_text("# Horaires\n\nLa mairie ouvre le lundi.\n")
    kb(config, "add", "mairie", str(note), "--exportable")
    make_pdf(PDF_PAGES, tmp_path / "carte.pdf")
    kb(config, "add", "carte", str(tmp_path / "carte.pdf"))

    listing = kb(config, "list").stdout.splitlines()
    assert listing[0].split() == ["collection", "documents", "passages", "exportable", "created"]
    rows = {line.split()[0]: line.split()[1:4] for line in listing[1:]}
    assert rows["mairie"] == ["1", "1", "yes"]
    assert rows["carte"][0] == "1" and int(rows["carte"][1]) >= 1 and rows["carte"][2] == "no"

    docs = kb(config, "list", "carte").stdout.splitlines()
    assert docs[0].split() == ["document", "kind", "pages", "passages", "embedded", "added", "path"]
    assert docs[1].split()[:3] == ["carte.pdf", "pdf", "3"]
    assert docs[1].endswith(str((tmp_path / "carte.pdf").resolve()))
    assert kb(config, "list", "inconnue").returncode == 1

    other = tmp_path / "fermetures.md"
    other.write_text("# Fermetures\n\nLa mairie ferme le 14 juillet.\n")
    assert kb(config, "add", "mairie", str(other)).returncode == 0  # unsaid: kept exportable
    assert query(config, "SELECT exportable FROM collections WHERE name = 'mairie'") == [(1,)]
    assert kb(config, "add", "mairie", str(other), "--no-exportable").returncode == 0
    assert query(config, "SELECT exportable FROM collections WHERE name = 'mairie'") == [(0,)]
    bad = kb(config, "list", "Pas Bien")
    assert bad.returncode == 2 and "bad collection name" in bad.stderr


def test_rebuild_embeds_again_and_names_missing_files(tmp_path, embeddings_server):
    plain = write_config(tmp_path)
    base = tmp_path / "base"
    base.mkdir()
    (base / "vote.md").write_text("# Voter\n\nRéagissez avec 👍 ou 👎 à une réponse.\n")
    (base / "accord.md").write_text("# Accord\n\n`!lucie consent yes` donne votre accord.\n")
    (base / "vieux.md").write_text("# Ancien\n\nUn texte qui va disparaître.\n")
    assert kb(plain, "add", "guide", str(base)).returncode == 0
    before = {row[1]: row for row in documents(plain, "guide")}
    assert all(row[5] == 0 for row in before.values())  # indexed without an embeddings server

    (base / "vieux.md").unlink()
    embedded = write_config(tmp_path, embeddings_rag(embeddings_server.base_url))
    result = kb(embedded, "rebuild", "guide")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"kb rebuild guide: 2 files indexed (2 passages), 1 refused "
        f"({(base / 'vieux.md').resolve()}: missing)"
    )
    after = {row[1]: row for row in documents(embedded, "guide")}
    assert set(after) == {"accord.md", "vote.md", "vieux.md"}  # a missing file is kept
    for name in ("accord.md", "vote.md"):
        assert after[name][0] != before[name][0] and after[name][5] == 1
    vectors = query(
        embedded,
        "SELECT count(*), min(length(v.vector)) FROM passage_vectors v "
        "JOIN passages p ON p.id = v.passage_id JOIN documents d ON d.id = p.document_id "
        "WHERE d.collection = 'guide'",
    )
    assert vectors == [(2, 384 * 4)]  # multilingual-e5-small's 384 float32 per passage


async def test_a_database_held_open_by_the_bot_sees_the_collection_change(tmp_path):
    config = write_config(tmp_path)
    store = await Store.open(paths.database(load_settings(config).data_dir))
    try:
        scope = Scope(room_id="!salon:b", collections=("mairie",))
        before = await store.documents.scope_stamp(scope)
        note = tmp_path / "horaires.md"
        note.write_text("# Horaires\n\nLa mairie ouvre le jeudi.\n")
        result = await asyncio.to_thread(kb, config, "add", "mairie", str(note))
        assert result.returncode == 0, result.stderr
        assert await store.documents.scope_stamp(scope) != before
        [row] = await store.documents.collection_documents("mairie")
        assert row.name == "horaires.md" and row.passages == 1
    finally:
        await store.close()


def test_a_terminal_gets_a_progress_bar(tmp_path):
    config = write_config(tmp_path)
    base = knowledge_base(tmp_path)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    shown: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(leader, shown), daemon=True)
    reader.start()
    try:
        result = kb(config, "add", "demarches", str(base), stderr=follower)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    assert result.returncode == 0
    bar = b"".join(shown).decode("utf-8", errors="replace")
    assert "kb add demarches" in bar and "8/8" in bar and "100%" in bar  # 8 files, 1 hidden
    assert "carte.pdf" in bar and "3/3" in bar and "page" in bar  # the PDF's own pages
    assert result.stdout.strip().startswith("kb add demarches: 5 files indexed")


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def test_an_embeddings_server_down_leaves_passages_searchable_by_terms(tmp_path):
    config = write_config(tmp_path, embeddings_rag(f"http://127.0.0.1:{free_port()}/v1"))
    note = tmp_path / "horaires.md"
    note.write_text("# Horaires\n\nLa mairie ouvre le vendredi.\n")

    result = kb(config, "add", "mairie", str(note))

    assert result.returncode == 0
    assert result.stdout.strip() == (
        "kb add mairie: 1 file indexed (1 passage), 1 not embedded "
        "(embeddings server failed: `lucie-bot kb rebuild mairie` later)"
    )
    [(_, _, _, _, passages, embedded)] = documents(config, "mairie")
    assert passages == 1 and embedded == 0


def test_links_in_a_folder_are_not_followed_out_of_it(tmp_path):
    config = write_config(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Clés\n\nLe mot de passe du serveur est hunter2.\n")
    base = tmp_path / "base"
    base.mkdir()
    (base / "public.md").write_text("# Accueil\n\nLe guichet ouvre à neuf heures.\n")
    (base / "innocent.md").symlink_to(outside / "secret.md")
    (base / "ailleurs").symlink_to(outside, target_is_directory=True)
    done = kb(config, "add", "fiches", str(base))
    assert done.returncode == 0, done.stderr
    assert "1 file indexed" in done.stdout and "1 skipped" in done.stdout
    assert "hunter2" not in passage_texts(config, "fiches")
