"""A limit on concurrent model requests, handed out round-robin across rooms, and how long the
queue would keep a new question waiting."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# before any answer was timed: a short answer from a busy model
FIRST_HOLD_S = 10.0
# weight of the latest hold in the running average: recent answers tell the current pace
HOLD_WEIGHT = 0.2


class FairScheduler:
    """A room with ten queued questions waits its turn like a room with one."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.average_hold_s = FIRST_HOLD_S
        self._free = limit
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    def set_limit(self, limit: int) -> None:
        """A new number of slots: more let waiting answers in at once; fewer take effect as
        answers under way finish (none is cut short)."""
        self._free += limit - self.limit
        self.limit = limit
        self._grant()

    @property
    def queued(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def saturated(self, max_waiting: int) -> float | None:
        """None while fewer than max_waiting answers wait for a slot; else about how many
        seconds a new one would wait."""
        waiting = self.queued
        if waiting < max_waiting:
            return None
        return waiting * self.average_hold_s / self.limit

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
        started = self.clock()
        try:
            yield
        finally:
            held = max(0.0, self.clock() - started)
            self.average_hold_s += HOLD_WEIGHT * (held - self.average_hold_s)
            self._release()

    def _forget(self, room_id: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(room_id)
        if queue and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[room_id]

    def _release(self) -> None:
        self._free += 1
        self._grant()

    def _grant(self) -> None:
        """Free slots to the rooms waiting, one room after another."""
        while self._free > 0 and self._waiting:
            room_id, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(room_id)
            else:
                del self._waiting[room_id]
            if not future.done():
                self._free -= 1
                future.set_result(None)
