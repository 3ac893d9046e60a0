"""Context budget, fair scheduling and the streaming publisher, with small fakes."""

from __future__ import annotations

import asyncio

from bot.core.context import Turn, fit_to_budget, to_messages
from bot.core.ports import RateLimited, SendFailed
from bot.core.scheduler import FairScheduler
from bot.core.streaming import ReplyStream


async def words(messages):
    return sum(len(m["content"].split()) for m in messages)


async def test_budget_drops_oldest_turns_keeps_system_and_question():
    turns = [
        Turn("user", "a " * 10),
        Turn("assistant", "b " * 10),
        Turn("user", "c " * 10),
        Turn("assistant", "d " * 10),
        Turn("user", "question finale"),
    ]
    messages = to_messages("system prompt", turns, name_speakers=False)
    kept, total = await fit_to_budget(messages, 25, words)
    assert [m["content"][:1] for m in kept] == ["s", "c", "d", "q"]
    assert total == 24
    kept, _ = await fit_to_budget(messages, 3, words)
    assert [m["role"] for m in kept] == ["system", "user"]
    assert kept[-1]["content"] == "question finale"


def test_speakers_are_named_in_groups_and_same_roles_merge():
    turns = [Turn("user", "salut", "Alice"), Turn("user", "re", "Bob"), Turn("assistant", "ok")]
    messages = to_messages("sys", turns, name_speakers=True)
    assert messages[1] == {"role": "user", "content": "Alice: salut\n\nBob: re"}
    assert to_messages("sys", turns, name_speakers=False)[1]["content"] == "salut\n\nre"


async def test_scheduler_limits_concurrency_and_serves_rooms_in_turn():
    scheduler = FairScheduler(limit=1)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(room, name):
        async with scheduler.slot(room):
            order.append(name)
            await gate.wait()

    tasks = [asyncio.create_task(job("!busy", "busy0"))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(job("!busy", f"busy{i}")) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(job("!quiet", "quiet")))
    await asyncio.sleep(0)
    assert order == ["busy0"] and scheduler.queued == 4
    gate.set()
    await asyncio.gather(*tasks)
    assert order.index("quiet") == 2  # after one more busy answer, not after all three


async def test_scheduler_survives_cancelled_waiters():
    scheduler = FairScheduler(limit=1)
    release = asyncio.Event()

    async def hold():
        async with scheduler.slot("!a"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await holder
    async with asyncio.timeout(1):
        async with scheduler.slot("!b"):
            pass


class FakePort:
    user_id = "@bot:x"

    def __init__(self, limited_after: int | None = None, retry_after: float = 0.3):
        self.sent: list[dict] = []
        self.txn_ids: list[str] = []
        self.limited_after = limited_after
        self.retry_after = retry_after
        self.refusals = 0

    async def send(self, room_id, content, txn_id):
        self.txn_ids.append(txn_id)
        limited = self.limited_after is not None and len(self.sent) >= self.limited_after
        if limited and self.refusals < 3:
            self.refusals += 1
            raise RateLimited(self.retry_after)
        self.sent.append(content)
        await asyncio.sleep(0.001)
        return f"$e{len(self.sent)}"


def stream(port, **kw):
    async def first(event_id):
        first.seen = event_id

    first.seen = None
    options = {"interval": 0.05, "max_edits": 5, "final_timeout": 5, **kw}
    return ReplyStream(port, "!r", "$q", None, "@a:x", on_first_event=first, **options), first


async def test_stream_sends_first_text_then_throttled_edits_and_a_final_edit():
    port = FakePort()
    reply, first = stream(port)
    for i in range(40):
        reply.update(f"text {i}")
        await asyncio.sleep(0.005)
    assert await reply.finish("text final")
    assert first.seen == "$e1"
    assert port.sent[0]["body"].startswith("text ") and "org.matrix.msc4357.live" in port.sent[0]
    edits = port.sent[1:]
    assert 1 <= len(edits) <= 6  # at most max_edits intermediate edits + the final one
    final = edits[-1]["m.new_content"]
    assert final["body"] == "text final" and "org.matrix.msc4357.live" not in final


async def test_rate_limits_skip_intermediate_edits_but_the_final_text_lands():
    port = FakePort(limited_after=1, retry_after=0.2)
    reply, _ = stream(port, max_edits=50)
    for i in range(30):
        reply.update(f"t{i}")
        await asyncio.sleep(0.01)
    assert await reply.finish("complete")
    assert port.refusals == 3 and reply.rate_limit_waits >= 1
    assert port.sent[-1]["m.new_content"]["body"] == "complete"
    assert len(port.sent) < 30


async def test_a_fast_answer_is_one_message_without_live_marker():
    port = FakePort()
    reply, _ = stream(port)
    assert await reply.finish("tout de suite")
    assert len(port.sent) == 1 and "org.matrix.msc4357.live" not in port.sent[0]


async def test_a_short_streamed_answer_within_the_first_delay_goes_out_whole():
    port = FakePort()
    reply, _ = stream(port, first_delay=0.3)
    for word in ("Oui", "Oui,", "Oui, bien sûr."):
        reply.update(word)
        await asyncio.sleep(0.01)
    assert await reply.finish("Oui, bien sûr.")
    assert len(port.sent) == 1  # one event: no "(edited)", no live marker
    assert (
        port.sent[0]["body"] == "Oui, bien sûr." and "org.matrix.msc4357.live" not in port.sent[0]
    )
    slow_port = FakePort()
    slow, _ = stream(slow_port, first_delay=0.05)
    slow.update("Le début")
    await asyncio.sleep(0.2)  # the model is still going: the first text shows meanwhile
    assert len(slow_port.sent) == 1 and "org.matrix.msc4357.live" in slow_port.sent[0]
    assert await slow.finish("Le début et la fin")
    assert slow_port.sent[-1]["m.new_content"]["body"] == "Le début et la fin"


class LossyPort(FakePort):
    """Stores a message, then loses the response once, as a dropped connection would;
    deduplicates by transaction id as Synapse does."""

    def __init__(self):
        super().__init__()
        self.by_txn: dict[str, str] = {}
        self.lost = False

    async def send(self, room_id, content, txn_id):
        self.txn_ids.append(txn_id)
        if txn_id in self.by_txn:
            return self.by_txn[txn_id]
        self.sent.append(content)
        self.by_txn[txn_id] = f"$e{len(self.sent)}"
        if not self.lost:
            self.lost = True
            raise SendFailed("response lost")
        return self.by_txn[txn_id]


async def test_a_lost_response_never_duplicates_the_reply_and_the_final_text_still_lands():
    port = LossyPort()
    reply, first = stream(port)
    reply.update("début")
    await asyncio.sleep(0.05)  # the first send is stored, its response lost
    assert await reply.finish("début et fin")
    replies = [c for c in port.sent if "m.new_content" not in c]
    assert len(replies) == 1 and first.seen == "$e1"
    assert port.txn_ids[0] == port.txn_ids[1]  # the retry reused the transaction id
    assert port.sent[-1]["m.new_content"]["body"] == "début et fin"
    assert "org.matrix.msc4357.live" not in port.sent[-1]["m.new_content"]


async def test_a_first_message_taken_just_before_a_crash_is_not_sent_twice_after_restart():
    port = LossyPort()
    port.lost = True  # no lost response here: the crash is what loses the event id
    before, _ = stream(port, first_txn_id="lucie-answer-q1")
    before.update("début")
    await asyncio.sleep(0.05)  # the homeserver took the first message...
    before._publisher.cancel()  # ...and the process died before recording its id
    # the restart's new stream, for an answer that may have been sent already
    after, first = stream(port, first_txn_id="lucie-answer-q1", first_may_exist=True)
    after.update("début, repris")
    assert await after.finish("début, repris et fini")
    replies = [c for c in port.sent if "m.new_content" not in c]
    assert len(replies) == 1 and first.seen == "$e1"  # the same reply, edited
    assert port.sent[-1]["m.new_content"]["body"] == "début, repris et fini"


def test_answer_transaction_ids_are_stable_and_distinct():
    from bot.core.pipeline.publish import answer_txn_id
    from bot.core.records import AnswerRow

    def row(question: str, sibling: int) -> AnswerRow:
        return AnswerRow(1, "!r", question, sibling, 0, None, None, "queued", None, 0, 0)

    assert answer_txn_id(row("$q", 0)) == answer_txn_id(row("$q", 0))
    assert len({answer_txn_id(row("$q", 0)), answer_txn_id(row("$q", 1)),
                answer_txn_id(row("$p", 0))}) == 3  # fmt: skip
