"""French personal identifiers in what people write, found and masked before anything is stored.

Five kinds: NIR (social security number), IBAN, French phone numbers, e-mail addresses and postal
addresses. Each kind has its own expression, checked afterwards where a checksum exists (the NIR
key, the IBAN's mod 97); overlapping finds are then resolved (the first wins, the longest among
those starting at the same place) and the text is rewritten once, with tokens the model and the
exports read whatever the language: [NIR], [IBAN], [PHONE], [EMAIL], [ADDRESS].

Every expression runs on hostile text of up to 65,536 characters, so none may backtrack: repeats
are possessive or bounded, a look-behind keeps each from starting again inside a run it already
read, and street names are read word by word in a bounded loop.

Choices, for the record (more masked rather than less, never at the cost of ordinary numbers):
- a NIR written in its own groups ("2 55 08 14 168 025 38", or without the key
  "2 55 08 14 168 025") is masked whatever its key: the grouping alone tells it, and a wrong key
  is a typo in a number still personal; written otherwise ("255081416802538"), it is masked only
  when its key checks, so that random 15-digit numbers stay, and 13 digits alone are left (as
  often a barcode or a reference);
- a phone number keeps one separator throughout ("06 12 34 56 78", "06.12.34.56.78"), which
  tells it from dates ("01.02.2024") and amounts; ten digits starting with 0 and run together
  ("0612345678") are masked, even if they were an order number;
- an IBAN must have its country's length (IBAN registry) and a valid mod-97 checksum;
- a street type that is also a common noun (place, cours, route...) needs a capitalised name
  after it: "1 place de parking" stays, "1 place de la Concorde" goes;
- a postal code followed by a capitalised word is taken for a town, unless that word is a
  currency, a unit or a few words for people ("15000 Euros", "20000 Français"); "30000 Bretons"
  would be masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

KINDS = ("nir", "iban", "phone", "email", "address")
_TOKENS = {kind: f"[{kind.upper()}]" for kind in KINDS}


@dataclass(frozen=True)
class Masked:
    """The text with its identifiers replaced, and the kinds found (in KINDS order, each once)."""

    text: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str


def mask_personal_data(text: str) -> Masked:
    found = [*_nirs(text), *_ibans(text), *_phones(text), *_emails(text), *_addresses(text)]
    kept = _without_overlaps(found)
    if not kept:
        return Masked(text, ())
    pieces, cursor = [], 0
    for span in kept:
        pieces += [text[cursor : span.start], _TOKENS[span.kind]]
        cursor = span.end
    pieces.append(text[cursor:])
    kinds = {span.kind for span in kept}
    return Masked("".join(pieces), tuple(kind for kind in KINDS if kind in kinds))


def _without_overlaps(found: list[_Span]) -> list[_Span]:
    kept: list[_Span] = []
    end = 0
    for span in sorted(found, key=lambda span: (span.start, span.start - span.end)):
        if span.start >= end:
            kept.append(span)
            end = span.end
    return kept


# what people put between digit groups: space, dot, dash, and the no-break spaces French
# typography uses (U+00A0, U+202F)
_SEP = "[ .\\-\u00a0\u202f]"

# sex digit (3, 4, 7, 8: temporary numbers), year, month (20-99: unknown or pseudo months per
# INSEE), department (2A/2B: Corsica), commune, order number, then the key
_NIR = re.compile(
    rf"(?<!\w)([1-478]){_SEP}?+(\d\d){_SEP}?+(0[1-9]|1[0-2]|[2-9]\d){_SEP}?+(\d\d|2[ABab])"
    rf"{_SEP}?+(\d{{3}}){_SEP}?+(\d{{3}})(?:{_SEP}?+(\d\d))?+(?!\w)"
)
_NIR_GROUPS = 6


def _nirs(text: str) -> Iterator[_Span]:
    for match in _NIR.finditer(text):
        body, key = "".join(match.groups()[:_NIR_GROUPS]), match.group(_NIR_GROUPS + 1)
        separators = sum(not char.isalnum() for char in match.group(0))
        # written in the NIR's own groups, it is one (a wrong key is a typo); run together,
        # only its key tells it from any other number
        grouped = separators == _NIR_GROUPS - (key is None)
        if grouped or (key is not None and nir_key(body) == int(key)):
            yield _Span(match.start(), match.end(), "nir")


def nir_key(body: str) -> int:
    """The key of a 13-character NIR: 97 minus the number modulo 97, Corsica's 2A and 2B
    counted as 19 and 18."""
    number = int(body.upper().replace("2A", "19").replace("2B", "18"))
    return 97 - number % 97


# every place a country code and check digits start a word, even inside another candidate (a
# zero-width look-ahead lets the scan resume at the next character); at most 34 characters
_IBAN = re.compile(r"(?<!\w)(?=([A-Za-z]{2}\d\d(?:[ \u00a0]?+[A-Za-z0-9]){11,30}+))")
# the IBAN registry's countries and the length of their IBANs
# fmt: off
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# fmt: on
_LETTER_VALUES = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})


def _ibans(text: str) -> Iterator[_Span]:
    for match in _IBAN.finditer(text):
        end = _iban_end(text, match.start(), match.group(1))
        if end is not None:
            yield _Span(match.start(), end, "iban")


def _iban_end(text: str, start: int, candidate: str) -> int | None:
    """Where the IBAN starting at start ends: after as many characters as its country's IBANs
    have (more may follow, from the next words), if its checksum holds."""
    length = _IBAN_LENGTHS.get(candidate[:2].upper())
    if length is None:
        return None
    compact = candidate.replace(" ", "").replace("\u00a0", "")
    if len(compact) < length:
        return None
    cut = start + _index_after(candidate, length)
    if cut < len(text) and text[cut].isalnum():
        return None  # longer than the country's IBANs: something else
    code = compact[:length].upper()
    return cut if int((code[4:] + code[:4]).translate(_LETTER_VALUES)) % 97 == 1 else None


def _index_after(candidate: str, count: int) -> int:
    """The index just after the count-th letter or digit of candidate."""
    seen = 0
    for index, char in enumerate(candidate):
        seen += char.isalnum()
        if seen == count:
            return index + 1
    return len(candidate)


# 0X XX XX XX XX (X 1-9 first), +33 X..., 0033 X..., +33 (0)X..., (+33) X...: one separator,
# the same throughout (the back-reference), so that dates and amounts do not pass for phones
_PHONE = re.compile(
    rf"(?<![\w+])(?:\(?+(?:\+|00)33\)?+(?:{_SEP}?+\(0\))?+{_SEP}?+|0)[1-9]({_SEP}?+)\d\d"
    r"(?:\1\d\d){3}(?!\w)"
)


def _phones(text: str) -> Iterator[_Span]:
    for match in _PHONE.finditer(text):
        yield _Span(match.start(), match.end(), "phone")


_EMAIL = re.compile(r"(?<![\w.+\-])[\w.+\-]++@[\w\-]++(?:\.[\w\-]++)++")


def _emails(text: str) -> Iterator[_Span]:
    for match in _EMAIL.finditer(text):
        yield _Span(match.start(), match.end(), "email")


def _addresses(text: str) -> list[_Span]:
    """Streets and postal codes with their towns, joined into one span when only a comma or
    spaces separate them ("12 rue de la Paix, 75002 Paris")."""
    spans = sorted([*_streets(text), *_postcodes(text)])
    joined: list[tuple[int, int]] = []
    for start, end in spans:
        if joined and _only_glue(text[joined[-1][1] : start]):
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return [_Span(start, end, "address") for start, end in joined]


def _only_glue(gap: str) -> bool:
    return len(gap) <= 4 and all(char in " ,-–\t\n\u00a0\u202f" for char in gap)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# street types that are seldom anything else after a number: any name may follow
_PLAIN_TYPES = _words(
    "rue avenue av boulevard bd bld blvd boul impasse imp allée allee quai "
    "faubourg fbg fg rond-point lieu-dit lieudit ruelle venelle esplanade"
)
# street types that are common nouns too ("2 cours de maths"): only a capitalised name follows
_NOUN_TYPES = _words(
    "place pl chemin route rte cours square sq voie passage cité cite résidence "
    "residence hameau sentier promenade parvis traverse montée montee chaussée chaussee"
)
_TYPES = "|".join(sorted(map(re.escape, _PLAIN_TYPES | _NOUN_TYPES), key=len, reverse=True))
_SPACE = "[ \\t\u00a0\u202f]"
# a house number (bis, ter, 12A), an optional comma, a street type (abbreviated with a dot)
_STREET = re.compile(
    rf"(?<![\w,.])(\d{{1,4}})(?:{_SPACE}?+(?i:bis|ter|quater)|[A-Da-d])?+(,?+){_SPACE}++"
    rf"((?i:{_TYPES}))\.?+(?![\w\-])"
)
_NAME_WORD = re.compile(rf"{_SPACE}++([^\W_][\w'’\-]*+)")
# "à", "en", "sur" are left out: "1 résidence à Nice" is not an address
_NAME_LINKS = _words("de du des la le les l d au aux et lès")
_MAX_NAME_WORDS = 8
_YEAR_DIGITS = 4


def _streets(text: str) -> Iterator[tuple[int, int]]:
    for match in _STREET.finditer(text):
        if len(match.group(1)) == _YEAR_DIGITS and match.group(2):
            continue  # "En 1789, place de la Bastille": a year, not a house number
        plain = match.group(3).lower() in _PLAIN_TYPES
        end = _street_name_end(text, match.end(), plain)
        if end is not None:
            yield match.start(), end


def _street_name_end(text: str, position: int, plain: bool) -> int | None:
    """Where the street's name ends: linking words (de, la, l'...) and capitalised words or
    numbers ("rue du 8 Mai 1945"); after a plain street type, a first word in lower case is the
    name as well ("12 rue de la paix"), but nothing after it (the sentence goes on)."""
    end = None
    for _ in range(_MAX_NAME_WORDS):
        word = _NAME_WORD.match(text, position)
        if word is None:
            break
        core = word.group(1)
        if core[:2].lower() in ("d'", "l'", "d’", "l’"):
            core = core[2:]  # d'Alsace, l'Église
        if not core or core.lower() in _NAME_LINKS:
            position = word.end()
            continue
        if core[0].isupper() or core[0].isdigit():
            end = position = word.end()
            continue
        if end is None and plain:
            end = word.end()
        break
    return end


_UPPER = "A-ZÀ-ÖØ-ÞŒ"
_TOWN_WORD = rf"[{_UPPER}][\w'’]*+(?:-[\w'’]++)*+"
_POSTCODE = re.compile(
    rf"(?<![\w.,])(\d{{5}}){_SPACE}++({_TOWN_WORD}(?:{_SPACE}++{_TOWN_WORD}){{0,3}}+)"
)
_CEDEX_NUMBER = re.compile(rf"{_SPACE}++\d{{1,2}}(?!\w)")
# French departments (01-95, 2A/2B under 20), overseas (97x) and Monaco (980)
_DEPARTMENTS = frozenset(f"{number:02d}" for number in [*range(1, 96), 97, 98])
# capitalised words a number is often followed by, which are not towns ("15000 Euros",
# "20000 Français")
_NOT_TOWNS = _words(
    "eur euro euros usd chf gbp francs dollars livres km kg ko mo go to kwh mwh ht ttc "
    "français françaises habitants personnes"
)


def _postcodes(text: str) -> Iterator[tuple[int, int]]:
    for match in _POSTCODE.finditer(text):
        town = match.group(2)
        if match.group(1)[:2] not in _DEPARTMENTS or town.split()[0].lower() in _NOT_TOWNS:
            continue
        end = match.end()
        if town.split()[-1].lower() == "cedex" and (number := _CEDEX_NUMBER.match(text, end)):
            end = number.end()
        yield match.start(), end
