"""Quotas per person and per room over hours and days, against a real SQLite file and a clock the
tests move; the notices Questions gives; and the queue that turns questions away when full."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.config import MatrixSettings, Settings
from bot.core.events import TextMessage
from bot.core.history import History
from bot.core.metrics import Metrics
from bot.core.pseudonyms import LocalPseudonyms
from bot.core.questions import Questions
from bot.core.quotas import Quotas, retry_text
from bot.core.rooms import Rooms
from bot.core.scheduler import FIRST_HOLD_S, HOLD_WEIGHT, FairScheduler
from bot.core.tasks import Tasks
from bot.storage.local_keys import local_key
from bot.storage.store import Store
from bot.texts import PromptTexts
from tests.support.chat_port import MemoryPort

HOUR_S, DAY_S = 60.0, 600.0
START = 1_700_000_000.0
NO_LIMITS = {
    "questions_per_hour": 0,
    "questions_per_day": 0,
    "room_questions_per_hour": 0,
    "room_questions_per_day": 0,
    "tokens_per_day": 0,
    "room_tokens_per_day": 0,
}


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings_with(bot: dict[str, Any] | None = None, **quotas: Any) -> Settings:
    return Settings(
        matrix=MatrixSettings(homeserver="http://h", user_id="@bot:x", password="p"),
        bot={"operators": ["@ops:x"], "default_lang": "en", **(bot or {})},
        guard={"quotas": {**NO_LIMITS, "hour_s": HOUR_S, "day_s": DAY_S, **quotas}},
    )


class CountingUsage:
    """The real store, counting trips."""

    def __init__(self, usage: Any) -> None:
        self.usage = usage
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.usage, name)

        async def counted(*args: Any) -> Any:
            self.calls.append(name)
            return await method(*args)

        return counted


async def quotas_over(store: Store, settings: Settings, clock: Clock, metrics=None):
    usage = CountingUsage(store.usage)
    people = LocalPseudonyms(await local_key(store.db, "people"))
    return Quotas(settings, usage, people, metrics or Metrics(), clock), usage


@pytest.fixture
async def store(tmp_path):
    opened = await Store.open(tmp_path / "bot.db")
    yield opened
    await opened.close()


QUESTION_QUOTAS = [
    ("questions_per_hour", "quota.person.questions_hour", HOUR_S, "person"),
    ("questions_per_day", "quota.person.questions_day", DAY_S, "person"),
    ("room_questions_per_hour", "quota.room.questions_hour", HOUR_S, "room"),
    ("room_questions_per_day", "quota.room.questions_day", DAY_S, "room"),
]


@pytest.mark.parametrize(("setting", "key", "window", "scope"), QUESTION_QUOTAS)
async def test_each_question_quota_refuses_past_its_limit_until_the_window_slides(
    store, setting, key, window, scope
):
    clock = Clock()
    quotas, _ = await quotas_over(store, settings_with(**{setting: 3}), clock)

    def asker(n: int) -> tuple[str, str]:  # another room, or another person, each time
        return ("@a:x", f"!r{n}:x") if scope == "person" else (f"@p{n}:x", "!r:x")

    for n, offset in enumerate((0, 10, 20)):
        clock.now = START + offset
        assert await quotas.check(*asker(n)) is None
        await quotas.asked(*asker(n))
    clock.now = START + 30
    refused = await quotas.check(*asker(3))
    assert refused is not None and refused.key == key and refused.limit == 3 and refused.first
    # the oldest question leaves the window at START + window
    assert refused.retry_after_s == pytest.approx(window - 30, abs=0.01)
    other = ("@b:x", "!r0:x") if scope == "person" else ("@p0:x", "!other:x")
    assert await quotas.check(*other) is None  # others keep their share
    clock.now = START + window - 0.01
    assert await quotas.check(*asker(4)) is not None
    clock.now = START + window
    assert await quotas.check(*asker(5)) is None
    await quotas.asked(*asker(5))
    clock.now = START + window + 1
    again = await quotas.check(*asker(6))
    assert again is not None and again.first  # a new block: worth a new notice
    assert again.retry_after_s == pytest.approx(9, abs=0.01)  # the second question leaves next


@pytest.mark.parametrize(
    ("setting", "key", "scope"),
    [("tokens_per_day", "quota.person.tokens_day", "person"),
     ("room_tokens_per_day", "quota.room.tokens_day", "room")],
)  # fmt: skip
async def test_token_quotas_refuse_once_spent_until_enough_left_the_day(store, setting, key, scope):
    clock = Clock()
    quotas, _ = await quotas_over(store, settings_with(**{setting: 500}), clock)
    person, room = "@a:x", "!r:x"
    for offset, tokens in ((0, 200), (100, 200), (200, 400)):
        clock.now = START + offset
        assert await quotas.check(person, room) is None
        await quotas.spent(person, room, tokens)
    clock.now = START + 250
    someone = ("@a:x", "!elsewhere:x") if scope == "person" else ("@b:x", "!r:x")
    refused = await quotas.check(*someone)
    assert refused is not None and refused.key == key and refused.limit == 500
    # 800 spent: under 500 only once the first two answers (400) left the day
    assert refused.retry_after_s == pytest.approx(DAY_S + 100 - 250, abs=0.01)
    clock.now = START + DAY_S + 100
    assert await quotas.check(*someone) is None


async def test_operators_and_listed_people_are_exempt_and_count_against_nobody(store):
    clock = Clock()
    settings = settings_with(questions_per_hour=1, room_questions_per_hour=1, exempt=["@vip:x"])
    quotas, _ = await quotas_over(store, settings, clock)
    assert quotas.exempt("@ops:x") and quotas.exempt("@vip:x") and not quotas.exempt("@a:x")
    for person in ("@ops:x", "@vip:x") * 3:
        assert await quotas.check(person, "!r:x") is None
        await quotas.asked(person, "!r:x")
        await quotas.spent(person, "!r:x", 1000)
    assert await store.db.all("SELECT * FROM usage") == []
    assert await quotas.check("@a:x", "!r:x") is None  # the room's share is untouched


async def test_disabled_quotas_neither_refuse_nor_record(store):
    quotas, usage = await quotas_over(
        store, settings_with(enabled=False, questions_per_hour=1), Clock()
    )
    for _ in range(3):
        assert await quotas.check("@a:x", "!r:x") is None
        await quotas.asked("@a:x", "!r:x")
    assert usage.calls == []


async def test_a_restart_changes_nothing(tmp_path):
    clock, settings = Clock(), settings_with(questions_per_day=2)
    first = await Store.open(tmp_path / "bot.db")
    quotas, _ = await quotas_over(first, settings, clock)
    for _ in range(2):
        await quotas.asked("@a:x", "!r:x")
    await first.close()
    reopened = await Store.open(tmp_path / "bot.db")
    try:
        clock.now += 5
        quotas, _ = await quotas_over(reopened, settings, clock)
        refused = await quotas.check("@a:x", "!r:x")
        assert refused is not None and refused.key == "quota.person.questions_day"
        assert refused.retry_after_s == pytest.approx(DAY_S - 5, abs=0.01)
        # the person is kept by a keyed hash only
        scopes = [row["scope"] for row in await reopened.db.all("SELECT scope FROM usage")]
        assert len(scopes) == 2 and all(scope.startswith("person:") for scope in scopes)
        assert not any("@a:x" in scope for scope in scopes)
    finally:
        await reopened.close()


async def test_repeated_refusals_cost_no_database_trip_and_each_person_is_told_once(store):
    clock, metrics = Clock(), Metrics()
    settings = settings_with(questions_per_hour=1, room_questions_per_hour=2)
    quotas, usage = await quotas_over(store, settings, clock, metrics)
    await quotas.asked("@a:x", "!r:x")
    await quotas.asked("@b:x", "!r:x")
    usage.calls.clear()
    refusals = [await quotas.check("@c:x", "!r:x") for _ in range(5)]
    trips = len(usage.calls)
    assert trips >= 1
    refusals += [await quotas.check(person, "!r:x") for person in ("@a:x", "@d:x", "@c:x")]
    assert len(usage.calls) == trips  # from memory: the room is blocked
    # each person told once of the room's block: @c, then @a and @d on their first refusal
    firsts = [r.first for r in refusals if r is not None]
    assert firsts == [True, False, False, False, False, True, True, False]
    sample = metrics.registry.get_sample_value
    assert sample("lucie_bot_quota_refusals_total", {"quota": "room.questions_hour"}) == 8
    assert sample("lucie_bot_quota_limited", {"scope": "room"}) == 1
    assert sample("lucie_bot_quota_limited", {"scope": "person"}) == 0
    clock.now += HOUR_S + 1
    assert sample("lucie_bot_quota_limited", {"scope": "room"}) == 0
    assert await quotas.check("@c:x", "!r:x") is None


async def test_blocks_kept_in_memory_are_bounded_and_the_database_still_knows(store, monkeypatch):
    monkeypatch.setattr("bot.core.quotas.MAX_TRACKED", 3)
    quotas, usage = await quotas_over(store, settings_with(questions_per_hour=1), Clock())
    for n in range(5):
        await quotas.asked(f"@p{n}:x", "!r:x")
        assert await quotas.check(f"@p{n}:x", "!r:x") is not None
    assert len(quotas._blocked) == 3
    usage.calls.clear()
    forgotten = await quotas.check("@p0:x", "!r:x")
    assert forgotten is not None and usage.calls  # read again, refused all the same


async def test_old_usage_is_pruned_now_and_then(store):
    clock = Clock()
    quotas, usage = await quotas_over(store, settings_with(questions_per_day=100), clock)
    for _ in range(3):
        await quotas.asked("@a:x", "!r:x")
    clock.now += DAY_S + 1
    await quotas.asked("@b:x", "!r:x")  # the first recording in a while prunes
    await quotas.asked("@b:x", "!r:x")  # the next does not
    assert usage.calls.count("prune") == 2  # at the very first recording, then this one
    rows = await store.db.all("SELECT ts FROM usage")
    # only what a quota reads is written: here the person's questions
    assert len(rows) == 2 and all(row["ts"] > (START + 1) * 1000 for row in rows)


async def test_usage_store_sums_windows_and_finds_when_a_scope_falls_under(store):
    usage = store.usage
    for ts, amount in ((1000, 5), (2000, 1), (3000, 7), (4000, 2)):
        await usage.add("room:!r", "tokens", amount, ts)
    await usage.add("room:!r", "question", 1, 3500)
    assert await usage.spent("room:!r", "tokens", 2000) == 10
    spending = await usage.spending(["room:!r", "person:x"], [1000, 3000])
    assert spending == {("room:!r", "tokens"): [15, 9], ("room:!r", "question"): [1, 1]}
    assert await usage.falls_under("room:!r", "tokens", 1000, 5) == 3000  # 15 - 13 = 2 < 5
    assert await usage.falls_under("room:!r", "tokens", 1000, 16) is None
    assert await usage.prune(2500, batch=1) == 1  # bounded: one row at most
    assert await usage.prune(2500) == 1
    assert await usage.spent("room:!r", "tokens", 0) == 9


def test_when_someone_can_ask_again_is_rounded_up_to_the_minute():
    assert retry_text("en", 0) == "in 1 min"
    assert retry_text("en", 61) == "in 2 min"
    assert retry_text("en", 3600) == "in 1 h 00"
    assert retry_text("fr", 3601) == "dans 1 h 01"


# Questions, with a real store and rooms, and an answerer standing in for the pipeline


class FakeAnswerer:
    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.wait_s: float | None = None

    async def answer(self, row, is_dm: bool) -> None:
        self.rows.append(row)

    def saturated(self) -> float | None:
        return self.wait_s


class Bot:
    def __init__(self, store: Store, settings: Settings, quotas: Quotas, metrics: Metrics):
        self.store, self.port, self.tasks = store, MemoryPort(), Tasks()
        self.rooms = Rooms(settings, store.rooms, self.port, PromptTexts(None), self.tasks)
        history = History(settings.bot, store.conversations, self.port)
        self.answerer = FakeAnswerer()
        self.questions = Questions(
            settings,
            store.conversations,
            self.port,
            self.rooms,
            history,
            self.answerer,
            self.tasks,
            quotas,
            metrics,
        )
        self.count = 0

    async def ask(self, sender: str = "@a:x", room_id: str = "!r:x") -> str:
        self.count += 1
        event_id = f"$q{self.count}"
        message = TextMessage(
            room_id,
            event_id,
            sender,
            START_MS,
            "m.text",
            "Bonjour ?",
            None,
            None,
            None,
            None,
            False,
        )
        await self.questions.ask(message, await self.rooms.get(room_id), is_dm=True)
        await self.settle()
        return event_id

    async def settle(self) -> None:
        for _ in range(200):
            if not len(self.tasks):
                return
            await asyncio.sleep(0.005)
        raise AssertionError("background work did not finish")

    def notices(self) -> list[str]:
        return self.port.bodies("!r:x", "m.notice")


START_MS = int(START * 1000)


async def bot_for(store: Store, clock: Clock, **quota: Any) -> tuple[Bot, Metrics]:
    metrics = Metrics()
    settings = settings_with({"max_answers_per_question": 2}, **quota)
    quotas, _ = await quotas_over(store, settings, clock, metrics)
    return Bot(store, settings, quotas, metrics), metrics


async def test_a_question_over_quota_is_told_once_when_to_come_back_and_not_stored(store):
    clock = Clock()
    bot, _ = await bot_for(store, clock, questions_per_hour=2)
    for _ in range(2):
        await bot.ask()
    assert len(bot.answerer.rows) == 2
    clock.now += 10
    refused = await bot.ask()
    assert bot.notices() == [
        "⏳ You have reached your quota of 2 questions per hour. You can ask again in 1 min."
    ]
    assert await store.conversations.message("!r:x", refused) is None  # nothing stored
    assert len(bot.answerer.rows) == 2  # nothing queued
    await bot.ask()
    assert len(bot.notices()) == 1  # later refusals are silent
    await bot.ask("@ops:x")
    assert len(bot.answerer.rows) == 3  # operators are exempt
    clock.now += HOUR_S
    await bot.ask()
    assert len(bot.answerer.rows) == 4  # the window slid


async def test_regenerations_count_as_questions_of_whoever_asks_them(store):
    clock = Clock()
    bot, _ = await bot_for(store, clock, questions_per_hour=1)
    await bot.ask("@a:x")
    original = bot.answerer.rows[0]
    assert await bot.questions.regenerate(original, "@b:x") == ""
    await bot.settle()
    assert len(bot.answerer.rows) == 2
    notice = await bot.questions.regenerate(original, "@b:x")
    assert notice.startswith("⏳ You have reached your quota of 1 questions per hour")
    assert await bot.questions.regenerate(original, "@b:x") == ""  # silent the next time
    assert len(bot.answerer.rows) == 2
    # exempt people pass the quotas and the limit of answers per question (2 here)
    for _ in range(3):
        assert await bot.questions.regenerate(original, "@ops:x") == ""
        await bot.settle()
    assert len(bot.answerer.rows) == 5
    limited = await bot.questions.regenerate(original, "@c:x")
    assert limited == "This question already had 5 answers: ask it differently to get a new one."


async def test_a_full_queue_turns_questions_away_with_one_notice_a_minute(store):
    bot, metrics = await bot_for(store, Clock(), questions_per_hour=100)
    bot.answerer.wait_s = 130.0
    first = await bot.ask()
    await bot.ask("@b:x")
    assert bot.notices() == [
        "⏳ Many questions are waiting for the model right now. Try again in 3 min."
    ]
    assert await store.conversations.message("!r:x", first) is None
    assert bot.answerer.rows == [] and await store.db.all("SELECT * FROM usage") == []
    assert metrics.registry.get_sample_value("lucie_bot_busy_refusals_total") == 2
    bot.answerer.wait_s = None
    await bot.ask()
    assert len(bot.answerer.rows) == 1


# The scheduler's estimate of how long a new answer would wait


async def test_the_scheduler_says_when_too_many_answers_wait_and_for_how_long():
    clock = Clock(0.0)
    scheduler = FairScheduler(limit=2, clock=clock)
    async with scheduler.slot("!a"):
        clock.now += 2.0
    assert scheduler.average_hold_s == pytest.approx(
        FIRST_HOLD_S + HOLD_WEIGHT * (2 - FIRST_HOLD_S)
    )
    release = asyncio.Event()

    async def hold(room: str) -> None:
        async with scheduler.slot(room):
            await release.wait()

    tasks = [asyncio.create_task(hold(f"!r{n}")) for n in range(5)]
    await asyncio.sleep(0)
    assert scheduler.queued == 3
    assert scheduler.saturated(4) is None
    assert scheduler.saturated(3) == pytest.approx(3 * scheduler.average_hold_s / 2)
    release.set()
    await asyncio.gather(*tasks)
    assert scheduler.saturated(1) is None
