"""One backoff: how long to wait after the n-th failure in a row, doubling up to a cap, with
jitter when many clients may retry at once (so they do not all come back together)."""

from __future__ import annotations

import random

MAX_DOUBLINGS = 10  # 2**10 s is beyond any cap the settings allow


def backoff(failures: int, cap_s: float, jitter: bool = False) -> float:
    delay = min(cap_s, 2.0 ** min(max(failures, 0), MAX_DOUBLINGS))
    return delay * (0.5 + random.random() / 2) if jitter else delay
