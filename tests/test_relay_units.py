"""The relay without Synapse: commands, consent and regeneration through the wiring of bot.app,
a real database and the stand-in model over HTTP; and an export of what the model really read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_relay
from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.pseudonyms import LocalPseudonyms
from bot.core.relay import Relay
from bot.export.writer import ExportRequest, export
from bot.llm.client import ChatModel
from bot.storage.store import Store
from bot.texts import PromptTexts
from tests.support.chat_port import MemoryPort
from tests.support.fake_llm import FakeLLM

ROOM = "!room:x"
SECRET = "a-pseudonym-secret-of-at-least-32-characters"


@pytest.fixture
async def parts(tmp_path: Path, llm: FakeLLM):
    made: list[tuple[Relay, Store, ChatModel]] = []

    async def make(port: MemoryPort, **sections: Any) -> tuple[Relay, Store, Settings]:
        settings = Settings(
            matrix={"homeserver": "http://h", "user_id": port.user_id, "password": "p"},
            llm={"base_url": llm.base_url, "model": "stand-in", **sections.pop("llm", {})},
            bot={"edit_interval_s": 0.05, "first_text_delay_s": 0, **sections.pop("bot", {})},
            data={"pseudonym_secret": SECRET},
            data_dir=tmp_path,
        )
        store = await Store.open(tmp_path / "lucie-bot.sqlite3")
        model = ChatModel(settings.llm)
        relay = build_relay(
            settings, store, model, port, PromptTexts(None), LocalPseudonyms(b"k" * 32)
        )
        await store.rooms.add_room(ROOM, now_ms() - 60_000)
        made.append((relay, store, model))
        return relay, store, settings

    yield make
    for relay, store, model in made:
        await relay.drain(5)
        await model.aclose()
        await store.close()


class Room:
    """People writing in one room, through the relay as the transport would hand it events."""

    def __init__(self, relay: Relay, port: MemoryPort) -> None:
        self.relay, self.port, self.count = relay, port, 0

    async def say(self, sender: str, body: str, reply_to: str | None = None) -> str:
        self.count += 1
        event_id = f"$m{self.count}"
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        event = {"type": "m.room.message", "event_id": event_id, "sender": sender,
                 "origin_server_ts": now_ms(), "content": content}  # fmt: skip
        await self.relay.on_message(ROOM, event, is_dm=self.port.dm)
        await self.relay.tasks.drain(30)  # its answer or command reply, whole
        return event_id

    async def react(self, sender: str, target: str, key: str) -> None:
        self.count += 1
        relation = {"rel_type": "m.annotation", "event_id": target, "key": key}
        event = {"type": "m.reaction", "event_id": f"$r{self.count}", "sender": sender,
                 "origin_server_ts": now_ms(), "content": {"m.relates_to": relation}}  # fmt: skip
        await self.relay.on_reaction(ROOM, event)
        await self.relay.tasks.drain(30)


async def test_commands_consent_and_regeneration_through_the_relay(parts, llm):
    port = MemoryPort(dm=False)
    port.power_levels = {"users": {"@admin:x": 100}, "users_default": 0}
    port.names[port.user_id] = "Lucie"
    relay, store, _ = await parts(port)
    room = Room(relay, port)

    await room.say("@member:x", "!lucie prompt set Réponds en alexandrins.")
    assert port.bodies(msgtype="m.notice")[-1].startswith("Refusé")
    await room.say("@admin:x", "!lucie prompt set Réponds en alexandrins.")
    assert (await store.rooms.current_prompt(ROOM)).text == "Réponds en alexandrins."
    await room.say("@member:x", "!lucie consent yes")
    assert (await store.feedback.consent("@member:x"))[0] == "yes"

    asked = await room.say("@member:x", "Lucie, une question ?")
    assert "\n\nRéponds en alexandrins.\n\n" in llm.requests[-1]["body"]["messages"][0]["content"]
    first = await store.conversations.answer_for_question(ROOM, asked)
    assert first.status == "complete" and first.answer_event_id
    await room.react("@member:x", first.answer_event_id, "\U0001f501")  # 🔁
    assert await store.conversations.siblings(ROOM, asked) == 2
    await room.say("@admin:x", "!lucie stats")
    assert "2 réponses" in port.bodies(msgtype="m.notice")[-1]
    await room.say("@member:x", "!lucie help")
    assert "`!lucie collect on|off` : " in port.bodies(msgtype="m.notice")[-1]


async def test_a_long_chain_trimmed_by_the_budget_exports_only_the_kept_turns(parts, llm, tmp_path):
    port = MemoryPort(dm=True)
    relay, store, settings = await parts(port, llm={"context_tokens": 120})
    room = Room(relay, port)
    await room.say("@alice:x", "!lucie consent yes")
    words = " ".join(f"mot{n}" for n in range(40))  # about 40 tokens for the stand-in's count
    asked = [await room.say("@alice:x", f"Question {n} : {words}") for n in range(4)]
    last = await store.conversations.answer_for_question(ROOM, asked[-1])
    rows = await store.db.all(
        "SELECT context_event_ids, request_messages FROM answers WHERE id = ?", last.id
    )
    kept = json.loads(rows[0]["context_event_ids"])
    sent = json.loads(rows[0]["request_messages"])
    assert kept[-1] == asked[-1] and asked[0] not in kept  # the oldest turns were dropped
    assert len(sent) == len(kept) + 1  # the system prompt, then exactly the kept turns
    await room.react("@alice:x", last.answer_event_id, "\U0001f44d")

    out = tmp_path / "kto.jsonl"
    await export(settings, ExportRequest("kto", out), None)
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    row = next(r for r in exported if r["completion"][0]["content"] == last.text)
    assert row["prompt"] == sent  # what the model read, no more, no less
    assert "Question 0" not in json.dumps(row["prompt"], ensure_ascii=False)


async def test_only_redactions_the_homeserver_would_apply_withdraw_or_erase(parts):
    port = MemoryPort(dm=False)
    port.names[port.user_id] = "Lucie"
    port.power_levels = {"users": {"@mod:other.example": 50}, "users_default": 0}
    relay, store, _ = await parts(port)
    room = Room(relay, port)
    asked = await room.say("@alice:x", "Lucie, une question ?")
    answer = await store.conversations.answer_for_question(ROOM, asked)
    await room.react("@alice:x", answer.answer_event_id, "\U0001f44d")
    vote = f"$r{room.count}"

    async def redact(sender: str, target: str) -> None:
        room.count += 1
        event = {"type": "m.room.redaction", "event_id": f"$x{room.count}", "sender": sender,
                 "redacts": target, "origin_server_ts": now_ms(), "content": {}}  # fmt: skip
        await relay.on_redaction(ROOM, event)

    async def standing() -> int:
        rows = await store.db.all("SELECT COUNT(*) FROM current_votes")
        return rows[0][0]

    # another server's member: Synapse passes the event on without applying it
    await redact("@mallory:evil.example", vote)
    await redact("@mallory:evil.example", asked)
    assert await standing() == 1
    assert (await store.conversations.answer_for_question(ROOM, asked)).text is not None
    await redact("@alice:x", vote)  # her own
    assert await standing() == 0
    await redact("@mod:other.example", asked)  # a moderator
    assert (await store.conversations.answer_for_question(ROOM, asked)).text is None


async def test_commands_and_reactions_past_a_persons_share_are_ignored(parts):
    port = MemoryPort(dm=False)
    port.names[port.user_id] = "Lucie"
    relay, store, _ = await parts(port, bot={"commands_per_person": 2, "reactions_per_person": 2})
    room = Room(relay, port)
    for _ in range(4):
        await room.say("@flood:x", "!lucie help")
    assert len(port.bodies(msgtype="m.notice")) == 2  # two answered, the rest cost nothing
    await room.say("@other:x", "!lucie help")  # someone else still gets an answer
    assert len(port.bodies(msgtype="m.notice")) == 3

    asked = await room.say("@other:x", "Lucie, une question ?")
    answer = await store.conversations.answer_for_question(ROOM, asked)
    for key in ("\U0001f44d", "\U0001f44e", "\U0001f44d\ufe0f", "\U0001f44e\ufe0f"):
        await room.react("@flood:x", answer.answer_event_id, key)
    rows = await store.db.all("SELECT COUNT(*) FROM votes WHERE sender = '@flood:x'")
    assert rows[0][0] == 2


async def test_identifiers_are_masked_in_edits_and_corrections_too(parts, llm):
    port = MemoryPort()
    relay, store, _ = await parts(port)
    room = Room(relay, port)
    iban = "FR76 3000 6000 0112 3456 7890 189"
    asked = await room.say("@alice:x", "Une question ?")
    edit = {
        "type": "m.room.message",
        "event_id": "$edit",
        "sender": "@alice:x",
        "origin_server_ts": now_ms(),
        "content": {
            "msgtype": "m.text",
            "body": f"* Une question ? IBAN {iban}",
            "m.new_content": {"msgtype": "m.text", "body": f"Une question ? IBAN {iban}"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": asked},
        },
    }
    await relay.on_message(ROOM, edit, is_dm=True)
    stored = await store.conversations.message(ROOM, asked)
    assert stored is not None and "[IBAN]" in stored.body and "3000 6000" not in stored.body

    answer = await store.conversations.answer_for_question(ROOM, asked)
    await room.say(
        "@alice:x", "!lucie correct Écrivez à jean.dupont@example.org", answer.answer_event_id
    )
    rows = await store.db.all("SELECT text FROM corrections")
    assert [r["text"] for r in rows] == ["Écrivez à [EMAIL]"]


async def test_a_regenerations_tokens_count_against_whoever_asked_for_it(parts, llm):
    port = MemoryPort(dm=False)
    port.names[port.user_id] = "Lucie"
    relay, store, _ = await parts(port)
    room = Room(relay, port)
    asked = await room.say("@alice:x", "Lucie, une question ?")
    first = await store.conversations.answer_for_question(ROOM, asked)
    await room.react("@mallory:x", first.answer_event_id, "\U0001f501")  # 🔁 on alice's answer
    assert await store.conversations.siblings(ROOM, asked) == 2

    people = LocalPseudonyms(b"k" * 32)

    async def tokens(person: str) -> int:
        row = await store.db.one(
            "SELECT COALESCE(SUM(amount), 0) FROM usage WHERE scope = ? AND kind = 'tokens'",
            f"person:{people.of(person)}",
        )
        return int(row[0])

    alice, mallory = await tokens("@alice:x"), await tokens("@mallory:x")
    assert alice > 0 and mallory > 0 and alice == mallory  # one answer each, not two for alice
