"""Answers the homeserver refuses, answers too large for one event, answers that never end, and
the model slot: with small fakes, a real store, no homeserver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosqlite
import pytest
from nio import RoomSendError, RoomSendResponse

from bot.app import build_relay
from bot.config import MatrixSettings, Settings
from bot.core.clock import now_ms
from bot.core.ports import RateLimited, SendFailed, SendRefused
from bot.core.pseudonyms import LocalPseudonyms
from bot.core.records import AnswerRow
from bot.core.relay import Relay
from bot.core.render import edit_content
from bot.core.streaming import ReplyStream, SendPace, retrying, send_notice
from bot.llm.client import StreamResult, estimate_tokens
from bot.matrix.transport import MatrixTransport
from bot.storage.store import Store
from bot.texts import PromptTexts, say
from tests.support.chat_port import MemoryPort
from tests.support.matrix_user import eventually

BOUND_S = 30  # far beyond any wait these tests need: reaching it means a wait had no end
MAX_EVENT_BYTES = 65_536  # Synapse's limit on a whole event (its canonical JSON)


# Sends the homeserver refuses for good
async def test_retrying_gives_up_at_once_on_a_refusal():
    calls = 0

    async def send() -> str:
        nonlocal calls
        calls += 1
        raise SendRefused("M_UNKNOWN: Relations must be in the same room")

    with pytest.raises(SendRefused):
        await asyncio.wait_for(retrying(send, give_up_after_s=600), BOUND_S)
    assert calls == 1


class RefusingPort:
    """Refuses, for good, every message in a thread; takes the others."""

    user_id = "@bot:x"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []

    async def send(self, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        relation = content.get("m.relates_to") or {}
        if relation.get("rel_type") == "m.thread":
            self.refused.append(content)
            raise SendRefused("M_UNKNOWN: Relations must be in the same room (HTTP 400)")
        self.sent.append(content)
        return f"$sent{len(self.sent)}"


def reply_stream(
    port: Any, thread_root: str | None, max_edits: int = 5, **options: Any
) -> ReplyStream:
    async def first_event(event_id: str) -> None:
        pass

    return ReplyStream(
        port,
        "!r",
        reply_to="$q",
        thread_root=thread_root,
        mention="@a:x",
        interval=0.05,
        max_edits=max_edits,
        final_timeout=600,
        on_first_event=first_event,
        **options,
    )


async def test_a_refused_reply_ends_at_once_without_retrying():
    port = RefusingPort()
    reply = reply_stream(port, thread_root="$elsewhere")
    reply.update("Début")

    async def refused() -> bool:  # the first message is tried, and refused
        return reply.refused is not None

    await eventually(refused, within=BOUND_S)
    reply.update("Début de la réponse")
    assert await asyncio.wait_for(reply.finish("Début de la réponse"), BOUND_S) is False
    assert len(port.refused) == 1 and port.sent == []


async def test_a_refused_notice_goes_out_without_its_relations():
    port = RefusingPort()
    event_id = await asyncio.wait_for(
        send_notice(port, "!r", "⚠️ avis", reply_to="$q", thread="$elsewhere"), BOUND_S
    )
    assert event_id == "$sent1"
    assert len(port.refused) == 1
    assert "m.relates_to" not in port.sent[0] and port.sent[0]["body"] == "⚠️ avis"


class StubClient:
    def __init__(self, response: Any) -> None:
        self.response = response

    async def room_send(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def refusal(status: int, errcode: str | None, message: str = "nope") -> RoomSendError:
    response = RoomSendError(message, errcode, 2000 if status == 429 else None)
    response.transport_response = SimpleNamespace(status=status)  # type: ignore[assignment]
    return response


@pytest.mark.parametrize(
    ("response", "raised"),
    [
        (refusal(400, "M_UNKNOWN", "Relations must be in the same room"), SendRefused),
        (refusal(413, "M_TOO_LARGE"), SendRefused),
        (refusal(403, "M_FORBIDDEN"), SendRefused),
        (refusal(404, "M_NOT_FOUND"), SendRefused),
        (refusal(429, "M_LIMIT_EXCEEDED"), RateLimited),
        (refusal(401, "M_UNKNOWN_TOKEN"), SendFailed),  # the sync loop logs in again
        (refusal(500, "M_UNKNOWN"), SendFailed),
        (refusal(502, None), SendFailed),
        (TimeoutError(), SendFailed),
    ],
)
async def test_the_transport_tells_refusals_from_passing_failures(response, raised):
    transport = MatrixTransport.__new__(MatrixTransport)
    transport.client = StubClient(response)  # type: ignore[assignment]
    with pytest.raises(raised) as caught:
        await transport.send("!r", {"msgtype": "m.text", "body": "x"}, "txn")
    if raised is SendFailed:
        assert not isinstance(caught.value, SendRefused)


async def test_the_transport_returns_the_event_id_it_got():
    transport = MatrixTransport.__new__(MatrixTransport)
    transport.client = StubClient(RoomSendResponse("$ok", "!r"))  # type: ignore[assignment]
    assert await transport.send("!r", {"msgtype": "m.text", "body": "x"}, "txn") == "$ok"


# The relay, a real store, a model and a homeserver that are fakes
class Port(MemoryPort):
    """Refuses, for good, a thread rooted in another room, as Synapse does."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = _rooted_elsewhere


def _rooted_elsewhere(content: dict[str, Any]) -> bool:
    relation = content.get("m.relates_to") or {}
    return relation.get("rel_type") == "m.thread" and relation.get("event_id") == "$elsewhere"


class CountingText(str):
    """A delta that counts the characters copied when text is added to it, or it to text."""

    copied = 0

    def __add__(self, other: str) -> str:
        CountingText.copied += len(self) + len(other)
        return str.__add__(self, other)

    def __radd__(self, other: str) -> str:
        CountingText.copied += len(self) + len(other)
        return str.__add__(other, self)


class ScriptedModel:
    """The model side of the relay, answering from a script, watched while it streams."""

    model = "scripted"

    def __init__(self, deltas: list[str], endless: bool = False) -> None:
        self.deltas = deltas
        self.endless = endless
        self.backends = [SimpleNamespace(base_url="http://scripted")]
        self.streams = 0  # requests made
        self.open = 0  # requests still streaming
        self.closed_early = 0  # streams the relay walked away from
        self.ended = asyncio.Event()  # set once a stream has ended

    def can_fail_over(self) -> bool:
        return False

    async def server_waiting(self) -> int | None:
        return None  # no /metrics: the number of slots stays as configured

    async def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(estimate_tokens(m["content"]) + 4 for m in messages)

    async def stream(
        self, messages: list[dict[str, str]], sampling: Any, result: StreamResult
    ) -> AsyncIterator[str]:
        self.streams += 1
        self.open += 1
        done = False
        try:
            index = 0
            while index < len(self.deltas) or self.endless:
                if index % 50 == 0:
                    await asyncio.sleep(0)  # as a real stream does between network reads
                result.tokens += 1
                yield self.deltas[index % len(self.deltas)]
                index += 1
            result.finish_reason = "stop"
            done = True
        finally:
            self.open -= 1
            self.closed_early += not done
            self.ended.set()


async def relay_for(tmp_path: Path, model: Any, port: Port, **bot: Any) -> tuple[Relay, Store]:
    settings = Settings(
        matrix=MatrixSettings(homeserver="http://h", user_id=port.user_id, password="p"),
        llm={"base_url": "http://scripted/v1", "model": "scripted", "max_concurrent_requests": 1},
        bot={"edit_interval_s": 0.05, "first_text_delay_s": 0, **bot},
        data_dir=tmp_path,
    )
    store = await Store.open(tmp_path / "bot.sqlite3")
    relay = build_relay(settings, store, model, port, PromptTexts(None), LocalPseudonyms(b"k" * 32))  # type: ignore[arg-type]
    return relay, store


async def ask(
    relay: Relay, store: Store, room_id: str, event_id: str, thread_root: str | None = None
) -> None:
    if await store.rooms.room(room_id) is None:
        await store.rooms.add_room(room_id, now_ms() - 1000)
    content: dict[str, Any] = {"msgtype": "m.text", "body": "Une question ?"}
    if thread_root:
        content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread_root}
    event = {
        "type": "m.room.message",
        "event_id": event_id,
        "sender": "@alice:x",
        "origin_server_ts": now_ms(),
        "content": content,
    }
    await relay.on_message(room_id, event, is_dm=True)


async def finished(store: Store, room_id: str, event_id: str) -> AnswerRow:
    """The answer's record once it has a final status (bounded by BOUND_S)."""
    async with asyncio.timeout(BOUND_S):
        while True:
            row = await store.conversations.answer_for_question(room_id, event_id)
            if row is not None and row.status not in ("queued", "streaming"):
                return row
            await asyncio.sleep(0.02)


async def test_text_is_joined_only_when_sent_not_at_every_delta(tmp_path):
    deltas = 8_000  # an answer that still fits in one event
    model = ScriptedModel([CountingText("a")] * deltas)
    port = Port()
    relay, store = await relay_for(tmp_path, model, port)
    CountingText.copied = 0
    try:
        await ask(relay, store, "!dm", "$question")
        row = await finished(store, "!dm", "$question")
    finally:
        await relay.drain(BOUND_S)
        await store.close()
    assert row.status == "complete" and row.text == "a" * deltas
    # adding each delta to the text so far copied it whole each time: 32 million characters
    assert CountingText.copied <= 4 * deltas
    assert len(port.sent) <= 20 + 2  # the first message, its edits (capped), the final one


async def test_an_endless_answer_is_cut_to_one_event_and_its_stream_closed(tmp_path):
    # markup that HTML makes longer, and characters JSON escapes: more than one plain letter each
    model = ScriptedModel(["Un <b>mot</b> & « é » ", "**gras** ", "`x < y` "], endless=True)
    port = Port()
    relay, store = await relay_for(tmp_path, model, port, max_edits_per_answer=5)
    try:
        await ask(relay, store, "!dm", "$question")
        row = await finished(store, "!dm", "$question")
        await ask(relay, store, "!other", "$next")  # the slot went back: the next one is served
        await finished(store, "!other", "$next")
    finally:
        await relay.drain(BOUND_S)
        await store.close()
    assert model.closed_early >= 1 and model.open == 0
    marker = say("fr", "answer.incomplete")
    assert row.status == "cut" and row.text is not None and row.text.endswith(marker)
    final = [c for room, c in port.sent if room == "!dm"][-1]
    assert final["m.new_content"]["body"] == row.text
    # an edit as the homeserver gets it, encrypted (base64 of the JSON: 4/3 as long) or not
    size = len(json.dumps(final, separators=(",", ":")))
    assert size * 4 / 3 + 4096 < MAX_EVENT_BYTES
    assert port.texts("!dm") == [row.text]


async def test_final_edits_wait_outside_the_model_slot(tmp_path):
    model = ScriptedModel(["Une ", "réponse."])
    port = Port()
    relay, store = await relay_for(tmp_path, model, port)
    try:
        port.failing.add("!busy")  # its homeserver takes nothing for now
        await ask(relay, store, "!busy", "$first")
        await asyncio.wait_for(model.ended.wait(), BOUND_S)  # the model has said it all
        await ask(relay, store, "!quiet", "$second")
        second = await finished(store, "!quiet", "$second")  # while the first still waits
        first = await store.conversations.answer_for_question("!busy", "$first")
        assert first is not None and first.status == "streaming"
        port.failing.clear()
        first = await finished(store, "!busy", "$first")
    finally:
        await relay.drain(BOUND_S)
        await store.close()
    assert second.status == "complete" and first.status == "complete"
    assert port.texts("!busy") == ["Une réponse."]


async def test_an_answer_the_homeserver_refuses_ends_with_a_plain_notice(tmp_path):
    model = ScriptedModel(["Une ", "réponse ", "assez ", "longue."])
    port = Port()
    relay, store = await relay_for(tmp_path, model, port, final_edit_timeout_s=600)
    try:
        await ask(relay, store, "!dm", "$question", thread_root="$elsewhere")
        row = await finished(store, "!dm", "$question")
        assert await store.conversations.open_answers() == []  # nothing for a restart to send again
    finally:
        await relay.drain(BOUND_S)
        await store.close()
    async with aiosqlite.connect(tmp_path / "bot.sqlite3") as db:
        (error,) = await (await db.execute("SELECT error FROM answers")).fetchone()
    assert row.status == "error" and error.startswith("refused")
    assert row.answer_event_id is None
    assert model.open == 0
    notices = [c for _, c in port.sent if c["msgtype"] == "m.notice"]
    assert [n["body"] for n in notices] == [say("fr", "error.refused")]
    assert "m.relates_to" not in notices[0]
    assert all(c["msgtype"] == "m.notice" for _, c in port.sent)  # the answer never went out
    assert port.refused  # tried once in the thread, and refused
    assert len([c for c in port.refused if c["msgtype"] == "m.text"]) == 1


def test_an_edit_of_the_longest_text_allowed_fits_in_one_event():
    from bot.core.answer_size import fit_to_event

    text = "Un <b>mot</b> & « é » 🙂 " * 5000
    marker = say("en", "answer.incomplete")
    final = fit_to_event(f"{text}\n\n{marker}", text, marker, "@a:x")
    assert final.endswith(marker) and text.startswith(final.removesuffix(marker).rstrip())
    size = len(json.dumps(edit_content("$" + "e" * 43, final, mention="@a:x")))
    assert size * 4 / 3 + 4096 < MAX_EVENT_BYTES
    assert len(final) > 2000  # cut to fit, not to nothing
    short = "Une réponse courte."
    assert fit_to_event(short, short, marker, "@a:x") == short


# Fewer edits where they cost most
class SlowPort:
    """Takes every event, after `delay` seconds."""

    user_id = "@bot:x"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[dict[str, Any]] = []

    async def send(self, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        await asyncio.sleep(self.delay)
        self.sent.append(content)
        return "$first"


async def stream_for(reply: ReplyStream, seconds: float) -> None:
    words: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        words.append("mot")
        reply.update(" ".join(words))
        await asyncio.sleep(0.01)
    assert await asyncio.wait_for(reply.finish(" ".join(words)), BOUND_S)


async def edits_while_streaming(port: SlowPort, seconds: float) -> int:
    reply = reply_stream(port, thread_root=None, max_edits=1000)
    await stream_for(reply, seconds)
    return reply.edits


async def test_a_slow_homeserver_gets_fewer_edits():
    quick, slow = await asyncio.gather(
        edits_while_streaming(SlowPort(0.0), 2.0), edits_while_streaming(SlowPort(0.2), 2.0)
    )
    # every 0.05 s against the quick one; 4 x 0.2 s apart against the slow one
    assert quick >= 10 and slow <= 4


async def test_a_long_answer_gets_its_edits_further_apart():
    reply = reply_stream(SlowPort(0.0), thread_root=None)
    reply.update("court")

    async def shown() -> bool:
        return reply.event_id is not None

    await eventually(shown, within=BOUND_S)
    assert reply.next_interval() == pytest.approx(0.05)
    reply.update("x" * 5_000)

    async def edited() -> bool:
        return reply.edits == 1

    await eventually(edited, within=BOUND_S)
    assert reply.next_interval() == pytest.approx(0.05 * 5)  # 5,000 characters shown
    await asyncio.wait_for(reply.finish("x" * 5_000), BOUND_S)


async def test_a_slow_spell_of_the_homeserver_spaces_every_answers_edits_then_is_forgotten():
    now = [0.0]
    pace = SendPace(clock=lambda: now[0])
    for _ in range(20):
        pace.took(0.5)  # other answers' messages took 0.5 s each lately
    reply = reply_stream(SlowPort(0.0), thread_root=None, pace=pace)
    assert reply.next_interval() == pytest.approx(2.0, rel=0.05)  # 4 x 0.5 s, not 0.05 s
    now[0] += 10  # two half-lives without a send: the slow spell is over
    assert pace.recent_s == pytest.approx(0.125, rel=0.05)
    now[0] += 60
    assert reply.next_interval() == pytest.approx(0.05)


async def test_while_many_messages_wait_on_the_homeserver_a_first_text_waits_too():
    crowded = SendPace()
    crowded.in_flight = 8  # other answers' messages sent, not yet taken
    port = SlowPort(0.0)
    reply = reply_stream(port, thread_root=None, first_delay=0.0, pace=crowded)
    await stream_for(reply, 1.0)
    assert len(port.sent) == 1 and reply.edits == 0  # it ended first, and went out whole
    crowded.in_flight = 2
    port = SlowPort(0.0)
    reply = reply_stream(port, thread_root=None, first_delay=0.0, pace=crowded)
    await stream_for(reply, 1.0)
    assert len(port.sent) >= 2 and crowded.in_flight == 2  # shown at once; every send counted
    crowded.in_flight = 50  # crowded for ever: the first text is held 5 s at most
    port = SlowPort(0.0)
    reply = reply_stream(port, thread_root=None, first_delay=0.0, pace=crowded)
    reply.update("Début")
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def shown() -> bool:
        return bool(port.sent)

    await eventually(shown, within=BOUND_S)
    assert loop.time() - started >= 5.0
    await asyncio.wait_for(reply.finish("Début"), BOUND_S)


async def test_while_the_homeserver_is_crowded_edits_wait_and_the_final_text_does_not():
    pace = SendPace()
    port = SlowPort(0.0)
    reply = reply_stream(port, thread_root=None, max_edits=100, pace=pace)
    reply.update("Début")

    async def shown() -> bool:
        return reply.event_id is not None

    await eventually(shown, within=BOUND_S)
    pace.in_flight = 8  # other answers' messages pile up on the homeserver
    for n in range(50):
        reply.update("Début" + " mot" * n)
        await asyncio.sleep(0.01)
    assert reply.edits == 0  # every live edit waited its turn
    assert await asyncio.wait_for(reply.finish("Fin"), BOUND_S)
    assert port.sent[-1]["m.new_content"]["body"] == "Fin"  # the final text did not wait
