"""Background work the relay starts (answers, notices, commands), kept so it can be drained."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from bot.errors import TransientError

log = logging.getLogger(__name__)


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, TransientError):  # said in one line; resumed at the next start
            log.error("%s stopped: database unavailable (%s)", task.get_name(), error)
        else:
            log.error("%s failed", task.get_name(), exc_info=error)

    async def drain(self, grace_s: float) -> None:
        """Let work under way finish, for grace_s at most, then stop the rest."""
        if self._tasks:
            log.info("waiting up to %.0f s for %d answers under way", grace_s, len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
