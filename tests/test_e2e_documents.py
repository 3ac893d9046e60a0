"""Grounded answers through a real Synapse: files shared in rooms (encrypted ones too),
indexed, retrieved into the model's request, cited in the reply, and gone when withdrawn."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import invite_bot
from tests.support.documents import make_corrupt, make_pdf
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import answer_to, eventually, final_answer, notices

PAGES = [
    "Guide des recours administratifs.\n\nCe guide présente les voies de recours.",
    "Le recours gracieux s'adresse à l'auteur de la décision contestée.",
    "Le délai de recours contentieux est de deux mois à compter de la notification.",
    "Les frais de justice peuvent être pris en charge par l'aide juridictionnelle.",
]


def notice_with(events: list[dict], bot_id: str, *words: str) -> str | None:
    return next((n for n in notices(events, bot_id) if all(w in n for w in words)), None)


def last_user_content(llm) -> str:
    return llm.requests[-1]["body"]["messages"][-1]["content"]


async def test_a_pdf_shared_in_an_encrypted_room_grounds_and_cites_the_answer(
    make_user, start_bot, llm, tmp_path: Path
):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    room = await invite_bot(alice, bot, encrypted=True)
    pdf = make_pdf(PAGES, tmp_path / "recours.pdf")
    shared = await alice.send_file(room, pdf, "application/pdf", encrypted=True)
    await alice.send(room, "!lucie docs add", reply_to=shared)
    indexed = await alice.wait_for(
        room, lambda ev: notice_with(ev, bot.user_id, "recours.pdf", "4 pages"), 90
    )
    assert "indexé" in indexed

    llm.default = Behaviour(text="Le délai est de deux mois [1]. Voir aussi [9].")
    asked = await alice.send(
        room, "Lucie, quel est le délai de recours contentieux ?", mentions=[bot.user_id]
    )
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    request = last_user_content(llm)
    assert "deux mois à compter de la notification" in request
    assert request.index("[1] recours.pdf, p. 3") < request.index("quel est le délai")
    assert "[9]" not in text  # a source it was not given is not cited
    assert text.startswith("Le délai est de deux mois [1].")
    assert "recours.pdf, p. 3" in text and "matrix.to/#/" in text
    rows = await bot.settled(
        "SELECT s.page, s.cited, a.grounded FROM answer_sources s "
        "JOIN answers a ON a.id = s.answer_id WHERE a.question_event_id = ? ORDER BY s.rank",
        asked,
    )
    assert rows[0]["page"] == 3 and rows[0]["cited"] == 1 and rows[0]["grounded"] == 1

    await alice.send(room, "!lucie sources")
    listed = await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "[1] recours"))
    assert "deux mois" in listed

    # the file's message redacted: the document goes, and the next answer no longer cites it
    await alice.redact(room, shared)
    await eventually(lambda: _none_left(bot), within=30)
    again = await alice.send(room, "Lucie, et le délai de recours ?", mentions=[bot.user_id])
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, again), 60)
    assert "recours.pdf" not in text and "deux mois à compter" not in last_user_content(llm)


async def _none_left(bot) -> bool:
    passages = await bot.query("SELECT COUNT(*) AS n FROM passages")
    terms = await bot.query("SELECT COUNT(*) AS n FROM passage_terms")
    documents = await bot.query("SELECT COUNT(*) AS n FROM documents")
    return passages[0]["n"] == terms[0]["n"] == documents[0]["n"] == 0


async def test_a_file_sent_in_a_dm_is_indexed_and_a_corrupt_one_gets_one_notice(
    make_user, start_bot, llm, tmp_path: Path
):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    broken = make_corrupt(tmp_path / "rapport.pdf", b"%PDF-1.7\n")
    await alice.send_file(room, broken, "application/pdf")
    refused = await alice.wait_for(
        room, lambda ev: notice_with(ev, bot.user_id, "rapport.pdf", "pas été indexé"), 60
    )
    assert "illisible" in refused

    notes = tmp_path / "notes.md"
    notes.write_text("# Cantine\n\nLe menu du jeudi est un couscous aux légumes.\n")
    await alice.send_file(room, notes, "text/markdown")
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "notes.md", "indexé"), 60)
    asked = await alice.send(room, "Quel est le menu du jeudi ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    assert "couscous aux légumes" in last_user_content(llm)
    assert sum("rapport.pdf" in n for n in notices(alice.events[room], bot.user_id)) == 1
    assert bot.process is not None and bot.process.poll() is None


async def test_a_collection_added_while_the_bot_runs_serves_only_rooms_that_use_it(
    make_user, start_bot, llm, tmp_path: Path
):
    bot = start_bot(rag={"collections": ["procedures"]})
    alice = await make_user("alice")
    used = await invite_bot(alice, bot)
    other = await invite_bot(alice, bot)
    await alice.send(other, "!lucie docs unuse procedures")
    await alice.wait_for(other, lambda ev: notice_with(ev, bot.user_id, "n'utilise plus"))

    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "conges.md").write_text(
        "# Congés\n\nUne demande de congé se dépose dans l'outil RH au moins quinze jours avant.\n"
    )
    added = bot.command("kb", "add", "procedures", str(folder))
    assert added.returncode == 0, added.stderr

    question = "Lucie, comment déposer une demande de congé ?"
    asked = await alice.send(used, question, mentions=[bot.user_id])
    text = await alice.wait_for(used, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    assert "quinze jours avant" in last_user_content(llm)
    assert "conges.md" in text and "procedures" in text

    asked = await alice.send(other, question, mentions=[bot.user_id])
    await alice.wait_for(other, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    assert "quinze jours" not in last_user_content(llm)


async def test_dense_retrieval_through_a_real_embeddings_server_finds_a_paraphrase(
    make_user, start_bot, llm, embeddings_server, tmp_path: Path
):
    rag = {
        "embeddings_url": embeddings_server.base_url,
        "embeddings_input_type": True,
        "query_prefix": "",
        "passage_prefix": "",
    }
    bot = start_bot(rag=rag)
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    note = tmp_path / "reglement.txt"
    note.write_text(
        "Chaque agent dispose de vingt-cinq jours de congés payés par an.\n\n"
        "Le parking du bâtiment B est réservé aux véhicules de service.\n"
    )
    await alice.send_file(room, note, "text/plain")
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "reglement.txt"), 60)
    rows = await bot.query("SELECT embedded FROM documents")
    assert rows == [{"embedded": 1}]
    asked = await alice.send(room, "Combien de vacances puis-je prendre chaque année ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    request = last_user_content(llm)
    assert "[1] reglement.txt" in request and "vingt-cinq jours" in request
    ranks = await bot.settled("SELECT lexical_rank, dense_rank FROM answer_sources")
    assert any(r["dense_rank"] == 1 for r in ranks)


SECRET = {"pseudonym_secret": "e2e-pseudonym-secret-0123456789abcdef"}


def sft_rows(bot, out: Path) -> list[dict]:
    done = bot.export("sft", out)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


async def test_exports_carry_passages_only_from_exportable_collections_and_consenting_sharers(
    make_user, start_bot, llm, tmp_path: Path
):
    bot = start_bot(data=SECRET, rag={"collections": ["public", "internal"]})
    alice = await make_user("alice")
    bob = await make_user("bob")  # shares a file, never consents
    room = await invite_bot(alice, bot)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    await alice.send(room, "!lucie consent yes")
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "accord est enregistré"))
    for name, text, flag in (
        ("public", "Le guichet unique ouvre à huit heures trente.", "--exportable"),
        ("internal", "Le code du portail interne est 4417 pour les agents.", "--no-exportable"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"{name}.md").write_text(f"# Note\n\n{text}\n")
        assert bot.command("kb", "add", name, str(folder), flag).returncode == 0

    llm.default = Behaviour(text="Voici [1].")

    async def ask(text: str) -> str:
        """Asked, answered and voted 👍 (what makes an SFT row)."""
        asked = await alice.send(room, f"Lucie, {text}", mentions=[bot.user_id])
        await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
        answer = answer_to(alice.events[room], bot.user_id, asked)["event_id"]
        await alice.react(room, answer, "👍")
        await eventually(lambda: _voted(bot, answer))
        return asked

    await ask("à quelle heure ouvre le guichet unique ?")
    internal = await ask("quel est le code du portail interne ?")
    # a follow-up on the internal answer: its own source is public, but the earlier answer it
    # builds on quotes the internal collection, so the row is left out too
    internal_answer = answer_to(alice.events[room], bot.user_id, internal)["event_id"]
    follow = await alice.send(
        room, "Et le guichet unique, à quelle heure ouvre-t-il ?", reply_to=internal_answer
    )
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, follow), 60)
    follow_answer = answer_to(alice.events[room], bot.user_id, follow)["event_id"]
    await alice.react(room, follow_answer, "👍")
    await eventually(lambda: _voted(bot, follow_answer))
    rows = sft_rows(bot, tmp_path / "first.jsonl")
    prompts = [row["messages"][-2]["content"] for row in rows]
    assert any("huit heures trente" in p for p in prompts)
    assert not any("4417" in json.dumps(row) for row in rows)  # not exportable: left out whole
    assert not any("internal" in json.dumps(row) for row in rows)  # nor what builds on it
    assert len(rows) == 1
    grounded = next(r for r in rows if "huit heures trente" in r["messages"][-2]["content"])
    assert grounded["messages"][-1]["content"] == "Voici [1]."  # the bot's source list is not
    assert grounded["metadata"]["grounding"] == "documents"
    await alice.send(room, "!lucie stats")
    stats = await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "Statistiques"))
    assert "3 réponses (dont 3 fondées sur des documents, 0 hors de ce qu'ils couvrent)" in stats

    # a file shared by someone who never consented: answers drawn from it stay out of exports
    note = tmp_path / "bob.txt"
    note.write_text("La réunion d'équipe a lieu le mardi en salle Condorcet.\n")
    shared = await bob.send_file(room, note, "text/plain")
    await bob.send(room, "!lucie docs add", reply_to=shared)
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "bob.txt", "indexé"), 60)
    await ask("où a lieu la réunion d'équipe du mardi ?")
    assert "Condorcet" in last_user_content(llm)
    assert not any("Condorcet" in json.dumps(row) for row in sft_rows(bot, tmp_path / "b.jsonl"))

    # only its sharer or an admin removes it; "forget me" removes what the person shared
    await alice.send(room, "!lucie docs")
    listed = await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "1. bob.txt"))
    assert "salon" in listed
    await bob.send(room, "!lucie forget me")
    await eventually(lambda: _documents_of(bot, bob.user_id, none=True), within=30)
    requests = await bot.query("SELECT request_messages FROM answers")
    assert not any("Condorcet" in (r["request_messages"] or "") for r in requests)
    await alice.send(room, "!lucie docs add", reply_to=shared)  # forgetting is not undone
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "effacé à la demande"))
    assert await _documents_of(bot, bob.user_id, none=True)


async def _voted(bot, answer_event_id: str) -> bool:
    return bool(await bot.query("SELECT 1 FROM votes WHERE answer_event_id = ?", answer_event_id))


async def _documents_of(bot, sharer: str, none: bool) -> bool:
    rows = await bot.query("SELECT COUNT(*) AS n FROM documents WHERE sharer = ?", sharer)
    return (rows[0]["n"] == 0) == none


async def test_only_the_sharer_or_an_admin_removes_a_document(
    make_user, start_bot, llm, tmp_path: Path
):
    bot = start_bot()
    alice = await make_user("alice")  # the room's creator: admin
    bob = await make_user("bob")
    carol = await make_user("carol")
    room = await invite_bot(alice, bot)
    for person in (bob, carol):
        await alice.client.room_invite(room, person.user_id)
        await person.join(room)
    for person, name in ((bob, "b.md"), (alice, "a.md")):
        path = tmp_path / name
        path.write_text(f"# {name}\n\nContenu du fichier {name} pour le salon.\n")
        shared = await person.send_file(room, path, "text/markdown")
        await person.send(room, "!lucie docs add", reply_to=shared)
        await alice.wait_for(room, lambda ev, n=name: notice_with(ev, bot.user_id, n, "indexé"))
    await carol.send(room, "!lucie docs remove 1")
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "Refusé : seule"))
    assert await _documents_of(bot, bob.user_id, none=False)
    await bob.send(room, "!lucie docs remove 1")
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "b.md", "retiré"))
    await alice.send(room, "!lucie docs remove 1")  # now a.md, hers
    await alice.wait_for(room, lambda ev: notice_with(ev, bot.user_id, "a.md", "retiré"))
    assert (await bot.query("SELECT COUNT(*) AS n FROM passages"))[0]["n"] == 0
