"""Typing notices: shown while the model thinks, never while a busy homeserver takes the text.

A real store and the stand-in model over HTTP; the Matrix side is a port whose sends are slow,
as a saturated homeserver's are."""

from __future__ import annotations

from pathlib import Path

from bot.app import build_relay
from bot.config import MatrixSettings, Settings
from bot.core.clock import now_ms
from bot.core.pipeline.pipeline import TYPING_DELAY_S
from bot.core.pseudonyms import LocalPseudonyms
from bot.llm.client import ChatModel
from bot.storage.store import Store
from bot.texts import PromptTexts
from tests.support.chat_port import MemoryPort
from tests.support.fake_llm import Behaviour, FakeLLM


class SlowPort(MemoryPort):
    """A saturated homeserver: every send takes long."""


async def ask(tmp_path: Path, llm: FakeLLM, port: SlowPort) -> None:
    settings = Settings(
        matrix=MatrixSettings(homeserver="http://h", user_id=port.user_id, password="p"),
        llm={"base_url": llm.base_url, "model": "stand-in"},
        data_dir=tmp_path,
    )
    store = await Store.open(tmp_path / "bot.sqlite3")
    model = ChatModel(settings.llm)
    relay = build_relay(settings, store, model, port, PromptTexts(None), LocalPseudonyms(b"k" * 32))
    try:
        await store.rooms.add_room("!dm", now_ms() - 1000)
        event = {
            "type": "m.room.message",
            "event_id": "$question",
            "sender": "@alice:x",
            "origin_server_ts": now_ms(),
            "content": {"msgtype": "m.text", "body": "Bonjour ?"},
        }
        await relay.on_message("!dm", event, is_dm=True)
        await relay.drain(30)  # waits for the answer under way
        row = await store.conversations.answer_for_question("!dm", "$question")
        assert row is not None and row.status == "complete"
        assert row.text == "Réponse à « Bonjour ? »"
    finally:
        await model.aclose()
        await store.close()


async def test_no_typing_once_the_model_has_spoken_even_if_the_send_is_slow(tmp_path, llm):
    llm.default = Behaviour()  # the model answers at once
    port = SlowPort(send_delay=3 * TYPING_DELAY_S)
    await ask(tmp_path, llm, port)
    assert len(port.sent) == 1  # the answer went out, slowly
    assert port.typing_calls == []


async def test_typing_while_the_model_thinks_and_off_at_the_end(tmp_path, llm):
    llm.default = Behaviour(first_delay=3 * TYPING_DELAY_S)
    port = SlowPort(send_delay=0)
    await ask(tmp_path, llm, port)
    assert port.typing_calls == [True, False]
