"""Confidence intervals for approval rates (shared by the HTML report and `!lucie stats`)."""

from __future__ import annotations

import math

Z95 = 1.959964  # two-sided 95 %


def wilson(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for successes/total: unlike the normal approximation it stays in
    [0, 1] and is honest for the small counts a room collects. (0, 1) when nothing was counted."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # rounding may put a bound a hair on the wrong side of p (p = 1 gave 0.9999999999999999):
    # the interval always holds the rate it is drawn around
    return max(0.0, min(p, centre - margin)), min(1.0, max(p, centre + margin))
