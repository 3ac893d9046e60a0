"""A limit on concurrent model requests, handed out round-robin across rooms."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairScheduler:
    """A room with ten queued questions waits its turn like a room with one."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def queued(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @asynccontextmanager
    async def slot(self, room_id: str) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(room_id, deque()).append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # granted just as we were cancelled: pass it on
                else:
                    self._forget(room_id, future)
                raise
        try:
            yield
        finally:
            self._release()

    def _forget(self, room_id: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(room_id)
        if queue and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[room_id]

    def _release(self) -> None:
        while self._waiting:
            room_id, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(room_id)
            else:
                del self._waiting[room_id]
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
