"""Feedback forwarded to a webhook: a real receiver over HTTP on loopback checks each signature;
the bot is the wiring of bot.app over a real database and the stand-in model."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from bot.app import build_relay
from bot.config import ConfigError, DataSettings, Settings, load_settings
from bot.core.clock import now_ms
from bot.core.feedback_events import FeedbackEvent, FeedbackForwarding
from bot.core.metrics import Metrics
from bot.core.pseudonyms import LocalPseudonyms
from bot.export.privacy import Pseudonyms
from bot.llm.client import ChatModel
from bot.storage import database
from bot.storage.connection import Database
from bot.storage.database import migrations, open_database, schema_version
from bot.storage.outbox_store import SqliteFeedbackFacts, SqliteOutbox
from bot.storage.store import Store
from bot.texts import PromptTexts
from bot.webhook.delivery import Webhook
from bot.webhook.payload import payload, webhook_pseudonyms
from tests.support.chat_port import MemoryPort
from tests.support.fake_llm import FakeLLM
from tests.support.matrix_user import eventually
from tests.support.synapse import free_port
from tests.test_relay_units import ROOM, Room

HOOK_SECRET = "a-webhook-secret-of-at-least-32-characters"
PSEUDONYM_SECRET = "a-pseudonym-secret-of-at-least-32-characters"
UP, DOWN = "\U0001f44d", "\U0001f44e"


class Receiver:
    """A team's webhook receiver: checks the signature as the README says, records events.

    statuses: answers to give before 200s; hold: when set, each request waits for it; reset:
    kinds of events whose connection is closed unanswered."""

    def __init__(self, port: int | None = None, secret: str = HOOK_SECRET) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.secret = secret.encode()
        self.events: list[dict[str, Any]] = []  # accepted (2xx), in order
        self.requests: list[dict[str, Any]] = []  # every request, whatever its answer
        self.forged = 0
        self.statuses: list[int] = []
        self.hold: asyncio.Event | None = None
        self.held: list[web.Request] = []
        self.reset: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def verified(self, timestamp: str, body: bytes, signature: str) -> bool:
        # the README's three lines
        signed = timestamp.encode() + b"." + body
        expected = "sha256=" + hmac.new(self.secret, signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-Lucie-Timestamp", "")
        if not self.verified(timestamp, body, request.headers.get("X-Lucie-Signature", "")):
            self.forged += 1
            return web.Response(status=401)
        event = json.loads(body)
        self.requests.append(event)
        if event["kind"] in self.reset and request.transport is not None:
            request.transport.close()  # the client reads no answer: connection reset
            return web.Response(status=200)
        if self.hold is not None:
            self.held.append(request)
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if status < 300:
            self.events.append(event)
        return web.Response(status=status)

    def held_open(self) -> bool:
        """A request is held and its client still waits on its connection."""
        return any(r.transport is not None and not r.transport.is_closing() for r in self.held)


async def arrived(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        return receiver.events if len(receiver.events) >= count else None

    return await eventually(enough, within=30, interval=0.05)


def settings_for(
    tmp_path: Path, llm: FakeLLM, url: str, guard: dict[str, Any] | None = None, **webhook: Any
) -> Settings:
    return Settings(
        matrix={"homeserver": "http://h", "user_id": MemoryPort.user_id, "password": "p"},
        llm={"base_url": llm.base_url, "model": "stand-in"},
        bot={"edit_interval_s": 0.05, "first_text_delay_s": 0},
        data={"pseudonym_secret": PSEUDONYM_SECRET},
        webhook={"url": url, "secret": HOOK_SECRET, "max_backoff_s": 0.2, **webhook},
        guard=guard or {},
        data_dir=tmp_path,
    )


@pytest.fixture
async def bot(tmp_path: Path, llm: FakeLLM):
    async with bots(tmp_path, llm) as make:
        yield make


@contextlib.asynccontextmanager
async def bots(tmp_path: Path, llm: FakeLLM) -> AsyncIterator[Any]:
    """A room with a bot whose feedback goes to url; stopped (webhook first) after the test."""
    made: list[tuple[Any, ...]] = []

    async def make(
        url: str, guard: dict[str, Any] | None = None, **webhook: Any
    ) -> tuple[Room, Store, Webhook, Metrics]:
        settings = settings_for(tmp_path, llm, url, guard, **webhook)
        store = await Store.open(tmp_path / "lucie-bot.sqlite3")
        metrics = Metrics()
        hook = Webhook.build(settings, store.db, metrics.registry)
        assert hook is not None
        model = ChatModel(settings.llm)
        port = MemoryPort(dm=False)
        port.names[port.user_id] = "Lucie"
        people = LocalPseudonyms(b"k" * 32)
        relay = build_relay(settings, store, model, port, PromptTexts(None), people,
                            feedback_sink=hook, metrics=metrics)  # fmt: skip
        await store.rooms.add_room(ROOM, now_ms() - 60_000)
        hook.start()
        made.append((relay, store, model, hook))
        return Room(relay, port), store, hook, metrics

    try:
        yield make
    finally:
        for relay, store, model, hook in made:
            await relay.drain(5)
            await hook.stop(flush_s=0)
            await model.aclose()
            await store.close()


async def answered(room: Room, store: Store, who: str = "@alice:x") -> str:
    asked = await room.say(who, "Lucie, une question ?")
    answer = await store.conversations.answer_for_question(ROOM, asked)
    assert answer is not None and answer.answer_event_id
    return answer.answer_event_id


def outcome(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value("lucie_bot_webhook_events_total", {"outcome": name})
    return value or 0.0


async def test_consented_feedback_arrives_signed_in_order_with_pseudonyms_only(bot, llm):
    receiver = await Receiver().start()
    try:
        room, store, _, metrics = await bot(receiver.url)
        await room.say("@alice:x", "!lucie consent yes")
        answer = await answered(room, store)
        await room.react("@alice:x", answer, UP + "\ufe0f")
        up = f"$r{room.count}"
        await room.react("@alice:x", answer, "\u274c")  # ❌ incorrect
        await room.react("@bob:x", answer, DOWN)  # bob never consented
        said = "!lucie correct Mieux : écrire à alice@example.org"
        corrected = await room.say("@alice:x", said, answer)
        await room.react("@alice:x", answer, "\U0001f501")  # 🔁
        redaction = {"type": "m.room.redaction", "sender": "@alice:x", "event_id": "$red",
                     "redacts": up, "origin_server_ts": now_ms(), "content": {}}  # fmt: skip
        await room.relay.on_redaction(ROOM, redaction)
        await room.relay.on_redaction(
            ROOM, {**redaction, "event_id": "$red2", "redacts": corrected}
        )
        events = await arrived(receiver, 6)
    finally:
        await receiver.stop()
    kinds = [(e["kind"], e["value"]) for e in events]
    assert kinds == [
        ("vote", "up"),
        ("label", "incorrect"),
        ("correction", None),
        ("regeneration", None),
        ("vote_removed", "up"),
        ("correction_removed", None),  # its words taken back: a receiver drops what it kept
    ]
    ids = webhook_pseudonyms(PSEUDONYM_SECRET)
    # the webhook's own pseudonyms, stable from one event to the next
    assert {e["person"] for e in events} == {ids.of("user", "@alice:x")}
    assert {e["answer"] for e in events} == {ids.of("msg", answer)}
    assert {e["room"] for e in events} == {ids.of("room", ROOM)}
    # never the export's: a receiver cannot find in a published dataset whom it saw react
    export_ids = Pseudonyms(PSEUDONYM_SECRET)
    for kind, value in (("user", "@alice:x"), ("msg", answer), ("room", ROOM)):
        assert export_ids.of(kind, value) not in json.dumps(receiver.requests)
    # to the minute: the second a reaction was made would single it out
    assert all(e["created_at"].endswith(":00+00:00") for e in events)
    assert events[1]["emoji"] == "\u274c"
    correction = next(e for e in events if e["kind"] == "correction")
    assert correction["text"] == "Mieux : écrire à [EMAIL]"
    assert all(e["model"] == "stand-in" and e["prompt_version"] == 0 for e in events)
    assert len({e["id"] for e in events}) == len(events)
    raw = json.dumps(receiver.requests)
    assert "@alice" not in raw and "@bob" not in raw and ROOM not in raw and answer not in raw
    assert ids.of("user", "@bob:x") not in raw  # bob's vote never left
    assert receiver.forged == 0 and outcome(metrics, "sent") == len(events)


async def test_a_receiver_down_at_first_gets_every_event_in_order_once_up(bot, llm):
    receiver = Receiver()  # its port stays closed for now
    room, store, _, metrics = await bot(receiver.url)
    await room.say("@alice:x", "!lucie consent yes")
    answer = await answered(room, store)
    for n, key in enumerate([UP, DOWN, UP, DOWN]):
        await room.react("@alice:x", answer, key + "\ufe0f" * n)
    waiting = await store.db.one("SELECT COUNT(*) AS n FROM webhook_outbox")
    assert waiting is not None and waiting["n"] == 4  # kept while nobody answers
    await receiver.start()
    try:
        events = await arrived(receiver, 4)
    finally:
        await receiver.stop()
    assert [e["value"] for e in events] == ["up", "down", "up", "down"]
    assert len({e["id"] for e in events}) == 4  # nothing twice
    assert outcome(metrics, "dropped") == outcome(metrics, "failed") == 0


async def test_a_hanging_receiver_delays_no_answer(bot, llm):
    receiver = await Receiver().start()
    receiver.hold = asyncio.Event()
    try:
        room, store, _, _ = await bot(receiver.url, timeout_s=30)
        await room.say("@alice:x", "!lucie consent yes")
        first = await answered(room, store)
        await room.react("@alice:x", first, UP)
        await eventually(lambda: _true(receiver.held), within=30, interval=0.05)
        # the receiver holds the vote; a question and a command go through meanwhile
        second = await answered(room, store)
        await room.say("@alice:x", "!lucie correct Une meilleure réponse.", second)
        assert (await store.conversations.answer_by_event(ROOM, second)).status == "complete"
        assert receiver.held_open() and receiver.events == []
        receiver.hold.set()
        events = await arrived(receiver, 2)
    finally:
        await receiver.stop()
    assert [e["kind"] for e in events] == ["vote", "correction"]


async def _true(value: Any) -> bool:
    return bool(value)


async def test_a_refusal_is_not_retried_a_server_error_is_within_max_attempts(bot, llm):
    receiver = await Receiver().start()
    receiver.statuses = [400, 500, 500, 503, 429]
    try:
        room, store, _, metrics = await bot(receiver.url, max_attempts=2)
        await room.say("@alice:x", "!lucie consent yes")
        answer = await answered(room, store)
        await room.react("@alice:x", answer, UP)  # 400: dropped at once
        await room.react("@alice:x", answer, DOWN)  # 500, 500: given up after 2 tries
        await room.react("@alice:x", answer, "\u274c")  # 503, 429 (unavailable), then 200
        events = await arrived(receiver, 1)
    finally:
        await receiver.stop()
    assert [(r["kind"], r["value"]) for r in receiver.requests] == [
        ("vote", "up"),
        ("vote", "down"),
        ("vote", "down"),
        ("label", "incorrect"),
        ("label", "incorrect"),
        ("label", "incorrect"),
    ]
    assert [e["kind"] for e in events] == ["label"]
    assert outcome(metrics, "failed") == 2 and outcome(metrics, "sent") == 1


async def test_nothing_leaves_without_consent_or_collection(bot, llm):
    receiver = await Receiver().start()
    try:
        room, store, _, _ = await bot(receiver.url)
        answer = await answered(room, store, "@carol:x")
        await room.react("@carol:x", answer, UP)  # never consented
        await room.say("@dave:x", "!lucie consent yes")
        await room.say("@dave:x", "!lucie consent no")
        await room.react("@dave:x", answer, UP)  # withdrew
        await room.say("@erin:x", "!lucie consent yes")
        await store.rooms.set_room(ROOM, collection=0)  # the room stopped collecting
        await room.react("@erin:x", answer, UP)
        await room.say("@erin:x", "!lucie correct Autre chose.", answer)
        await store.rooms.set_room(ROOM, collection=1)
        await room.react("@erin:x", answer, DOWN)  # the one that may go: a marker
        events = await arrived(receiver, 1)
    finally:
        await receiver.stop()
    assert [(e["kind"], e["value"]) for e in receiver.requests] == [("vote", "down")]
    assert events[0]["person"] == webhook_pseudonyms(PSEUDONYM_SECRET).of("user", "@erin:x")


async def test_events_wait_across_a_restart_and_forget_me_drops_its_own(tmp_path, bot, llm):
    receiver = Receiver()
    room, store, hook, _ = await bot(receiver.url)
    for person in ("@alice:x", "@bob:x"):
        await room.say(person, "!lucie consent yes")
    answer = await answered(room, store)
    await room.react("@alice:x", answer, UP)
    await room.react("@bob:x", answer, DOWN)
    await room.react("@alice:x", answer, "\u274c")
    await room.say("@bob:x", "!lucie forget me")  # bob's waiting vote goes with him
    await hook.stop(flush_s=0)  # the bot stops while the receiver is down

    registry = CollectorRegistry()
    again = Webhook.build(settings_for(tmp_path, llm, receiver.url), store.db, registry)
    assert again is not None
    await receiver.start()
    again.start()
    try:
        events = await arrived(receiver, 2)
        await asyncio.sleep(0.3)  # anything more would come now
    finally:
        await again.stop()
        await receiver.stop()
    assert [(e["kind"], e["value"]) for e in receiver.events] == [
        ("vote", "up"),
        ("label", "incorrect"),
    ]
    assert events[0]["person"] == webhook_pseudonyms(PSEUDONYM_SECRET).of("user", "@alice:x")
    assert b'outcome="sent"} 2.0' in generate_latest(registry)


async def test_a_full_outbox_drops_the_oldest_and_counts_them(tmp_path, llm):
    store = await Store.open(tmp_path / "lucie-bot.sqlite3")
    try:
        settings = settings_for(tmp_path, llm, "http://127.0.0.1:9/hook", queue_size=2)
        metrics = Metrics()
        hook = Webhook.build(settings, store.db, metrics.registry)
        assert hook is not None  # not started: nothing is sent
        for n in range(5):
            vote = FeedbackEvent("vote", f"$r{n}", ROOM, "$a", "@alice:x", n * 60_000, "up")
            await hook.emit(vote)
        rows = await store.db.all("SELECT body FROM webhook_outbox ORDER BY id")
        sources = [json.loads(bytes(row["body"]))["created_at"] for row in rows]
        assert sources == ["1970-01-01T00:03:00+00:00", "1970-01-01T00:04:00+00:00"]
        assert outcome(metrics, "dropped") == 3
    finally:
        await store.close()


def test_webhook_settings_are_checked(tmp_path, monkeypatch):
    base = '[matrix]\nhomeserver = "http://h"\nuser_id = "@a:b"\npassword = "p"\n'
    config = tmp_path / "c.toml"

    def load(section: str) -> Settings:
        config.write_text(base + "[webhook]\n" + section, encoding="utf-8")
        return load_settings(config)

    secret = f'secret = "{HOOK_SECRET}"\n'
    assert load("").webhook.url is None  # off by default
    assert load(f'url = "https://hooks.example.org/lucie/"\n{secret}').webhook.url == (
        "https://hooks.example.org/lucie/"  # as written: a receiver may need its slash
    )
    assert load(f'url = "http://127.0.0.1:8080/hook"\n{secret}').webhook.url
    assert load(f'url = "http://[::1]:8080/hook"\n{secret}').webhook.url
    assert load(f'url = "http://localhost/hook"\n{secret}').webhook.url
    refused = {
        f'url = "http://hooks.example.org/x"\n{secret}': "https",
        f'url = "ftp://hooks.example.org/x"\n{secret}': "http",
        f'url = "https:///x"\n{secret}': "host",
        f'url = "https://hooks.example.org/a b"\n{secret}': "space",
        'url = "https://hooks.example.org/x"\n': "webhook.secret",
        'url = "https://hooks.example.org/x"\nsecret = "short"\n': "32",
        f'url = "https://h.example.org"\n{secret}max_attempts = 0\n': "max_attempts",
        f'url = "https://h.example.org"\n{secret}queue_size = 0\n': "queue_size",
        f'url = "https://h.example.org"\n{secret}timeout = 3\n': "timeout",
    }
    for section, named in refused.items():
        with pytest.raises(ConfigError, match=named):
            load(section)
    monkeypatch.setenv("LUCIE_BOT_WEBHOOK__SECRET", HOOK_SECRET)
    loaded = load('url = "https://hooks.example.org/x"\n')
    assert loaded.webhook.secret is not None
    assert loaded.webhook.secret.get_secret_value() == HOOK_SECRET


async def test_a_webhook_without_the_pseudonym_secret_stops_the_start(tmp_path, llm):
    settings = settings_for(tmp_path, llm, "http://127.0.0.1:9/hook")
    settings.data.pseudonym_secret = None
    with pytest.raises(ConfigError, match="pseudonym_secret"):
        Webhook.build(settings, None, CollectorRegistry())  # type: ignore[arg-type]


async def test_upgrade_to_the_outbox_keeps_the_feedback(tmp_path, monkeypatch):
    """A database of schema 8 with votes opens at the outbox's schema, the votes kept."""
    outbox_version = next(
        m.version for m in migrations() if m.path.name.endswith("_webhook_outbox.sql")
    )
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for migration in migrations()[: outbox_version - 1]:
        shutil.copy(migration.path, earlier / migration.path.name)
    monkeypatch.setattr(database, "MIGRATIONS_DIR", earlier)
    path = tmp_path / "bot.sqlite3"
    conn = await open_database(path)
    await conn.execute(
        "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, raw_key, "
        "ts) VALUES ('$r', '$a', '!r', '@a:x', 'up', '+1', 1)"
    )
    await conn.close()
    monkeypatch.undo()
    conn = await open_database(path)
    try:
        assert await schema_version(conn) >= outbox_version
        db = Database(conn)
        assert [tuple(r) for r in await db.all("SELECT sender, vote FROM votes")] == [
            ("@a:x", "up")
        ]
        outbox = SqliteOutbox(db, 10)
        assert await outbox.put(None, b"{}", 1) == 0
        head = await outbox.head()
        assert head is not None and head.body == b"{}" and head.attempts == 0
    finally:
        await conn.close()


class Sink:
    def __init__(self) -> None:
        self.events: list[FeedbackEvent] = []

    async def emit(self, event: FeedbackEvent) -> None:
        self.events.append(event)

    async def take_back(self, room_id: str, source_event_id: str) -> bool:
        return False

    async def drop_person(self, user_id: str) -> None:
        pass

    async def forget(self, user_id: str) -> bool:
        return False


async def test_collection_off_forwards_nothing_even_from_those_who_consented(tmp_path):
    store = await Store.open(tmp_path / "lucie-bot.sqlite3")
    try:
        await store.rooms.add_room(ROOM, 1)
        answer = await store.conversations.queue_answer(ROOM, "$q", 1, None, 2)
        assert answer is not None
        await store.conversations.update_answer(answer.id, answer_event_id="$a", model="m")
        await store.feedback.add_consent("@alice:x", "yes", 1, ROOM, 3)
        vote = FeedbackEvent("vote", "$r", ROOM, "$a", "@alice:x", 4, "up")
        for collection, expected in (("off", 0), ("opt_in", 1)):
            sink = Sink()
            data = DataSettings(collection=collection)
            facts = SqliteFeedbackFacts(store.db)
            forwarding = FeedbackForwarding(data, (store.rooms, store.feedback), facts, sink)
            await forwarding.forward(vote)
            assert len(sink.events) == expected, collection
        assert sink.events[0].model == "m" and sink.events[0].prompt_version == 0
    finally:
        await store.close()


def test_the_payload_leaves_identifiers_out_of_texts_and_texts_out_when_asked():
    ids = webhook_pseudonyms(PSEUDONYM_SECRET)
    said = "Voir @bob:example.org ou https://intra.example.org/x, tél. 06 12 34 56 78"
    event = FeedbackEvent("correction", "$c", ROOM, "$a", "@alice:x", 0, text=said)
    text = payload(event, ids, include_text=True)["text"]
    assert text == "Voir <MATRIX_ID> ou <URL> tél. [PHONE]"  # masked as stored, as exports do
    assert payload(event, ids, include_text=False)["text"] is None
    again = payload(event, ids, include_text=True)
    assert again["id"] == payload(event, ids, include_text=True)["id"]  # stable: de-duplicable
    removed = payload(dataclasses.replace(event, kind="vote_removed"), ids, include_text=True)
    assert removed["id"] != again["id"]
