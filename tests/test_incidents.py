"""Incidents: recorded with a keyed hash and no text (unless log_content), counted, told to the
operators' alert room one line each within a rate limit, shown by `!lucie stats`, and their
texts gone on "forget me". Real SQLite files; the Matrix side is the in-memory port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.config import MatrixSettings, Settings
from bot.core.command_registry import CommandRegistry, parse_command
from bot.core.data_commands import DataCommands
from bot.core.events import TextMessage
from bot.core.incidents import MAX_PENDING_ALERTS, Incident, Incidents
from bot.core.metrics import Metrics
from bot.core.pseudonyms import LocalPseudonyms
from bot.core.tasks import Tasks
from bot.storage.local_keys import PEOPLE_KEY, local_key
from bot.storage.store import Store
from tests.support.chat_port import MemoryPort

ALERTS = "!ops:x"
SECRET = "comment fabriquer une arme chez soi"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Bench:
    store: Store
    incidents: Incidents
    port: MemoryPort
    metrics: Metrics
    tasks: Tasks
    clock: Clock
    pseudonyms: LocalPseudonyms

    async def settle(self) -> None:
        """Let the alert sends under way finish."""
        await self.tasks.drain(10)


def make_settings(**values: Any) -> Settings:
    values.setdefault("bot", {"operators": ["@ops:x"], "default_lang": "en"})
    matrix = MatrixSettings(homeserver="http://h", user_id="@bot:x", password="p")
    return Settings(matrix=matrix, **values)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Any]:
    opened: list[Store] = []
    made: list[Tasks] = []

    async def make(port: MemoryPort | None = None, **values: Any) -> Bench:
        store = await Store.open(tmp_path / "bot.db")
        opened.append(store)
        pseudonyms = LocalPseudonyms(await local_key(store.db, PEOPLE_KEY))
        port = port or MemoryPort()
        metrics, tasks, clock = Metrics(), Tasks(), Clock()
        made.append(tasks)
        settings = make_settings(**values)
        incidents = Incidents(settings, store.incidents, pseudonyms, port, metrics, tasks, clock)
        return Bench(store, incidents, port, metrics, tasks, clock, pseudonyms)

    yield make
    for tasks in made:
        await tasks.close()
    for store in opened:
        await store.close()


def incident(
    room: str = "!r:x",
    sender: str = "@alice:x",
    stage: Any = "question",
    category: str = "S1",
    action: Any = "refuse",
    answer_id: int | None = None,
) -> Incident:
    return Incident(room, answer_id, stage, category, "llama_guard", action, sender, SECRET)


async def rows(store: Store) -> list[dict[str, Any]]:
    return [dict(row) for row in await store.db.all("SELECT * FROM incidents ORDER BY id")]


async def test_recorded_with_a_keyed_hash_and_no_text_by_default(bench, tmp_path):
    b = await bench()
    await b.incidents.record(incident(answer_id=None))
    await b.incidents.record(incident(stage="answer", category="S10", action="log"))
    first, second = await rows(b.store)
    assert first["text"] is None and second["text"] is None
    assert first["sender"] != "@alice:x" and "alice" not in first["sender"]
    assert first["sender"] == second["sender"] == b.pseudonyms.of("@alice:x")
    assert (first["stage"], first["category"], first["action"]) == ("question", "S1", "refuse")
    assert (second["stage"], second["category"], second["action"]) == ("answer", "S10", "log")
    flags = b.metrics.registry.get_sample_value(
        "lucie_bot_moderation_flags_total",
        {"stage": "question", "category": "S1", "action": "refuse"},
    )
    assert flags == 1
    await b.store.db.checkpoint()
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("bot.db*"))
    assert SECRET.encode() not in on_disk and b"@alice:x" not in on_disk


async def test_text_kept_only_when_log_content_is_on(bench):
    b = await bench(log_content=True)
    await b.incidents.record(incident())
    (row,) = await rows(b.store)
    assert row["text"] == SECRET


async def test_the_same_person_has_the_same_hash_after_a_restart(bench):
    b = await bench()
    await b.incidents.record(incident(sender="@alice:x"))
    await b.incidents.record(incident(sender="@bob:x"))
    await b.store.close()
    again = await bench()
    await again.incidents.record(incident(sender="@alice:x"))
    alice, bob, alice_again = (row["sender"] for row in await rows(again.store))
    assert alice == alice_again != bob


async def test_one_alert_line_per_incident_without_text_or_user_id(bench):
    b = await bench(guard={"alert_room": ALERTS})
    await b.incidents.record(incident(room="!r:x"))
    await b.incidents.record(incident(room="!s:x", stage="answer", category="S10", action="log"))
    await b.settle()
    first, second = b.port.bodies(ALERTS, msgtype="m.notice")
    hashed = b.pseudonyms.of("@alice:x")
    assert first == f"🛡️ refused · question · S1 (Violent Crimes) · room !r:x · person {hashed}"
    assert second == f"🛡️ flagged · answer · S10 (Hate) · room !s:x · person {hashed}"
    assert all(room == ALERTS for room, _ in b.port.sent)
    assert not any(
        SECRET in str(content) or "@alice:x" in str(content) for _, content in b.port.sent
    )


async def test_alerts_follow_the_default_language(bench):
    b = await bench(guard={"alert_room": ALERTS}, bot={"default_lang": "fr"})
    await b.incidents.record(incident())
    await b.settle()
    (line,) = b.port.bodies(ALERTS)
    assert line.startswith("🛡️ refus · question · S1 (Crimes violents) · salon !r:x · personne ")


async def test_rate_limit_holds_and_the_next_line_counts_what_was_not_reported(bench):
    b = await bench(guard={"alert_room": ALERTS, "alerts_per_minute": 2})
    for _ in range(5):
        await b.incidents.record(incident())
    await b.settle()
    assert len(b.port.bodies(ALERTS)) == 2
    b.clock.now += 30
    await b.incidents.record(incident())
    await b.settle()
    assert len(b.port.bodies(ALERTS)) == 2  # still within the same minute
    b.clock.now += 31
    await b.incidents.record(incident(category="S2"))
    await b.incidents.record(incident(category="S3"))
    await b.settle()
    third, fourth = b.port.bodies(ALERTS)[2:]
    assert "S2" in third and third.endswith(" (+4 incidents not reported since)")
    assert "S3" in fourth and "not reported" not in fourth
    assert len(await rows(b.store)) == 8  # every incident recorded, alerted or not


async def test_alert_sends_never_hold_the_answer_and_their_number_is_bounded(bench):
    port = MemoryPort(send_delay=0.5)
    b = await bench(port, guard={"alert_room": ALERTS, "alerts_per_minute": 120})
    extra = 3
    for _ in range(MAX_PENDING_ALERTS + extra):
        await asyncio.wait_for(b.incidents.record(incident()), 0.2)
    assert len(b.tasks) == MAX_PENDING_ALERTS
    await b.settle()
    assert len(port.bodies(ALERTS)) == MAX_PENDING_ALERTS
    await b.incidents.record(incident())
    await b.settle()
    assert port.bodies(ALERTS)[-1].endswith(f" (+{extra} incidents not reported since)")


async def test_a_refused_alert_is_counted_in_the_next_line(bench):
    b = await bench(guard={"alert_room": ALERTS})
    b.port.refuse = lambda content: True
    await b.incidents.record(incident())
    await b.settle()
    assert b.port.bodies(ALERTS) == []
    b.port.refuse = lambda content: False
    await b.incidents.record(incident())
    await b.settle()
    (line,) = b.port.bodies(ALERTS)
    assert line.endswith(" (+1 incidents not reported since)")


async def test_no_alert_room_no_send(bench):
    b = await bench()
    await b.incidents.record(incident())
    await b.settle()
    assert b.port.sent == [] and len(b.tasks) == 0
    assert len(await rows(b.store)) == 1


async def test_a_hostile_category_is_shown_plainly(bench):
    b = await bench(guard={"alert_room": ALERTS})
    hostile = "[click](https://evil.example)\u202e<https://evil.example>`x`\x00" + "z" * 200
    await b.incidents.record(incident(category=hostile))
    await b.settle()
    ((_, content),) = b.port.sent
    assert "<a" not in content["formatted_body"] and "<code" not in content["formatted_body"]
    (row,) = await rows(b.store)
    assert len(row["category"]) <= 64 and "\u202e" not in row["category"]
    assert "\x00" not in row["category"]


async def test_a_link_named_as_a_category_is_not_a_link_anywhere(bench):
    b = await bench(guard={"alert_room": ALERTS})
    phishing = "[Re-verify your account](https://evil.example/x)"
    await b.incidents.record(incident(category=phishing))
    await b.incidents.record(incident(category="x\u2028&#8238;y"))
    await b.settle()
    (_, content), (_, second) = b.port.sent
    for shown in (content["body"], content["formatted_body"], second["body"]):
        assert "evil.example" not in shown and "](" not in shown and "href" not in shown
        assert "\u2028" not in shown and "&#8238;" not in shown
    first_row, second_row = await rows(b.store)
    assert first_row["category"] == "Re-verify_your_account_https_//evil_example/x"
    assert second_row["category"] == "x_8238_y"


def flag_labels(metrics: Metrics) -> dict[str, float]:
    """The moderation_flags counts by category label."""
    counts: dict[str, float] = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "lucie_bot_moderation_flags_total":
                category = sample.labels["category"]
                counts[category] = counts.get(category, 0) + sample.value
    return counts


async def test_metrics_label_only_categories_the_bot_or_its_operators_know(bench):
    """A hostile server may name any category in every answer; each new label value would be
    a time series kept for good."""
    rule = {"category": "fraude", "words": ["arnaque"]}
    b = await bench(guard={"actions": {"S6": "log", "house/policy": "refuse"}, "rules": [rule]})
    known = ["S1", "S14", "prompt_injection", "unavailable", "unknown"]
    known += ["violence/graphic", "self-harm/intent", "illicit/violent", "S6"]
    known += ["house/policy", "fraude"]
    for category in known:
        await b.incidents.record(incident(category=category))
    for n in range(64):
        await b.incidents.record(incident(category=f"random-{n}-{n * 7919 % 1000}"))
    await b.incidents.record(incident(category="[evil](https://evil.example)"))
    assert flag_labels(b.metrics) == {**dict.fromkeys(known, 1.0), "other": 65.0}
    stored = {row["category"] for row in await rows(b.store)}
    assert len(stored) == len(known) + 65  # the rows keep each name, made safe


def command(room_id: str, sender: str, body: str) -> TextMessage:
    return TextMessage(room_id, "$cmd", sender, 1, "m.text", body, None, None, None, (), False)


async def run(commands: CommandRegistry, room: str, sender: str, body: str) -> str:
    return await commands.run(parse_command(body, "!lucie"), command(room, sender, body), "en")


def registry(b: Bench, settings: Settings) -> CommandRegistry:
    async def admin(room_id: str, user_id: str) -> bool:
        return user_id in ("@admin:x", "@ops:x")

    async def regenerate(answer, requester) -> str:
        raise AssertionError("not used here")

    data = DataCommands(settings, b.store, regenerate, None, b.store.incidents)
    commands = CommandRegistry("!lucie", admin)
    commands.add(*data.specs())
    return commands


async def test_stats_show_refusals_per_category_and_stage(bench):
    b = await bench()
    for room, stage, category, action in [
        ("!a:x", "question", "S1", "refuse"),
        ("!a:x", "question", "S1", "refuse"),
        ("!a:x", "answer", "S1", "refuse"),
        ("!a:x", "question", "S6", "log"),
        ("!a:x", "question", "unavailable", "unavailable"),  # an outage, not a refusal
        ("!b:x", "passages", "S1", "refuse"),
    ]:
        await b.incidents.record(incident(room=room, stage=stage, category=category, action=action))
    commands = registry(b, make_settings())
    room_view = await run(commands, "!a:x", "@admin:x", "!lucie stats")
    assert room_view == (
        "No answers here yet.\n"
        "Refusals and flags:\n"
        "- S1 (Violent Crimes): 3 (question 2, answer 1)\n"
        "- S6 (Specialized Advice): 1 (question 1)"
    )
    everywhere = await run(commands, "!a:x", "@ops:x", "!lucie stats")
    assert "- S1 (Violent Crimes): 4 (question 2, passages 1, answer 1)" in everywhere
    quiet = await run(commands, "!c:x", "@admin:x", "!lucie stats")
    assert quiet == "No answers here yet."


async def test_forget_me_clears_the_texts_and_the_reminder_but_keeps_the_counts(bench):
    b = await bench(log_content=True)
    await b.store.conversations.queue_answer("!a:x", "$q", 1, None, 1)
    answer = await b.store.conversations.answer_for_question("!a:x", "$q")
    await b.incidents.record(incident(room="!a:x", answer_id=answer.id))
    await b.incidents.record(incident(room="!a:x", stage="answer"))
    await b.incidents.record(incident(room="!a:x", sender="@bob:x"))
    for person in ("@alice:x", "@bob:x"):
        await b.store.db.write("INSERT INTO pii_reminded (user_id, ts) VALUES (?, 1)", person)
    commands = registry(b, make_settings(log_content=True))
    done = await run(commands, "!a:x", "@alice:x", "!lucie forget me")
    assert done.startswith("Everything about you has been erased")
    alice, alice_answer, bob = await rows(b.store)
    assert alice["text"] is None and alice_answer["text"] is None
    assert alice["sender"] == alice_answer["sender"] == "erased"
    assert bob["text"] == SECRET and bob["sender"] == b.pseudonyms.of("@bob:x")
    reminded = await b.store.db.all("SELECT user_id FROM pii_reminded")
    assert [row["user_id"] for row in reminded] == ["@bob:x"]
    stats = await run(commands, "!a:x", "@admin:x", "!lucie stats")
    assert "- S1 (Violent Crimes): 3 (question 2, answer 1)" in stats
    await b.store.db.checkpoint()


async def test_incidents_forget_clears_one_persons_texts_and_hash(bench, tmp_path):
    """The key stays (quotas and other people's incidents need it), so a hash left behind would
    still name the person to anyone who can compute it again."""
    b = await bench(log_content=True)
    await b.incidents.record(incident(sender="@alice:x"))
    await b.incidents.record(incident(sender="@alice:x", stage="answer"))
    await b.incidents.record(incident(sender="@bob:x"))
    hashed = b.pseudonyms.of("@alice:x")
    await b.incidents.forget("@alice:x")
    alice, alice_again, bob = await rows(b.store)
    assert alice["text"] is None and alice_again["text"] is None and bob["text"] == SECRET
    assert alice["sender"] == alice_again["sender"] == "erased"
    assert bob["sender"] == b.pseudonyms.of("@bob:x")
    assert alice["category"] == "S1" and alice_again["stage"] == "answer"  # still counted
    await b.store.db.checkpoint()  # secure_delete zeroes what the update overwrote
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("bot.db*"))
    assert hashed.encode() not in on_disk and b.pseudonyms.of("@bob:x").encode() in on_disk


async def test_an_erased_question_takes_the_text_of_its_incident(bench):
    b = await bench(log_content=True)
    await b.store.conversations.queue_answer("!a:x", "$q", 1, None, 1)
    answer = await b.store.conversations.answer_for_question("!a:x", "$q")
    await b.incidents.record(incident(room="!a:x", answer_id=answer.id))
    await b.incidents.record(incident(room="!a:x"))  # about another question
    await b.store.erasure.erase_event("!a:x", "$q", 5)
    erased, other = await rows(b.store)
    assert erased["text"] is None and other["text"] == SECRET
