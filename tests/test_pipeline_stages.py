"""The answer pipeline's extension points: a request filter that refuses, an output filter that
replaces text while it streams and at the end, and a context source, each added as one object
beside the existing stages; the record names what took part."""

from __future__ import annotations

import json
from pathlib import Path

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.context import Turn
from bot.core.history import History
from bot.core.metrics import Metrics
from bot.core.pipeline.context_sources import Conversation, RoomPrompt
from bot.core.pipeline.pipeline import AnswerPipeline
from bot.core.pipeline.stages import AnswerJob, Refusal, Verdict
from bot.core.records import MessageRow
from bot.core.rooms import Rooms
from bot.core.tasks import Tasks
from bot.llm.client import ChatModel
from bot.storage.store import Store
from bot.texts import PromptTexts
from tests.support.chat_port import MemoryPort
from tests.support.fake_llm import Behaviour, FakeLLM

ROOM = "!dm:x"


class Glossary:
    name = "glossary"

    async def add(self, job: AnswerJob) -> None:
        job.turns.insert(0, Turn("user", "Glossaire : DGFiP = finances publiques."))
        job.sources.append(self.name)


class NoPasswords:
    name = "no_passwords"

    async def check(self, job: AnswerJob) -> Refusal | None:
        if "mot de passe" in job.question.body:
            return Refusal("asks for a password", "Je ne traite pas les mots de passe.")
        return None


class Redact:
    """Replaces a forbidden word wherever it shows, while streaming and at the end."""

    name = "redact"

    def streaming(self, text: str) -> Verdict:
        return Verdict(text.replace("interdit", "[retiré]"), replaced="interdit" in text)

    async def final(self, text: str) -> Verdict:
        return self.streaming(text)


async def pipeline_for(tmp_path: Path, llm: FakeLLM, port: MemoryPort):
    settings = Settings(
        matrix={"homeserver": "http://h", "user_id": port.user_id, "password": "p"},
        llm={"base_url": llm.base_url, "model": "stand-in"},
        bot={"edit_interval_s": 0.05, "first_text_delay_s": 0},
        data_dir=tmp_path,
    )
    store = await Store.open(tmp_path / "bot.sqlite3")
    model = ChatModel(settings.llm)
    prompts = PromptTexts(None)
    rooms = Rooms(settings, store.rooms, port, prompts, Tasks())
    history = History(settings.bot, store.conversations, port)
    pipeline = AnswerPipeline(
        settings,
        (store.conversations, rooms, model, port, Metrics()),
        sources=[RoomPrompt(store.rooms, prompts), Conversation(history), Glossary()],
        request_filters=[NoPasswords()],
        output_filters=[Redact()],
    )
    await store.rooms.add_room(ROOM, now_ms() - 1000)
    return pipeline, store, model


async def ask(pipeline: AnswerPipeline, store: Store, event_id: str, body: str):
    question = MessageRow(event_id, ROOM, "@alice:x", None, body, now_ms(), None, None, False)
    await store.conversations.save_message(question)
    row = await store.conversations.queue_answer(ROOM, event_id, question.ts, None, now_ms())
    await pipeline.answer(row, is_dm=True)
    rows = await store.db.all("SELECT * FROM answers WHERE id = ?", row.id)
    return rows[0]


async def test_filters_and_sources_take_part_and_are_recorded(tmp_path, llm):
    port = MemoryPort()
    pipeline, store, model = await pipeline_for(tmp_path, llm, port)
    try:
        refused = await ask(pipeline, store, "$q1", "Donne-moi le mot de passe")
        assert llm.requests == []  # refused before the model
        assert refused["status"] == "error" and refused["error"].startswith("refused by")
        assert port.bodies(ROOM, "m.notice") == ["Je ne traite pas les mots de passe."]

        llm.when(
            "interdit",
            Behaviour(text="Voici un mot interdit et un autre interdit.", token_delay=0.05),
        )
        row = await ask(pipeline, store, "$q2", "Dis un mot interdit")
        shown = [
            c.get("m.new_content", c)["body"] for _, c in port.sent if c["msgtype"] == "m.text"
        ]
        assert shown and all(
            "interdit" not in text for text in shown
        )  # never visible, even mid-way
        assert row["text"] == "Voici un mot [retiré] et un autre [retiré]."
        stages = json.loads(row["stages"])
        assert stages == {
            "sources": ["room_prompt", "conversation", "glossary"],
            "filters": ["no_passwords", "redact"],
            "replaced": ["redact"],
        }
        sent = llm.requests[-1]["body"]["messages"]
        assert "Glossaire" in sent[1]["content"]  # the added source reached the model
    finally:
        await model.aclose()
        await store.close()
