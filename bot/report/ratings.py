"""Bradley–Terry ratings of prompt versions from pairwise preferences between regenerated
siblings (two answers to the same question, each under its own prompt version).

The model: version i beats version j with probability p_i / (p_i + p_j). Strengths are fitted
by Hunter's MM (Zermelo's) iteration, which climbs the likelihood at every step without a step
size to tune. A version that won every comparison has no finite maximum-likelihood strength, so
every pair of versions also gets `prior` pseudo-wins each way: a tiny pull towards equality
that keeps perfect records finite and joins versions never compared directly.

Intervals come from a bootstrap over questions (the unit that was sampled: the comparisons of
one question share its voters), seeded and bounded, so the same data always gives the same page.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Pair = tuple[str, str]  # (winner, loser)
PRIOR = 0.1
MAX_ITERATIONS = 10_000
TOLERANCE = 1e-10
RESAMPLES = 200
SEED = 20240601
# Anyone who can invite the bot and set a prompt makes versions, and a fit costs the square of
# the items rated, the bootstrap RESAMPLES more fits: only the items compared most are rated
MAX_RATED = 50


@dataclass(frozen=True)
class Rating:
    item: str
    strength: float  # log-strength, the items' mean being 0
    low: float  # 95 % bootstrap interval of the log-strength
    high: float
    wins: int  # comparisons won and lost, without the prior
    losses: int

    @property
    def versus_average(self) -> float:
        """Chance of being preferred to a version of average strength."""
        return 1 / (1 + math.exp(-self.strength))


def fit(
    wins: Mapping[Pair, float],
    items: Sequence[str],
    prior: float = PRIOR,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = TOLERANCE,
) -> dict[str, float]:
    """Log-strengths (mean 0) of items from wins[(i, j)] = times i was preferred to j."""
    index = {item: n for n, item in enumerate(items)}
    k = len(items)
    if k == 0:
        return {}
    won = np.full((k, k), prior, dtype=float)  # won[i, j]: i beat j, prior included
    np.fill_diagonal(won, 0.0)
    for (winner, loser), count in wins.items():
        if winner != loser:
            won[index[winner], index[loser]] += count
    games = won + won.T
    total_wins = won.sum(axis=1)
    strength = np.ones(k)
    for _ in range(max_iterations):
        updated = total_wins / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated /= math.exp(float(np.log(updated).mean()))  # the scale is free: fix it
        change = float(np.abs(np.log(updated) - np.log(strength)).max())
        strength = updated
        if change < tolerance:
            break
    logs = np.log(strength)
    return {item: float(logs[index[item]]) for item in items}


def signatures(questions: Iterable[Iterable[Pair]]) -> Counter[tuple[Pair, ...]]:
    """Questions grouped by the comparisons they hold: a bootstrap draws questions, and many
    questions hold the same comparisons, so resampling the groups is the same and cheaper."""
    grouped: Counter[tuple[Pair, ...]] = Counter()
    for pairs in questions:
        key = tuple(sorted(pairs))
        if key:
            grouped[key] += 1
    return grouped


def _wins(groups: Sequence[tuple[Pair, ...]], counts: Sequence[int]) -> Counter[Pair]:
    wins: Counter[Pair] = Counter()
    for pairs, count in zip(groups, counts, strict=True):
        if count:
            for pair in pairs:
                wins[pair] += int(count)
    return wins


def compared(grouped: Counter[tuple[Pair, ...]]) -> Counter[str]:
    """How many comparisons each item took part in."""
    found: Counter[str] = Counter()
    for pairs, count in grouped.items():
        for winner, loser in pairs:
            found[winner] += count
            found[loser] += count
    return found


def rated_items(grouped: Counter[tuple[Pair, ...]], most: int = MAX_RATED) -> set[str]:
    """The `most` items compared most often (ties to the first by name); the others are left
    out of the ratings, with their comparisons."""
    ranked = sorted(compared(grouped).items(), key=lambda item: (-item[1], item[0]))
    return {item for item, _ in ranked[:most]}


def rate(
    grouped: Counter[tuple[Pair, ...]],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    prior: float = PRIOR,
    most: int = MAX_RATED,
) -> list[Rating]:
    """Ratings with 95 % intervals, strongest first, of at most `most` items (those compared
    most); [] with fewer than two items."""
    kept = rated_items(grouped, most)
    within: Counter[tuple[Pair, ...]] = Counter()
    for pairs, count in grouped.items():
        inside = tuple(pair for pair in pairs if pair[0] in kept and pair[1] in kept)
        if inside:
            within[inside] += count
    groups = sorted(within)
    counts = [within[group] for group in groups]
    wins = _wins(groups, counts)
    # an item kept whose comparisons were all with items left out has nothing left to rate
    items = sorted({item for pair in wins for item in pair})
    if len(items) < 2:
        return []
    estimate = fit(wins, items, prior)
    draws = _bootstrap(groups, counts, items, resamples, seed, prior)
    won: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    for (winner, loser), count in wins.items():
        won[winner] += count
        lost[loser] += count
    ratings = []
    for n, item in enumerate(items):
        low, high = np.percentile(draws[:, n], [2.5, 97.5]) if len(draws) else (-np.inf, np.inf)
        ratings.append(Rating(item, estimate[item], float(low), float(high), won[item], lost[item]))
    return sorted(ratings, key=lambda rating: (-rating.strength, rating.item))


def _bootstrap(
    groups: Sequence[tuple[Pair, ...]],
    counts: Sequence[int],
    items: Sequence[str],
    resamples: int,
    seed: int,
    prior: float,
) -> np.ndarray:
    """Log-strengths refitted on `resamples` draws of as many questions, with replacement."""
    rng = np.random.default_rng(seed)
    total = sum(counts)
    shares = np.asarray(counts, dtype=float) / total
    draws = np.empty((resamples, len(items)))
    for r in range(resamples):
        fitted = fit(_wins(groups, rng.multinomial(total, shares).tolist()), items, prior)
        draws[r] = [fitted[item] for item in items]
    return draws
