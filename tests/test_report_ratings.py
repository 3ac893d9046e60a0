"""Bradley–Terry ratings of prompt versions (bot/report/ratings.py) against cases known by
hand and against a plain maximum-likelihood fit; how siblings' votes become preferences."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import pytest

import bot.report.ratings as ratings_module
from bot.report.charts import drawing
from bot.report.page import MAX_PLOTTED, Context, Page
from bot.report.queries import Counts, Figures, ReportQueries, Scope, version_id
from bot.report.ratings import MAX_RATED, Pair, fit, rate, signatures


def test_symmetric_records_give_equal_ratings():
    found = fit({("a", "b"): 5, ("b", "a"): 5}, ["a", "b"])
    assert found["a"] == pytest.approx(0, abs=1e-9) and found["b"] == pytest.approx(0, abs=1e-9)
    cycle = fit({("a", "b"): 1, ("b", "c"): 1, ("c", "a"): 1}, ["a", "b", "c"], prior=0)
    assert all(value == pytest.approx(0, abs=1e-9) for value in cycle.values())


def test_two_items_match_the_closed_form():
    """With two items the maximum likelihood is p_a / p_b = wins_a / wins_b: the prior adds
    its pseudo-wins to each side."""
    found = fit({("a", "b"): 3, ("b", "a"): 1}, ["a", "b"], prior=0)
    assert math.exp(found["a"] - found["b"]) == pytest.approx(3, rel=1e-9)
    assert found["a"] + found["b"] == pytest.approx(0, abs=1e-12)  # mean log-strength is 0
    prior = fit({("a", "b"): 3, ("b", "a"): 1}, ["a", "b"], prior=0.5)
    assert math.exp(prior["a"] - prior["b"]) == pytest.approx(3.5 / 1.5, rel=1e-9)


def test_a_perfect_record_stays_finite():
    found = fit({("a", "b"): 10}, ["a", "b"], prior=0.1)
    assert math.isfinite(found["a"]) and math.isfinite(found["b"])
    assert math.exp(found["a"] - found["b"]) == pytest.approx(10.1 / 0.1, rel=1e-6)


def _log_likelihood(strengths: list[float], won: dict[tuple[int, int], float]) -> float:
    return sum(
        count * (strengths[i] - math.log(math.exp(strengths[i]) + math.exp(strengths[j])))
        for (i, j), count in won.items()
    )


def _plain_maximum_likelihood(won: dict[tuple[int, int], float], k: int) -> list[float]:
    """Gradient ascent on the log-likelihood, small steps, many of them: slow and obvious."""
    s = [0.0] * k
    for _ in range(20_000):
        gradient = [0.0] * k
        for (i, j), count in won.items():
            p = 1 / (1 + math.exp(s[j] - s[i]))  # chance that i beats j
            gradient[i] += count * (1 - p)
            gradient[j] -= count * (1 - p)
        s = [value + 0.05 * g for value, g in zip(s, gradient, strict=True)]
        mean = sum(s) / k
        s = [value - mean for value in s]
    return s


def test_three_items_match_a_plain_maximum_likelihood_fit():
    wins = {("a", "b"): 4, ("b", "a"): 1, ("b", "c"): 3, ("c", "b"): 2, ("a", "c"): 2,
            ("c", "a"): 1}  # fmt: skip
    items = ["a", "b", "c"]
    found = fit(wins, items, prior=0)
    index = {item: n for n, item in enumerate(items)}
    won = {(index[w], index[loser]): float(n) for (w, loser), n in wins.items()}
    expected = _plain_maximum_likelihood(won, 3)
    assert [found[item] for item in items] == pytest.approx(expected, abs=1e-6)
    assert found["a"] > found["b"] > found["c"]
    # and nothing nearby is likelier
    best = _log_likelihood([found[item] for item in items], won)
    for n in range(3):
        for step in (-0.01, 0.01):
            moved = [found[item] + (step if m == n else 0) for m, item in enumerate(items)]
            assert _log_likelihood(moved, won) <= best


def test_the_bootstrap_is_seeded_bounded_and_holds_the_estimate():
    questions = [[("v2", "v1")]] * 6 + [[("v1", "v2")]] * 2 + [[("v3", "v1"), ("v2", "v3")]] * 3
    grouped = signatures(questions)
    assert sum(grouped.values()) == 11 and len(grouped) == 3
    first = rate(grouped, resamples=50, seed=1)
    assert first == rate(grouped, resamples=50, seed=1)  # the same page from the same data
    assert first[0].item == "v2"
    for rating in first:
        assert rating.low <= rating.strength <= rating.high
    v2 = next(r for r in first if r.item == "v2")
    assert (v2.wins, v2.losses) == (9, 2)
    assert rate(Counter(), resamples=5) == []


def test_preferences_need_votes_on_both_sides_and_different_versions():
    figures = Figures()
    compare = ReportQueries._compare
    compare(figures, [(("", 0), 1), (("!r", 2), 1)])  # a tie prefers neither
    compare(figures, [(("!r", 2), 3), (("!r", 2), -1)])  # same version: nothing to compare
    assert figures.compared_questions == 0
    compare(figures, [(("", 0), -1), (("!r", 2), 2), (("!r", 3), 2)])
    assert figures.compared_questions == 1
    (pairs,) = figures.comparisons
    assert pairs == (("!r\x002", "default"), ("!r\x003", "default"))


# anyone who can invite the bot and set prompts makes versions: the cost must not follow them

VERSIONS = 2000


def many_versions() -> tuple[Counter[tuple[Pair, ...]], list[str]]:
    """A chain of VERSIONS versions, each preferred to the next; the first ones compared most."""
    items = [version_id((f"!room{n}:x", 1)) for n in range(VERSIONS)]
    grouped: Counter[tuple[Pair, ...]] = Counter()
    for n in range(VERSIONS - 1):
        grouped[((items[n], items[n + 1]),)] = VERSIONS - n
    return grouped, items


def test_only_the_versions_compared_most_are_rated(monkeypatch):
    grouped, items = many_versions()
    sizes: list[int] = []

    def counted(wins: Any, rated: Any, *args: Any) -> dict[str, float]:
        sizes.append(len(rated))
        return {item: 0.0 for item in rated}  # the cost, not the fit, is under test

    monkeypatch.setattr(ratings_module, "fit", counted)
    found = rate(grouped, resamples=3)
    assert len(sizes) == 1 + 3 and max(sizes) == MAX_RATED  # fits of 50 items, not 2000
    # the first version is in one pair, each next one in two: versions 1 to 50 are compared most
    assert {rating.item for rating in found} == set(items[1 : MAX_RATED + 1])
    assert all(rating.wins + rating.losses for rating in found)  # each compared within


def test_the_page_caps_its_plots_and_says_what_it_left_out():
    grouped, _ = many_versions()
    figures = Figures(first_ms=0, last_ms=1000, comparisons=grouped)
    figures.compared_questions = sum(grouped.values())
    figures.timeline = {0: Counts(answers=VERSIONS)}
    for n in range(VERSIONS):
        figures.versions[(f"!room{n}:x", 1)] = Counts(answers=1, up=1 + n % 7, down=1)
        figures.models[f"model-{n}"] = Counts(answers=1, up=1, down=n % 5)
    found = rate(grouped, resamples=3)
    context = Context(Scope(0, None, False, 1), "en", 0, {})
    with drawing():
        page = Page(figures, found, context).html()
    assert f"{VERSIONS - MAX_RATED} others are not." in page
    assert f"The plot shows the {MAX_PLOTTED} with the most votes; {VERSIONS - MAX_PLOTTED}" in page
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
    ticks = [plot.count('<g id="ytick_') for plot in svgs[1:4]]  # one a row, and so an item
    assert ticks == [MAX_PLOTTED, MAX_PLOTTED, MAX_RATED]  # versions, models, ratings
    assert page.count("<tr>") > 2 * VERSIONS  # the tables still list every version and model
