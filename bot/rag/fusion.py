"""Reciprocal rank fusion: rankings from retrievers whose scores cannot be compared (BM25 and
cosine) merged by rank alone, as Cormack, Clarke and Büttcher (SIGIR 2009) proposed."""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = 60
) -> list[tuple[int, float]]:
    """Each item scores the sum of 1 / (k + rank) over the rankings holding it (rank from 1);
    best first. Ties keep the order in which items first appear, the first ranking first."""
    if k < 0:
        raise ValueError("k must not be negative")
    scores: dict[int, float] = {}
    for ranking in rankings:
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue  # an item listed twice counts once, at its best rank
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
