"""The number of model slots, following the model server's own queue.

vLLM batches many requests at once, but what it cannot batch waits in its own queue, first come
first served: one busy room's questions would then hold everyone else's. When the server says
requests are waiting (vLLM's and llama.cpp's /metrics), the bot sends fewer at once, so that the
rest wait in its fair queue, room after room; when the server's queue is empty again, it sends
more, up to llm.max_concurrent_requests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.core.scheduler import FairScheduler

log = logging.getLogger(__name__)
CHECK_EVERY_S = 2.0
MIN_SLOTS = 1


class ServerQueue:
    def __init__(
        self,
        scheduler: FairScheduler,
        server_waiting: Callable[[], Awaitable[int | None]],
        ceiling: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = scheduler
        self.server_waiting = server_waiting
        self.ceiling = ceiling
        self.clock = clock
        self._last_check = -CHECK_EVERY_S
        self._busy = False  # the last check found requests waiting at the server
        self._check: asyncio.Task[None] | None = None

    def nudge(self) -> None:
        """Called as answers take and give back slots: a check now and then, in the background,
        while answers come; none at all while the bot is idle."""
        if self._check is not None or self.clock() - self._last_check < CHECK_EVERY_S:
            return
        self._last_check = self.clock()
        self._check = asyncio.create_task(self._checked(), name="server-queue")

    async def _checked(self) -> None:
        try:
            waiting = await self.server_waiting()
            if waiting is not None:
                self.adjust(waiting)
        except Exception:  # a check that fails leaves the number of slots as it was
            log.exception("could not read the model server's queue")
        finally:
            self._check = None

    def adjust(self, waiting: int) -> None:
        scheduler, limit = self.scheduler, self.scheduler.limit
        busy_before, self._busy = self._busy, waiting > 0
        if waiting > 0:
            if not busy_before:
                return  # vLLM counts a request as waiting until its next step: one look is news
            # the server stays full: what it cannot start waits here instead, in fair turns;
            # the requests it holds may be the bot's own, sent before the last check, so never
            # more than what is under way less what waits, and at most half at a time
            target = max(MIN_SLOTS, limit // 2, min(limit, scheduler.in_use - waiting))
        elif limit < self.ceiling:
            target = min(self.ceiling, limit + max(1, limit // 4))
        else:
            return
        if target != limit:
            log.info("model slots %d -> %d (%d waiting at the server)", limit, target, waiting)
            scheduler.set_limit(target)
