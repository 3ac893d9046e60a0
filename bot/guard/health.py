"""How a moderation server is doing, as the checks sent to it found it.

A few failures in a row (down, slow, answering nonsense) and the server is left alone, so that
a hung one does not cost every text its time-out; meanwhile one check at a time is let through
as a probe, less and less often, and the first answer ends the pause. A single failure pauses
nothing: that one text may be the cause, and someone can send it at will.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

FAILURES_BEFORE_PAUSE = 3
FIRST_PROBE_S = 2.0
MAX_PROBE_S = 30.0

Admission = Literal["check", "probe"]


class ServerHealth:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.failures = 0  # server-down failures in a row
        self.probe_every_s = FIRST_PROBE_S
        self.next_probe = 0.0
        self.probing = False  # a probe is under way: the others wait for its word

    @property
    def paused(self) -> bool:
        return self.failures >= FAILURES_BEFORE_PAUSE

    def admit(self) -> Admission | None:
        """Whether a check goes to the server: as usual, as the one probe of a paused server,
        or not at all (None). A probe must be ended by done()."""
        if not self.paused:
            return "check"
        if self.probing or self._clock() < self.next_probe:
            return None
        self.probing = True
        return "probe"

    def done(self, admitted: Admission) -> None:
        """The check ended, whatever its outcome (cancelled too)."""
        if admitted == "probe":
            self.probing = False

    def answered(self) -> bool:
        """The server answered; True when that ends a pause."""
        was_paused = self.paused
        self.failures = 0
        self.probe_every_s = FIRST_PROBE_S
        return was_paused

    def failed(self, admitted: Admission) -> bool:
        """The server is down, slow or answering nonsense; True when that starts a pause."""
        self.failures += 1
        if admitted == "probe":
            self.probe_every_s = min(self.probe_every_s * 2, MAX_PROBE_S)
        elif self.failures != FAILURES_BEFORE_PAUSE:
            return False  # not yet paused, or a check sent before the pause ending late
        self.next_probe = self._clock() + self.probe_every_s
        return admitted != "probe"
