"""The embedded moderation backend: words, phrases and RE2 patterns per language, no server.

What a text is matched as: compatibility forms folded ("ﬁ", full-width letters), accents and
invisible format characters (zero-width spaces, soft hyphens) dropped, typographic apostrophes
read "'". Words and phrases are then matched on whole words, case ignored, whatever punctuation or
spacing stands between them ("Comment... SE suicider"); patterns see the same text, with "(?i)".
Nothing more clever (no leetspeak, no letters spelt apart): a model-based backend covers that.

Time is linear in the text: it is cut into words once and phrases are looked up in a tree keyed
by word (at most as many steps per word as the longest phrase has words), and RE2 never
backtracks. One expression per word would rescan the text for each."""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from bot.config import RuleSettings
from bot.guard.patterns import compile_pattern
from bot.guard.ports import Exchange

_LANGS = ("fr", "en")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "\u2010": "-", "\u2011": "-"})
_WORD = re.compile(r"\w+")
# what a configured word may hold: words, and spaces, apostrophes or hyphens between them
_PHRASE = re.compile(r"\w++(?:[\s'\-]++\w++)*+")


class RulesModerator:
    """Categories from configured rules (and the shipped ones), per language: rules for "any"
    apply to every text, "fr" and "en" rules only to texts checked in that language."""

    name = "rules"

    def __init__(self, rules: Sequence[RuleSettings], use_defaults: bool) -> None:
        chosen = [*(default_rules() if use_defaults else ()), *rules]
        self._categories = list(dict.fromkeys(rule.category for rule in chosen))
        order = {category: index for index, category in enumerate(self._categories)}
        compiled = functools.cache(_compile)  # a rule for "any" is compiled once, not thrice
        self._by_lang = {
            lang: _Matcher.of(
                [rule for rule in chosen if rule.lang in ("any", lang)], order, compiled
            )
            for lang in (*_LANGS, "any")
        }

    def match(self, text: str, lang: str) -> tuple[str, ...]:
        """The categories text falls under, in the order rules declare them, each once."""
        matcher = self._by_lang.get(lang, self._by_lang["any"])
        found = matcher.search(plain(text))
        return tuple(self._categories[index] for index in sorted(found))

    async def check(self, exchange: Exchange) -> tuple[str, ...]:
        return self.match(exchange.text, exchange.lang)

    async def aclose(self) -> None:
        return None


@dataclass
class _Node:
    """A word of a phrase: the words that may follow it, and the categories a phrase ending
    here is listed under."""

    after: dict[str, _Node] = field(default_factory=dict)
    categories: set[int] = field(default_factory=set)


@dataclass
class _Matcher:
    phrases: _Node
    patterns: list[tuple[Any, int]]  # compiled RE2 expressions (re2 has no type information)

    @classmethod
    def of(
        cls,
        rules: Iterable[RuleSettings],
        order: dict[str, int],
        compiled: Callable[[str], Any],
    ) -> _Matcher:
        root, patterns = _Node(), []
        for rule in rules:
            category = order[rule.category]
            for phrase in rule.words:
                node = root
                for word in _phrase_words(phrase, rule.category):
                    node = node.after.setdefault(word, _Node())
                node.categories.add(category)
            patterns += [(compiled(pattern), category) for pattern in rule.patterns]
        return cls(root, patterns)

    def search(self, text: str) -> set[int]:
        found: set[int] = set()
        words = _WORD.findall(text.casefold())
        for start in range(len(words)):
            node: _Node | None = self.phrases
            position = start
            while position < len(words) and node is not None:
                node = node.after.get(words[position])
                if node is not None:
                    found |= node.categories
                position += 1
        for pattern, category in self.patterns:
            if category not in found and pattern.search(text) is not None:
                found.add(category)
        return found


def _phrase_words(phrase: str, category: str) -> list[str]:
    folded = plain(phrase).casefold().strip()
    if not _PHRASE.fullmatch(folded):
        # "c++" would be read "c" and match every lone c: refuse it rather than guess
        raise ValueError(
            f"rule {category}: {phrase!r} must be words separated by spaces, apostrophes or "
            "hyphens (use a pattern for anything else)"
        )
    return _WORD.findall(folded)


def _compile(pattern: str) -> Any:
    """Accents are dropped from the pattern as from the text, so "règle" finds "Règle" and
    "regle" alike."""
    return compile_pattern("(?i)" + _without_marks(pattern, "NFD"))


def plain(text: str) -> str:
    """text as rules see it: compatibility forms folded, accents and format characters dropped,
    typographic apostrophes made plain; case is kept (patterns ignore it, words fold it)."""
    if text.isascii():
        return text
    return _without_marks(text, "NFKD")


def _without_marks(text: str, form: Literal["NFD", "NFKD"]) -> str:
    decomposed = unicodedata.normalize(form, text)
    return "".join(filter(_kept, decomposed)).translate(_APOSTROPHES)


@functools.lru_cache(maxsize=8192)
def _kept(char: str) -> bool:
    return not unicodedata.combining(char) and unicodedata.category(char) != "Cf"


@functools.cache
def default_rules() -> tuple[RuleSettings, ...]:
    """The shipped rules (default_rules.toml), with its fragments put in place."""
    source = resources.files("bot.guard").joinpath("default_rules.toml").read_text("utf-8")
    data = tomllib.loads(source)
    fragments: dict[str, str] = data.get("fragments", {})
    rules = []
    for rule in data["rules"]:
        patterns = list(rule.get("patterns", []))
        for name, fragment in fragments.items():
            patterns = [pattern.replace(f"{{{name}}}", fragment) for pattern in patterns]
        rules.append(RuleSettings.model_validate({**rule, "patterns": patterns}))
    return tuple(rules)
