"""Moderation over its backends: a text a server refuses (a 4xx) costs that text alone; a
server is left alone only after failures in a row, then probed by one check at a time, less and
less often; checks per server are bounded, and so are the categories one answer may flag. An
in-process backend for the counting and the clock, real HTTP servers where people meet them."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from aiohttp import web

from bot.config import GuardSettings, LlamaGuardSettings
from bot.guard.health import FAILURES_BEFORE_PAUSE, MAX_PROBE_S
from bot.guard.llama_guard import LlamaGuardModerator
from bot.guard.moderation import (
    MAX_CONCURRENT_CHECKS,
    MAX_FLAGS_PER_BACKEND,
    Decision,
    Flag,
    Moderation,
)
from bot.guard.ports import Exchange, ModerationUnavailable
from tests.support import guard_servers
from tests.support.guard_servers import StandInLlamaGuard

llama_guard_server = guard_servers.llama_guard_server
SECRET = "ma question très privée"
Outcome = tuple[str, ...] | ModerationUnavailable


def down() -> ModerationUnavailable:
    return ModerationUnavailable("HTTP 503")


def refused_text() -> ModerationUnavailable:
    return ModerationUnavailable("HTTP 400", server_down=False)


class Server:
    """A moderation backend in-process: answers as queued (then `usual`), after `delay`."""

    name = "llama_guard"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.outcomes: deque[Outcome] = deque()
        self.usual: Outcome = ()
        self.seen: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def check(self, exchange: Exchange) -> tuple[str, ...]:
        self.seen.append(exchange.text)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            outcome = self.outcomes.popleft() if self.outcomes else self.usual
        finally:
            self.in_flight -= 1
        if isinstance(outcome, ModerationUnavailable):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Observed:
    def __init__(self) -> None:
        self.checks: list[tuple[str, float, bool]] = []

    def __call__(self, backend: str, seconds: float, failed: bool) -> None:
        self.checks.append((backend, seconds, failed))

    @property
    def failures(self) -> int:
        return sum(failed for _, _, failed in self.checks)


def moderation(
    server: Any, clock: Clock | None = None, observed: Observed | None = None, **guard: Any
) -> Moderation:
    settings = GuardSettings(backends=["rules"], **guard)
    return Moderation(settings, [server], observed, clock or Clock())


async def check(mod: Moderation, text: str = "Bonjour") -> Decision:
    return await mod.check(Exchange("user", text))


UNAVAILABLE = Decision("unavailable", (Flag("llama_guard", "unavailable", "unavailable"),))


async def pause(mod: Moderation, server: Server) -> None:
    """Fail the server as many times in a row as pause it."""
    server.outcomes.extend(down() for _ in range(FAILURES_BEFORE_PAUSE))
    for _ in range(FAILURES_BEFORE_PAUSE):
        assert await check(mod) == UNAVAILABLE
    sent = len(server.seen)
    assert await check(mod) == UNAVAILABLE
    assert len(server.seen) == sent  # paused: not asked


# --- a refused text, failures in a row, probes ----------------------------------------------


async def test_a_text_the_server_refuses_is_unavailable_alone(caplog: pytest.LogCaptureFixture):
    """Anyone can send a text past the guard's context: it must not stop the server for all."""
    server, observed = Server(), Observed()
    mod = moderation(server, observed=observed)
    server.outcomes.extend(refused_text() for _ in range(5))
    for n in range(5):
        assert await check(mod, f"{SECRET} {n}") == UNAVAILABLE
    assert len(server.seen) == 5  # each one asked: nothing paused
    assert await check(mod) == Decision("pass")
    assert len(server.seen) == 6
    assert observed.failures == 5 and len(observed.checks) == 6
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_a_refused_text_lets_the_others_through_when_open():
    server = Server()
    mod = moderation(server, stance="fail_open")
    server.outcomes.append(refused_text())
    decision = await check(mod)
    assert decision.action == "log" and decision.categories == ("unavailable",)


async def test_only_failures_in_a_row_pause_a_server(caplog: pytest.LogCaptureFixture):
    server, observed = Server(), Observed()
    mod = moderation(server, observed=observed)
    server.outcomes.extend([down(), down(), (), down(), refused_text(), down()])
    for _ in range(6):
        await check(mod, SECRET)
    assert len(server.seen) == 6  # two failures, an answer, two failures (a 4xx between)
    server.outcomes.append(down())  # the third in a row
    assert await check(mod, SECRET) == UNAVAILABLE
    assert await check(mod, SECRET) == UNAVAILABLE
    assert len(server.seen) == 7  # the last one was not sent
    assert observed.checks[-1] == ("llama_guard", 0.0, True)
    assert any("3 times in a row" in record.getMessage() for record in caplog.records)
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_a_paused_server_is_probed_every_2_s_then_less_often_up_to_30_s():
    server, clock = Server(), Clock()
    mod = moderation(server, clock)
    await pause(mod, server)
    server.usual = down()
    paused_at, probes = clock.now, []
    while len(probes) < 7 and clock.now < paused_at + 200:
        sent = len(server.seen)
        assert await check(mod) == UNAVAILABLE
        if len(server.seen) > sent:
            probes.append(clock.now)
        clock.now += 0.5
    intervals = [later - earlier for earlier, later in itertools.pairwise([paused_at, *probes])]
    assert intervals == [2.0, 4.0, 8.0, 16.0, MAX_PROBE_S, MAX_PROBE_S, MAX_PROBE_S]
    clock.now += 30
    server.usual = ()
    assert await check(mod) == Decision("pass")  # the probe answered: the pause is over
    assert await check(mod) == Decision("pass")
    assert len(server.seen) == FAILURES_BEFORE_PAUSE + 9


async def test_a_server_back_up_is_probed_again_from_2_s():
    server, clock = Server(), Clock()
    mod = moderation(server, clock)
    await pause(mod, server)
    clock.now += 2
    assert await check(mod) == Decision("pass")
    await pause(mod, server)
    clock.now += 2
    assert await check(mod) == Decision("pass")  # not 4 s: an answer reset the back-off


async def test_while_a_probe_is_under_way_the_others_are_not_sent():
    server, clock = Server(delay=0.2), Clock()
    mod = moderation(server, clock)
    await pause(mod, server)
    clock.now += 2
    sent = len(server.seen)
    decisions = await asyncio.gather(*(check(mod) for _ in range(5)))
    assert len(server.seen) == sent + 1
    assert sorted(d.action for d in decisions) == ["pass"] + ["unavailable"] * 4
    await asyncio.gather(*(check(mod) for _ in range(5)))
    assert len(server.seen) == sent + 6


async def test_a_cancelled_probe_lets_the_next_one_go():
    server, clock = Server(), Clock()
    mod = moderation(server, clock)
    await pause(mod, server)
    clock.now += 2
    server.delay = 10
    probe = asyncio.create_task(check(mod))
    await asyncio.sleep(0.05)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    server.delay = 0
    assert await check(mod) == Decision("pass")


# --- bounded checks and flags ----------------------------------------------------------------


async def test_checks_per_server_are_bounded_and_the_time_out_counts_from_the_slot():
    """Three waves on a slow server: the first two are answered (the second started late, yet
    within its own time-out); the third waits past the time-out, unchecked, pausing nothing."""
    server, observed = Server(delay=0.4), Observed()
    mod = moderation(server, observed=observed, timeout_s=0.6)
    decisions = await asyncio.gather(*(check(mod) for _ in range(3 * MAX_CONCURRENT_CHECKS)))
    assert server.most_in_flight == MAX_CONCURRENT_CHECKS
    actions = [decision.action for decision in decisions]
    assert actions.count("pass") == 2 * MAX_CONCURRENT_CHECKS
    assert actions.count("unavailable") == MAX_CONCURRENT_CHECKS
    assert len(server.seen) == 2 * MAX_CONCURRENT_CHECKS
    assert observed.failures == MAX_CONCURRENT_CHECKS
    assert all(seconds >= 0.55 for _, seconds, failed in observed.checks if failed)
    server.delay = 0
    assert await check(mod) == Decision("pass")  # not paused
    assert len(server.seen) == 2 * MAX_CONCURRENT_CHECKS + 1


async def test_a_hostile_server_flags_a_bounded_number_of_categories_refusals_first():
    server = Server()
    mod = moderation(server, default_action="log", actions={"S9": "refuse", "S6": "allow"})
    server.usual = (*(f"c{n}" for n in range(63)), "S6", "S9", "S9")
    decision = await check(mod)
    assert decision.action == "refuse" and decision.categories == ("S9",)
    assert len(decision.flags) == MAX_FLAGS_PER_BACKEND
    assert decision.flags[0] == Flag("llama_guard", "S9", "refuse")
    assert [flag.category for flag in decision.flags[1:]] == [f"c{n}" for n in range(7)]
    inline = mod.decide("rules", [f"r{n}" for n in range(64)])
    assert inline.action == "log" and len(inline.flags) == MAX_FLAGS_PER_BACKEND


# --- over real HTTP --------------------------------------------------------------------------


class ContextLimitedGuard:
    """A Llama Guard behind vLLM with a small max_model_len: a 400 for a longer prompt."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        content = "".join(message["content"] for message in body["messages"])
        if len(content) > self.max_chars:
            error = f"This model's maximum context length is {self.max_chars} tokens."
            return web.json_response(
                {"object": "error", "message": error, "type": "BadRequestError", "code": 400},
                status=400,
            )
        verdict = "unsafe\nS9" if "grenade" in content else "safe"
        return web.json_response({"choices": [{"message": {"content": verdict}}]})


@pytest.fixture
async def limited_guard() -> AsyncIterator[ContextLimitedGuard]:
    server = ContextLimitedGuard(max_chars=4000)
    await server.start()
    yield server
    await server.close()


def llama(url: str, timeout_s: float = 5.0) -> LlamaGuardModerator:
    return LlamaGuardModerator(LlamaGuardSettings(url=url), timeout_s)


async def test_a_message_past_the_guards_context_refuses_no_one_else(
    limited_guard: ContextLimitedGuard,
):
    async with aclosing(llama(limited_guard.url)) as guard:
        mod = moderation(guard)
        assert await check(mod, "x" * 20_000) == UNAVAILABLE
        assert await check(mod, "x" * 20_000) == UNAVAILABLE
        assert await check(mod, "x" * 20_000) == UNAVAILABLE
        assert await check(mod) == Decision("pass")
        refused = await check(mod, "une grenade ?")
        assert refused.action == "refuse" and refused.categories == ("S9",)
    assert limited_guard.requests == 5


async def test_one_slow_check_pauses_nothing(llama_guard_server: StandInLlamaGuard):
    llama_guard_server.set_mode("slow", delay_s=5)
    async with aclosing(llama(llama_guard_server.url, timeout_s=0.3)) as guard:
        mod = moderation(guard, timeout_s=0.3)
        assert await check(mod) == UNAVAILABLE
        llama_guard_server.set_mode("normal")
        assert await check(mod) == Decision("pass")
    assert len(llama_guard_server.requests) == 2


async def test_a_broken_server_is_left_alone_then_probed(
    llama_guard_server: StandInLlamaGuard, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    llama_guard_server.set_mode("error")
    clock = Clock()
    async with aclosing(llama(llama_guard_server.url)) as guard:
        mod = moderation(guard, clock)
        for _ in range(FAILURES_BEFORE_PAUSE + 5):
            assert await check(mod, SECRET) == UNAVAILABLE
        assert len(llama_guard_server.requests) == FAILURES_BEFORE_PAUSE
        llama_guard_server.set_mode("normal")
        clock.now += 2
        assert await check(mod) == Decision("pass")
        assert await check(mod) == Decision("pass")
    assert len(llama_guard_server.requests) == FAILURES_BEFORE_PAUSE + 2
    assert any("answers again" in record.getMessage() for record in caplog.records)
    assert all(SECRET not in record.getMessage() for record in caplog.records)
