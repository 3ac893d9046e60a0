"""Consented training data, end to end: a session in a real room, then every export format."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import tomllib
import urllib.parse

import tomli_w

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import answer_to, eventually, final_answer, notices

CONSENT_TITLE = "Données d'entraînement"
# exports refuse a secret shorter than 32 characters
SECRET = {"pseudonym_secret": "e2e-pseudonym-secret-0123456789abcdef"}


def export_on_a_terminal(config, out) -> tuple[bytes, str]:
    """Run an export with stderr on a pseudo-terminal; return stdout and what the screen shows."""
    terminal, other_end = pty.openpty()
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "bot", "export", "--config", str(config), "--format", "kto",
             "--out", str(out)],
            stderr=other_end, stdout=subprocess.PIPE, timeout=60, check=True,
        )  # fmt: skip
        return shown.stdout, os.read(terminal, 4096).decode()
    finally:
        os.close(other_end)
        os.close(terminal)


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_a_session_becomes_consented_pseudonymous_rows_in_every_format(
    make_user, start_bot, llm, tmp_path
):
    bot = start_bot(data=SECRET)
    alice = await make_user("alice")  # consents by command, room admin
    bob = await make_user("bob")  # consents with ✅ on the notice
    carol = await make_user("carol")  # never consents
    dave = await make_user("dave")  # consents, then withdraws
    erin = await make_user("erin")  # consents, then asks to be forgotten
    await alice.client.set_displayname("Alice Martin")  # must never reach an export
    room = await invite_bot(alice, bot)
    for person in (bob, carol, dave, erin):
        await alice.client.room_invite(room, person.user_id)
        await person.join(room)
    notice = await alice.wait_for(
        room,
        lambda ev: [e for e in ev if CONSENT_TITLE in e["content"].get("body", "")],
    )
    assert "CC-BY-4.0" in notice[0]["content"]["body"]

    async def consented(user):
        found = await bot.query(
            "SELECT action FROM consents WHERE user_id = ? ORDER BY id DESC LIMIT 1", user
        )
        return found and found[0]["action"] == "yes"

    for person in (alice, dave, erin):
        await person.send(room, "!lucie consent yes")
    await bob.react(room, notice[0]["event_id"], "\u2705\ufe0f")
    for person in (alice, bob, dave, erin):
        assert await eventually(lambda p=person: consented(p.user_id))

    async def ask(person, text):
        question = await person.send(room, f"Lucie, {text}", mentions=[bot.user_id])
        await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question))
        return question, answer_to(alice.events[room], bot.user_id, question)["event_id"]

    llm.when("haïku", Behaviour(text="Haïku numéro {n}"))
    _, a1 = await ask(alice, "quelle est la capitale de la France ?")
    _, a2 = await ask(carol, "secret de carol : mon code est 4242")
    _, a3 = await ask(alice, "combien de pattes a une araignée ?")
    _, a4 = await ask(alice, "écris un haïku sur la pluie")
    _, a5 = await ask(dave, "question de dave sur les impôts")
    _, a6 = await ask(erin, "question d'erin sur son voisin")
    _, a7 = await ask(alice, "écris à jean.dupont@example.fr, voir https://exemple.fr/page")
    q8, a8 = await ask(alice, "une question que je vais supprimer")

    await bob.react(room, a1, "\U0001f44d")
    await carol.react(room, a1, "\U0001f44d\ufe0f")  # not consenting: never exported
    await dave.react(room, a1, "\U0001f44d\U0001f3fd")
    await alice.react(room, a1, "\u2702\ufe0f")  # ✂️ too long
    await bob.react(room, a1, "\U0001f3af")  # 🎯 accurate
    await alice.react(room, a2, "\U0001f44d")
    await bob.send(room, "!lucie correct Huit pattes.", reply_to=a3)
    await alice.react(room, a4, "\U0001f44e")
    await alice.react(room, a4, "\U0001f501")  # 🔁 regenerate
    await alice.react(room, a5, "\U0001f44d")
    await alice.react(room, a6, "\U0001f44d")
    await erin.react(room, a1, "\U0001f44e")  # erased below
    await alice.react(room, a7, "\U0001f44d")
    await bob.react(room, a8, "\U0001f44d")

    async def sibling_done():
        found = await bot.query(
            "SELECT answer_event_id FROM answers WHERE sibling = 1 AND status = 'complete'"
        )
        return found[0]["answer_event_id"] if found else None

    a4b = await eventually(sibling_done)
    await bob.react(room, a4b, "\U0001f44d")
    await alice.send(room, "!lucie retry", reply_to=a4)  # a third, unvoted sibling

    async def third_done():
        found = await bot.query("SELECT status FROM answers WHERE sibling = 2")
        return found and found[0]["status"] == "complete"

    assert await eventually(third_done)

    async def correction_stored():
        return await bot.query("SELECT * FROM corrections")

    assert (await eventually(correction_stored))[0]["text"] == "Huit pattes."
    await dave.send(room, "!lucie consent no")
    await erin.send(room, "!lucie forget me")
    await alice.redact(room, q8)

    async def settled():
        erased = await bot.query("SELECT 1 FROM consents WHERE action = 'erased'")
        gone = await bot.query("SELECT erased_at FROM answers WHERE question_event_id = ?", q8)
        votes = await bot.query("SELECT COUNT(*) AS n FROM votes")
        withdrawn = await bot.query(
            "SELECT action FROM consents WHERE user_id = ? ORDER BY id DESC LIMIT 1",
            dave.user_id,
        )
        return (
            erased and gone[0]["erased_at"] and withdrawn[0]["action"] == "no"
            and votes[0]["n"] == 11  # every vote but erin's; the correction counts as one
        )  # fmt: skip

    assert await eventually(settled)
    assert not await bot.query("SELECT * FROM messages WHERE sender = ?", erin.user_id)
    assert not await bot.query("SELECT * FROM messages WHERE event_id = ?", q8)
    for gone in (a6, a8):  # the bot's answers to erased questions go too
        assert not await bot.query("SELECT * FROM messages WHERE event_id = ?", gone)
        erased = await bot.query(
            "SELECT text, request_messages FROM answers WHERE answer_event_id = ?", gone
        )
        assert erased == [{"text": None, "request_messages": None}]

    seen = len(notices(alice.events[room], bot.user_id))
    await alice.send(room, "!lucie stats")
    stats = await alice.wait_for(
        room, lambda ev: [n for n in notices(ev, bot.user_id)[seen:] if "Statistiques" in n]
    )
    assert "10 réponses" in stats[0] and "1 corrections" in stats[0]

    exported = {}
    for name in ("sft", "kto", "dpo", "oasst", "openwebui"):
        out = tmp_path / f"{name}.jsonl"
        result = bot.export(name, out)
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        exported[name] = rows(out)
        text = out.read_text(encoding="utf-8")
        for person in (alice, bob, carol, dave, erin):
            localpart = person.user_id[1:].split(":")[0]
            assert localpart not in text  # neither the Matrix id nor the default display name
        assert bot.user_id[1:].split(":")[0] not in text and ":localhost" not in text
        for private in ("carol", "4242", "dave", "erin", "voisin", "supprimer", "Martin"):
            assert private not in text, (name, private)
        assert "jean.dupont@example.fr" not in text and "https://exemple.fr" not in text

    haiku_first, haiku_second = [
        (await bot.query("SELECT text FROM answers WHERE answer_event_id = ?", event))[0]["text"]
        for event in (a4, a4b)
    ]
    assert haiku_first != haiku_second
    # the stand-in echoes the speaker-named turn: names come out masked
    capital = "Réponse à « <NAME>: quelle est la capitale de la France ? »"
    mail = "Réponse à « <NAME>: écris à [EMAIL], voir <URL> »"  # masked before storage
    sft = exported["sft"]
    assert sorted((r["metadata"]["source"], r["messages"][-1]["content"]) for r in sft) == sorted(
        [("vote", capital), ("correction", "Huit pattes."), ("vote", haiku_second),
         ("vote", mail)]
    )  # fmt: skip
    first = next(r for r in sft if r["messages"][-1]["content"] == capital)
    assert first["messages"][0]["role"] == "system" and "Lucie" in first["messages"][0]["content"]
    # exported as the model read it: with the speaker's (masked) name, as in every group room
    assert first["messages"][1] == {
        "role": "user", "content": "<NAME>: quelle est la capitale de la France ?"
    }  # fmt: skip
    meta = first["metadata"]
    # bob only: carol never consented, dave withdrew, erin was erased
    assert len(meta["rater_ids"]) == 1
    assert meta["model"] == "stand-in" and meta["language"] == "fr"
    assert meta["licence"] == "CC-BY-4.0" and meta["consent"]["scope"] == "opt_in"
    assert meta["consent"]["notice_versions"] == [1]
    assert meta["sampling"]["temperature"] == 0.7 and len(meta["prompt_sha256"]) == 64
    assert meta["conversation_id"].startswith("conv_") and meta["author_id"].startswith("user_")

    kto = sorted((r["completion"][0]["content"], r["label"]) for r in exported["kto"])
    assert kto == sorted(
        [(capital, True), ("Réponse à « <NAME>: combien de pattes a une araignée ? »", False),
         (haiku_first, False), (haiku_second, True), (mail, True)]
    )  # fmt: skip
    dpo = exported["dpo"]
    assert sorted(r["metadata"]["source"] for r in dpo) == ["correction", "regeneration"]
    regeneration = next(r for r in dpo if r["metadata"]["source"] == "regeneration")
    assert regeneration["chosen"][0]["content"] == haiku_second
    assert regeneration["rejected"][0]["content"] == haiku_first
    correction = next(r for r in dpo if r["metadata"]["source"] == "correction")
    assert correction["chosen"][0]["content"] == "Huit pattes."
    assert "araignée" in correction["rejected"][0]["content"]

    trees = exported["oasst"]
    assert len(trees) == 4  # questions 1, 3, 4, 7
    haiku = next(t for t in trees if "haïku" in t["prompt"]["text"])
    assert haiku["prompt"]["role"] == "prompter"
    ranks = sorted(reply["rank"] for reply in haiku["prompt"]["replies"])
    assert ranks == [0, 1, 2] and all(r["synthetic"] for r in haiku["prompt"]["replies"])
    assert haiku["prompt"]["replies"][0]["text"] == haiku_second  # the best-voted ranks first
    capital_tree = next(t for t in trees if "capitale" in t["prompt"]["text"])
    reply = capital_tree["prompt"]["replies"][0]
    assert reply["labels"]["too_long"]["count"] == 1 and reply["labels"]["accurate"]["count"] == 1
    assert reply["emojis"] == [{"name": "+1", "count": 1}] and reply["review_count"] == 1
    spider = next(t for t in trees if "araignée" in t["prompt"]["text"])
    human = [r for r in spider["prompt"]["replies"] if not r["synthetic"]]
    assert human[0]["text"] == "Huit pattes." and human[0]["rank"] == 0

    feedback = exported["openwebui"]
    # bob on the capital, bob's correction, alice and bob on the haïkus, alice on the e-mail
    assert len(feedback) == 5
    assert {r["data"]["rating"] for r in feedback} == {1, -1}
    assert all(r["type"] == "rating" and r["snapshot"]["chat"]["messages"] for r in feedback)
    assert any(r["data"]["comment"] == "Huit pattes." for r in feedback)

    os.environ["HF_DATASETS_OFFLINE"] = "1"  # the loader must not reach for a hub
    from datasets import load_dataset

    expected_columns = {
        "sft": {"messages"},
        "kto": {"prompt", "completion", "label"},
        "dpo": {"prompt", "chosen", "rejected"},
        "oasst": {"message_tree_id", "prompt"},
        "openwebui": {"id", "user_id", "data", "meta", "snapshot"},
    }
    for name, columns in expected_columns.items():
        dataset = load_dataset(
            "json", data_files=str(tmp_path / f"{name}.jsonl"), split="train",
            cache_dir=str(tmp_path / "hf-cache"),
        )  # fmt: skip
        assert columns <= set(dataset.column_names), name
        assert len(dataset) == len(exported[name])


async def test_collection_switches_filters_and_export_errors(make_user, start_bot, llm, tmp_path):
    off = start_bot(data={**SECRET, "collection": "off"})
    alice = await make_user("alice")
    room = await invite_bot(alice, off)
    await alice.send(room, "!lucie consent yes")
    refused = await alice.wait_for(
        room, lambda ev: [n for n in notices(ev, off.user_id) if "désactivée" in n]
    )
    assert refused
    assert not [n for n in notices(alice.events[room], off.user_id) if CONSENT_TITLE in n]
    result = off.export("sft", tmp_path / "off.jsonl")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "collection is off" in result.stderr

    bot = start_bot(data=SECRET)
    kept, closed = await invite_bot(alice, bot), await invite_bot(alice, bot)
    await alice.send(kept, "!lucie consent yes")
    for target in (kept, closed):
        question = await alice.send(target, "Lucie, bonjour", mentions=[bot.user_id])
        await alice.wait_for(target, lambda ev, q=question: final_answer(ev, bot.user_id, q))
        answer = answer_to(alice.events[target], bot.user_id, question)["event_id"]
        await alice.react(target, answer, "\U0001f44d")
    await alice.send(closed, "!lucie collect off")
    await alice.wait_for(
        closed, lambda ev: [n for n in notices(ev, bot.user_id) if "collecte" in n.lower()]
    )

    async def both_votes():
        return len(await bot.query("SELECT 1 FROM votes")) == 2

    assert await eventually(both_votes)
    out = tmp_path / "kto.jsonl"
    assert bot.export("kto", out).returncode == 0
    assert len(rows(out)) == 1  # the closed room's answer stays out
    assert bot.export("kto", out, "--room", closed).returncode == 0 and rows(out) == []
    assert bot.export("kto", out, "--room", kept).returncode == 0 and len(rows(out)) == 1
    assert bot.export("kto", out, "--since", "2999-01-01").returncode == 0 and rows(out) == []

    # progress is shown on a terminal, and only a summary line when piped
    piped = bot.export("kto", out)
    assert piped.stdout.strip() == f"1 rows written to {out}" and piped.stderr == ""
    stdout, screen = export_on_a_terminal(bot.config_path, out)
    assert f"1 rows written to {out}" in screen and stdout == b""

    # consent given with ✅ and taken back by removing the ✅: nothing of alice's is exported
    notice = next(e for e in alice.events[kept] if CONSENT_TITLE in e["content"].get("body", ""))
    tick = await alice.react(kept, notice["event_id"], "\u2705")

    async def latest_consent():
        found = await bot.query(
            "SELECT action, source_event_id FROM consents ORDER BY id DESC LIMIT 1"
        )
        return found[0] if found else None

    assert (await eventually(lambda: _with(latest_consent, tick)))["action"] == "yes"
    await alice.redact(kept, tick)

    async def withdrawn():
        return (await latest_consent())["action"] == "no"

    assert await eventually(withdrawn)
    assert bot.export("kto", out).returncode == 0 and rows(out) == []

    cases = [
        (bot.export("xml", out), "invalid choice: 'xml'"),
        (bot.export("sft", out, "--since", "hier"), "not a date"),
        (bot.export("sft", tmp_path / "missing" / "x.jsonl"), "does not exist"),
    ]
    for result, message in cases:
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr


async def _with(query, event_id):
    """The query's row once it is the one made by this event."""
    row = await query()
    return row if row and row["source_event_id"] == event_id else None


async def test_votes_once_collection_pauses_notice_versions_and_tchap_names(
    make_user, start_bot, llm, tmp_path
):
    bot = start_bot(data=SECRET)
    jeanne = await make_user("jeanne")
    bob = await make_user("bob")
    await jeanne.client.set_displayname("Jeanne Dupont [Intérieur]")
    room = await invite_bot(jeanne, bot)
    await jeanne.client.room_invite(room, bob.user_id)
    await bob.join(room)
    for person in (jeanne, bob):
        await person.send(room, "!lucie consent yes")

    async def ask(text):
        question = await jeanne.send(room, f"Lucie, {text}", mentions=[bot.user_id])
        await jeanne.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question))
        return answer_to(jeanne.events[room], bot.user_id, question)["event_id"]

    async def said(fragment):
        return await jeanne.wait_for(
            room, lambda ev: [n for n in notices(ev, bot.user_id) if fragment in n]
        )

    kept = await ask("je suis Jeanne Dupont, Dupont pour les intimes.")
    for key in ("\U0001f44d", "\U0001f44d\ufe0f", "\U0001f44d\U0001f3fd"):  # one opinion
        await jeanne.react(room, kept, key)
    await bob.react(room, kept, "\U0001f44e")
    await bob.react(room, kept, "\U0001f44d")  # bob changes his mind: his latest vote stands
    await jeanne.send(room, "!lucie collect off")
    await said(": off.")
    paused = await ask("question pendant la pause")
    await jeanne.send(room, "!lucie collect on")
    await said(": on.")
    await jeanne.react(room, paused, "\U0001f44d")

    async def all_votes():
        return len(await bot.query("SELECT 1 FROM votes")) == 6

    assert await eventually(all_votes)
    out = tmp_path / "kto.jsonl"
    result = bot.export("kto", out)
    assert result.returncode == 0, result.stderr
    (row,) = rows(out)  # the answer made while collection was off is never exported
    assert row["label"] is True and len(row["metadata"]["rater_ids"]) == 2
    text = out.read_text(encoding="utf-8")
    for leaked in ("Jeanne", "Dupont", "jeanne", "pendant la pause"):
        assert leaked not in text, leaked
    assert bot.export("oasst", out).returncode == 0
    (tree,) = rows(out)
    assert tree["prompt"]["replies"][0]["review_count"] == 2

    # a new consent notice: consents given to the old one no longer count
    config = tomllib.loads(bot.config_path.read_text(encoding="utf-8"))
    config["data"]["notice_version"] = 2
    bot.config_path.write_text(tomli_w.dumps(config), encoding="utf-8")
    assert bot.export("kto", out).returncode == 0 and rows(out) == []


async def test_an_operator_redacting_the_bots_messages_erases_its_answers(
    make_user, start_bot, synapse, llm
):
    """Synapse's admin API redacts a user's events as that user: the redactions come from the
    bot's own account, and must erase what they redact like any other."""
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    question = await alice.send(room, "Une question à effacer ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 60)
    answer = answer_to(alice.events[room], bot.user_id, question)["event_id"]
    assert (await bot.settled("SELECT text FROM answers"))[0]["text"]

    synapse.request(
        "POST",
        f"/_synapse/admin/v1/user/{urllib.parse.quote(bot.user_id)}/redact",
        {"rooms": [room]},
        token=synapse.admin.access_token,
    )

    async def erased() -> bool:
        rows = await bot.query(
            "SELECT text, erased_at FROM answers WHERE answer_event_id = ?", answer
        )
        kept = await bot.query("SELECT body FROM messages WHERE event_id = ?", answer)
        return bool(rows and rows[0]["text"] is None and rows[0]["erased_at"]) and (
            not kept or not kept[0]["body"]
        )

    await eventually(erased, within=60)
