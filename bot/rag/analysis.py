"""French-aware text analysis for the full-text index.

SQLite's FTS5 cannot take a tokenizer written in Python through the standard library, so text
is analysed here (lowercased, split, stop words out, Snowball-stemmed, accents folded) and the
index stores the resulting terms with its plain `unicode61` tokenizer. Questions go through the
same analysis, so "allocations familiales" and "l'allocation familiale" meet on the same terms.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

# Letters and digits in runs: apostrophes, hyphens and punctuation split words, so
# "l'allocation" gives "l" and "allocation", and ids like "a4" or "2024" stay whole.
_WORD = re.compile(r"[^\W_]+")
# A longer "word" is noise (a hash, a URL's tail, hostile input); cut so that stems stay cheap.
_MAX_WORD = 48
_MAX_QUERY_TERMS = 32
_LIGATURES = str.maketrans(
    {"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ø": "o", "Ø": "o", "ł": "l", "đ": "d"}
)

_ELIDED = frozenset({"l", "d", "qu", "j", "n", "s", "c", "m", "t"})


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_FRENCH_STOP = _word_set(
    """
    au aux avec ce ces dans de des du elle en et eux il ils je la le les leur leurs lui ma mais
    me même mêmes mes moi mon ne nos notre nous on ou où par pas pour qu que qui quoi sa se ses
    son sur ta te tes toi ton tu un une unes uns vos votre vous y à dès lors
    ça cela celle celles celui ceux ceci cet cette ici là voici voilà
    dont lequel laquelle lesquels lesquelles auquel auxquels auxquelles duquel desquels
    desquelles quel quelle quels quelles quelque quelques chaque autre autres tout toute
    tous toutes aucun aucune certains certaines plusieurs
    si ni car donc or puis alors ainsi aussi encore très trop peu plus moins comme
    comment quand pourquoi combien
    entre sous vers chez contre depuis pendant sans selon avant après parmi hors malgré via
    jusqu jusque lorsque lorsqu puisque puisqu quoique quoiqu
    non oui déjà toujours jamais rien souvent parfois
    été étée étées étés étant suis es est sommes êtes sont serai seras sera serons serez seront
    serais serait serions seriez seraient étais était étions étiez étaient fus fut fûmes fûtes
    furent sois soit soyons soyez soient fusse fusses fût fussions fussiez fussent être
    ayant eu eue eues eus ai as avons avez ont aurai auras aura aurons aurez auront aurais
    aurait aurions auriez auraient avais avait avions aviez avaient eut eûmes eûtes eurent aie
    aies ait ayons ayez aient eusse eusses eût eussions eussiez eussent avoir a
    """
)

# English function words, less those that are also French words ("an", "ours", "thèse").
_ENGLISH_STOP = _word_set(
    """
    a about above after again against all am and any are aren as at be because been before
    being below between both but by can cannot could couldn did didn do does doesn doing don
    down during each few for from further had hadn has hasn have haven having he her here hers
    herself him himself his how i if in into is isn it its itself just let ll me more most
    mustn my myself no nor not now of off on once only or other ought our ourselves out
    over own re same shan she should shouldn so some such than that the their theirs them
    themselves then there they this those through to too under until up ve very was
    wasn we were weren what when where which while who whom why will with won would wouldn
    you your yours yourself yourselves
    """
)


def _fold(word: str) -> str:
    """Accents off (NFKD, combining marks dropped) and ligatures spelled out."""
    decomposed = unicodedata.normalize("NFKD", word.translate(_LIGATURES))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


# Stop words are matched folded, so that "etre" typed without accents is dropped like "être".
_STOP = frozenset(_fold(word) for word in _FRENCH_STOP | _ENGLISH_STOP | _ELIDED)
# A stemmer keeps its word in progress in its own fields: one per thread.
_STEMMERS = threading.local()


def _stem(word: str) -> str:
    stemmer = getattr(_STEMMERS, "french", None)
    if stemmer is None:
        # imported at first use: a bot whose rooms have no documents never loads it
        import snowballstemmer  # type: ignore[import-untyped]

        stemmer = _STEMMERS.french = snowballstemmer.stemmer("french")
    return str(stemmer.stemWord(word))


@lru_cache(maxsize=65536)
def _word_terms(word: str) -> tuple[str, ...]:
    """The index terms of one lowercased word: none for a stop word, else its stem.

    Snowball's French rules read accents (é, è, ê tell suffixes apart: "payée" and "payé" meet
    only accented), so the accented word is stemmed and the stem folded. People often type
    without accents, and an unaccented word stems differently ("securite" gives "securit",
    "sécurité" gives "secur"), so an accented word also yields the stem of its folded spelling
    when that differs: both spellings then share a term."""
    folded = _fold(word)
    if not folded or folded in _STOP:
        return ()
    if folded.isdigit():
        return (folded,)
    plain = _fold(_stem(folded))
    if folded == word:
        return (plain,)
    accented = _fold(_stem(word))
    return (accented,) if accented == plain else (accented, plain)


def _terms(text: str) -> list[str]:
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        terms.extend(_word_terms(word[:_MAX_WORD]))
    return terms


def index_terms(text: str) -> str:
    """The text as the full-text index stores it: stemmed, folded terms joined by spaces."""
    return " ".join(_terms(text))


def query_terms(text: str) -> list[str]:
    """A question's distinct terms in the order they come, at most a few dozen."""
    unique: dict[str, None] = {}
    for term in _terms(text):
        unique.setdefault(term, None)
        if len(unique) >= _MAX_QUERY_TERMS:
            break
    return list(unique)
