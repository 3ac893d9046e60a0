"""Pseudonymous ids, name masking and text scrubbing for exported rows.

Every expression here runs on texts people wrote, so none may backtrack: each scan is linear in
the text's length whatever it holds (possessive quantifiers, and a look-behind so that a failed
match is not tried again from inside the same run of characters).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import unicodedata
from collections import OrderedDict

# Order matters: Matrix ids and URLs before e-mails, e-mails before phone numbers.
_PATTERNS = [
    (re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE), "<URL>"),
    (re.compile(r"[@!#$][\w.=\-/+]++:[\w.\-]++(?::\d++)?+"), "<MATRIX_ID>"),
    (re.compile(r"(?<![\w.+\-])[\w.+\-]++@[\w\-]++(?:\.[\w\-]++)++"), "<EMAIL>"),
    # digit groups with at most one separator between them; whether it is long enough to be a
    # phone number is counted afterwards, not by nested repeats
    (re.compile(r"(?<!\w)\+?+\(?+\d++\)?+(?:[ .\-]?+\(?+\d++\)?+)*+"), "<PHONE>"),
]
_MIN_PHONE_DIGITS = 8


class Pseudonyms:
    """Keyed hashes: stable across exports with the same secret, useless without it."""

    # the same people, conversations and answers come back row after row (an Open WebUI export
    # names each rater, chat and message once per vote): remembered, within a bound
    CACHED = 4096

    def __init__(self, secret: str) -> None:
        self._key = secret.encode("utf-8")
        self._cached = functools.lru_cache(maxsize=self.CACHED)(self._digest)

    def of(self, kind: str, value: str) -> str:
        return self._cached(kind, value)

    def _digest(self, kind: str, value: str) -> str:
        # the one-shot C HMAC: the hmac.HMAC object costs more than the hash of a short id
        digest = hmac.digest(self._key, f"{kind}\x00{value}".encode(), "sha256")
        return f"{kind}_{digest.hex()[:20]}"


def person_names(user_id: str, display_name: str | None) -> set[str]:
    """What a person may be called in a text: their display name, with and without a Tchap
    "[Ministère]" suffix, its words, and the names their user id is made of."""
    localpart = user_id[1:].split(":", 1)[0]
    names = {localpart, *_localpart_names(localpart)}
    if display_name:
        names.add(display_name)
        bare = _without_suffix(display_name)
        names.add(bare)
        for word in bare.split():
            names.add(word)
            names.update(word.split("-"))  # "Jean-Pierre" is also "Jean" and "Pierre"
    return {name for name in names if name.strip()}


def _without_suffix(name: str) -> str:
    """ "Prénom Nom [Intérieur]" without its bracket (Tchap puts the ministry there)."""
    stripped = name.rstrip()
    for opening, closing in ("[]", "()"):
        if stripped.endswith(closing) and opening in stripped:
            return stripped[: stripped.rfind(opening)].strip()
    return stripped


def _localpart_names(localpart: str) -> set[str]:
    """Tchap ids are e-mail addresses with "@" turned into "-": prenom.nom-interieur.gouv.fr.
    The domain starts after the last "-" that only a domain follows; a hyphenated domain leaves
    its first word with the person's, which then is masked too (more, never less)."""
    person = localpart
    cut = localpart.rfind("-")
    if cut > 0 and _is_domain(localpart[cut + 1 :]):
        person = localpart[:cut]
    parts = [part for part in _LOCALPART_SEPARATORS.split(person) if part]
    names = {person, *parts}
    for word in parts:
        names.update(word.split("-"))
    if len(parts) > 1:  # prenom.nom is written "Prénom Nom" (accents and case are folded)
        names.add(" ".join(parts))
        names.add(" ".join(part.replace("-", " ") for part in parts))
    return names


_LOCALPART_SEPARATORS = re.compile(r"[._=/+]")


def _is_domain(text: str) -> bool:
    labels = text.split(".")
    return len(labels) > 1 and all(label.isascii() and label.isalnum() for label in labels)


class NameMask:
    """People's names, replaced in every exported text: a model told who speaks in a group room
    may repeat a name in its answer.

    Names are indexed by their first word, so a text is scanned once whatever the number of
    people (a regular expression with thousands of alternatives is tried at every character).
    Case and accents are folded, so "prenom.nom" in an id masks "Prénom Nom" in a text."""

    MIN_LENGTH = 3

    def __init__(self, names: set[str]) -> None:
        by_word: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            folded = _fold(name.strip())
            first = _WORD.search(folded)
            if len(folded) < self.MIN_LENGTH or first is None:
                continue
            entries = by_word.setdefault(first.group(0), [])
            if (first.start(), folded) not in entries:
                entries.append((first.start(), folded))
        # Names that share a first word often differ only after it ("Personne 1" ... "Personne
        # 999"): instead of comparing each in turn, the text at a word is sliced once per
        # (offset, length) and looked up in a set. Runs of equal (offset, length) keep the
        # longest-first order the names are tried in; within a run the slice is the same, so at
        # most one name of the run matches, and it makes the same span whichever it is.
        self._by_word: dict[str, list[tuple[int, int, frozenset[str]]]] = {}
        for word, entries in by_word.items():
            entries.sort(key=lambda entry: -len(entry[1]))  # the longest name wins
            runs: list[tuple[int, int, set[str]]] = []
            for offset, name in entries:
                if runs and runs[-1][:2] == (offset, len(name)):
                    runs[-1][2].add(name)
                else:
                    runs.append((offset, len(name), {name}))
            self._by_word[word] = [(offset, size, frozenset(run)) for offset, size, run in runs]
        self._firsts = frozenset(self._by_word)

    def __call__(self, text: str) -> str:
        if not self._by_word:
            return text
        folded = _fold(text)
        # most texts name nobody: one pass in C tells so, before any word is looked at in Python
        if self._firsts.isdisjoint(_WORD.findall(folded)):
            return text
        spans, end = [], 0
        for word in _WORD.finditer(folded):
            runs = self._by_word.get(word.group(0))
            if runs is None:
                continue
            for offset, size, run in runs:
                start = word.start() - offset
                stop = start + size
                # a negative start never matched (what is left of the text is shorter than the name)
                if start < end or folded[start:stop] not in run:
                    continue
                if _is_word(folded, start - 1) or _is_word(folded, stop):
                    continue
                spans.append((start, stop))
                end = stop
                break
        if not spans:
            return text
        pieces, cursor = [], 0
        for start, stop in spans:
            pieces += [text[cursor:start], "<NAME>"]
            cursor = stop
        return "".join([*pieces, text[cursor:]])


_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    """Lower case without accents, one character for one, so offsets stay those of text."""
    if text.isascii():
        return text.lower()
    return text.translate(_FOLDED)


class _FoldTable(dict[int, str]):
    """_fold_char by code point, for str.translate (one pass in C instead of a call a character),
    filled as characters are met, up to a bound: a hostile text may hold every code point."""

    LIMIT = 65536

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        if len(self) < self.LIMIT:
            self[code] = folded
        return folded


_FOLDED = _FoldTable()


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    decomposed = unicodedata.normalize("NFKD", char)
    base = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    if len(base) == 1:
        return base
    lowered = char.lower()  # "İ" lowers to two characters, "ﬁ" decomposes to two
    return lowered if len(lowered) == 1 else char


def _is_word(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")


def scrub(text: str) -> str:
    for pattern, placeholder in _PATTERNS:
        if placeholder == "<PHONE>":
            text = pattern.sub(_phone, text)
        elif _MAY_HOLD[placeholder](text):
            text = pattern.sub(placeholder, text)
    return text


# what a text must hold for each pattern to match, tested with `in` (in C, at memory speed)
# before the pattern runs (tried at every character): most texts hold no link, id or address.
# "www." in lower case: IGNORECASE matches only "w" and "W" to w (Unicode has no other)
_MAY_HOLD = {
    "<URL>": lambda text: "://" in text or "www." in text.lower(),
    "<MATRIX_ID>": lambda text: ":" in text and any(sigil in text for sigil in "@!#$"),
    "<EMAIL>": lambda text: "@" in text,
}


def _phone(match: re.Match[str]) -> str:
    found = match.group(0)
    # a closing bracket with no opening one in the number belongs to the sentence around it
    tail = ")" if found.endswith(")") and found.count("(") < found.count(")") else ""
    digits = sum(ch.isdigit() for ch in found)
    return f"<PHONE>{tail}" if digits >= _MIN_PHONE_DIGITS else found


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextMemo:
    """Masked texts by the text they were made from, the least recently used forgotten past a
    budget of characters: memory stays bounded whatever the size of the database."""

    def __init__(self, budget: int) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()
        self._budget = budget
        self._size = 0

    def get(self, key: str) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        cost = len(key) + len(value)
        if cost > self._budget // 8 or key in self._items:
            return  # one long text would push out the many short ones that recur
        self._items[key] = value
        self._size += cost
        while self._size > self._budget:
            old_key, old_value = self._items.popitem(last=False)
            self._size -= len(old_key) + len(old_value)
