"""A first limit on how much of the model one person may take: questions and regenerations per
sliding window, so that nobody monopolises the slots that every room shares."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

# people tracked at once: beyond this the oldest idle ones are forgotten, so a flood of new
# senders cannot grow memory without bound
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0
    first_refusal: bool = False  # the first refusal in a window: worth one notice, not more


class SlidingLimit:
    """At most `limit` events per person within `window_s`."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: dict[str, deque[float]] = {}
        self._refused: dict[str, float] = {}  # when the person was last told

    def take(self, person: str, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        if self.limit <= 0:
            return Verdict(True)
        times = self._events.pop(person, None) or deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        self._events[person] = times  # re-inserted: dicts keep the most recent last
        if len(times) < self.limit:
            times.append(now)
            self._trim()
            return Verdict(True)
        retry_after = self.window_s - (now - times[0])
        told = self._refused.get(person)
        first = told is None or now - told >= self.window_s
        if first:
            self._refused[person] = now
        return Verdict(False, retry_after, first)

    def _trim(self) -> None:
        while len(self._events) > MAX_TRACKED:
            oldest = next(iter(self._events))
            del self._events[oldest]
            self._refused.pop(oldest, None)
