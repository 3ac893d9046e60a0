"""Model slots that follow the model server's own queue: fewer while requests wait there (the
rest wait in the bot's fair queue), more once it keeps up; read from a stand-in server's
/metrics over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib

from bot.config import LLMSettings
from bot.core.scheduler import FairScheduler
from bot.core.server_queue import ServerQueue
from bot.llm.client import ChatModel
from bot.llm.wire import waiting_requests
from tests.support.matrix_user import eventually

BOUND_S = 30


async def test_the_servers_waiting_requests_are_read_from_its_metrics(llm):
    model = ChatModel(LLMSettings(base_url=llm.base_url, model="stand-in"))
    try:
        llm.waiting = 3
        assert await model.server_waiting() == 3
        llm.waiting = 0
        assert await model.server_waiting() == 0
        llm.waiting = None  # a server without /metrics is asked once, then left alone
        fresh = ChatModel(LLMSettings(base_url=llm.base_url, model="stand-in"))
        try:
            asked = llm.metrics_requests
            assert await fresh.server_waiting() is None
            assert await fresh.server_waiting() is None
            assert llm.metrics_requests == asked + 1
        finally:
            await fresh.aclose()
    finally:
        await model.aclose()


def test_a_hostile_metrics_page_gives_a_bounded_count_or_none():
    gauge = "vllm:num_requests_waiting"
    assert waiting_requests(f'{gauge}{{model_name="a"}} 2.0\n{gauge}{{model_name="b"}} 1\n') == 3
    assert waiting_requests("llamacpp:requests_deferred 4\n") == 4
    assert waiting_requests(f"{gauge} 1e30\n") == 100_000
    assert waiting_requests(f"{gauge} -7\n") == 0
    assert waiting_requests(f"{gauge} NaN\n") is None
    assert waiting_requests(f"{gauge} {{{{{{ not a number\n") is None
    assert waiting_requests("other_metric 5\n") is None
    assert waiting_requests(f"{gauge}_by_reason 5\n") is None  # another metric, same prefix
    assert waiting_requests(f"{gauge} 1e308\n{gauge} 1e308\n") == 100_000  # no overflow
    assert waiting_requests("tgi_queue_size 2 1700000000000\n") == 2  # with a timestamp
    # label values full of escaped quotes took prometheus_client's parser quadratic time on
    # the event loop; such a line is no waiting gauge and is skipped without being read
    hostile = gauge + '{a="' + '\\"' * 500_000 + '"} 9\n'
    assert waiting_requests(hostile + f"{gauge} 1\n") == 1
    assert waiting_requests(f"{gauge} 1\n" * 1000) == 64  # at most 64 lines are read


async def holders(
    scheduler: FairScheduler, rooms: list[str], release: asyncio.Event | None = None
) -> tuple[list, asyncio.Event]:
    """One task per room asking for a slot and keeping it until release is set."""
    release = release or asyncio.Event()
    granted: list[str] = []

    async def hold(room: str) -> None:
        async with scheduler.slot(room):
            granted.append(room)
            await release.wait()

    tasks = [asyncio.create_task(hold(room)) for room in rooms]
    await asyncio.sleep(0.05)
    return [tasks, granted], release


async def test_more_slots_let_waiting_answers_in_and_fewer_wait_for_answers_to_finish():
    scheduler = FairScheduler(limit=1)
    (tasks, granted), release = await holders(scheduler, ["!a", "!b", "!c"])
    assert granted == ["!a"] and scheduler.queued == 2
    scheduler.set_limit(3)
    await asyncio.sleep(0)
    assert granted == ["!a", "!b", "!c"] and scheduler.in_use == 3
    scheduler.set_limit(1)  # nothing under way is cut short
    (more, late), _ = await holders(scheduler, ["!d"], release)
    assert late == [] and scheduler.in_use == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks, *more), BOUND_S)
    assert late == ["!d"] and scheduler.in_use == 0 and scheduler.limit == 1


async def test_slots_shrink_while_the_server_queues_and_grow_back_once_it_keeps_up():
    scheduler = FairScheduler(limit=8)
    queue = ServerQueue(scheduler, lambda: asyncio.sleep(0, None), ceiling=8)
    (tasks, granted), release = await holders(scheduler, [f"!r{n}" for n in range(12)])
    assert scheduler.in_use == 8 and scheduler.queued == 4
    queue.adjust(waiting=3)  # vLLM counts a request as waiting until its next step: one look
    assert scheduler.limit == 8  # is not enough
    queue.adjust(waiting=3)  # three of the eight still wait at the server
    assert scheduler.limit == 5
    queue.adjust(waiting=1)  # older news of the same requests: no lower than under way less it
    assert scheduler.limit == 5
    queue.adjust(waiting=0)  # the server keeps up: a quarter more
    assert scheduler.limit == 6
    for _ in range(5):
        queue.adjust(waiting=0)
    assert scheduler.limit == 8  # never beyond llm.max_concurrent_requests
    queue.adjust(waiting=7)
    queue.adjust(waiting=7)
    assert scheduler.limit == 4  # at most half at a time
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), BOUND_S)
    assert sorted(granted) == sorted(f"!r{n}" for n in range(12))


async def test_the_check_runs_in_the_background_at_most_every_two_seconds(llm):
    now = [100.0]
    scheduler = FairScheduler(limit=4)
    model = ChatModel(LLMSettings(base_url=llm.base_url, model="stand-in"))
    queue = ServerQueue(scheduler, model.server_waiting, ceiling=4, clock=lambda: now[0])
    (tasks, _), release = await holders(scheduler, ["!a", "!b", "!c", "!d"])
    try:
        llm.waiting = 2
        queue.nudge()
        asked = llm.metrics_requests

        async def looked() -> bool:
            return llm.metrics_requests > asked and queue._check is None

        await eventually(looked, within=BOUND_S)
        assert scheduler.limit == 4  # one look is not enough
        now[0] += 2.5
        queue.nudge()

        async def shrunk() -> bool:
            return scheduler.limit == 2

        await eventually(shrunk, within=BOUND_S)
        llm.waiting = 0
        asked = llm.metrics_requests
        queue.nudge()  # within two seconds of the last check: none
        await asyncio.sleep(0.2)
        assert llm.metrics_requests == asked
        now[0] += 2.5
        queue.nudge()

        async def asked_again() -> bool:
            return llm.metrics_requests == asked + 1

        await eventually(asked_again, within=BOUND_S)
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), BOUND_S)
        with contextlib.suppress(Exception):
            await model.aclose()
