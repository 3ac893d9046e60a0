"""French personal identifiers in what people write, found and masked before anything is stored.

Five kinds: NIR (social security number), IBAN, French phone numbers, e-mail addresses and postal
addresses. Each kind has its own expression, checked afterwards where a checksum exists (the NIR
key, the IBAN's mod 97); overlapping finds are then resolved (the first wins, the longest among
those starting at the same place) and the text is rewritten once, with tokens the model and the
exports read whatever the language: [NIR], [IBAN], [PHONE], [EMAIL], [ADDRESS].

The text is normalised first, and the normalised text is what is checked and what is returned:
NFKC (full-width and other look-alike digits, letters and signs become their plain forms: "０６"
is "06", "＠" is "@"), format characters dropped (Unicode category Cf: zero-width spaces, soft
hyphens, bidirectional controls, which would otherwise split a number unseen), every space
separator (category Zs: no-break, thin, figure, ideographic spaces...) made a plain space. Line
breaks, tabs and accented letters stay as written; compatibility forms do not ("…" is "...", "ﬁ"
is "fi", "²" is "2"), which changes nothing a reader or the model needs.

Every expression runs on hostile text (up to 65,536 characters from Matrix, up to 18 times longer
after NFKC, Unicode's bound on its expansion), so none may backtrack: repeats are possessive or
bounded, a look-behind keeps each from starting again inside a run it already read, and street
names are read word by word in a bounded loop.

Choices, for the record (more masked rather than less, never at the cost of ordinary numbers):
- a NIR written in its own groups ("2 55 08 14 168 025 38", or without the key
  "2 55 08 14 168 025") is masked whatever its key: the grouping alone tells it, and a wrong key
  is a typo in a number still personal; written otherwise ("255081416802538"), it is masked only
  when its key checks, so that random 15-digit numbers stay, and 13 digits alone are left (as
  often a barcode or a reference);
- a French phone number is ten digits starting with 0 in groups of even length, with a space,
  dot, dash or slash in any gap ("06 12 34 56 78", "06/12/34/56/78", "06-12 34 56 78",
  "06 1234 5678", "0612345678", even if the last were an order number), but not a date and the
  hour after it ("06/12/2024 10 h", "02/2024 06 12": a group of four starting 19 or 20 after a
  group of two reads as a year, so the rare "06 2012 3456" is missed, "06 20 12 34 56" is not);
  after +33 or 0033, nine digits in any groups ("+33 612 345 678");
- an IBAN must have its country's length (IBAN registry) and a valid mod-97 checksum;
- a street type that is also a common noun (place, cours, route...) needs a capitalised name
  after it: "1 place de parking" stays, "1 place de la Concorde" goes;
- a postal code followed by a capitalised word is taken for a town, unless that word is a
  currency, a unit or a few words for people ("15000 Euros", "20000 Français"); "30000 Bretons"
  would be masked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

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
    """The normalised text (see above) with its identifiers masked."""
    text = normalised(text)
    # an e-mail address has an "@" (a literal in its expression): without one, none to find
    emails = _emails(text) if "@" in text else ()
    found = [*_nirs(text), *_ibans(text), *_phones(text), *emails, *_addresses(text)]
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


def normalised(text: str) -> str:
    """The text as it is checked: format characters dropped, every space a plain space, NFKC;
    the very same string when nothing changes."""
    if text.isascii():
        return text  # ASCII holds no Cf, no space but the plain one, and NFKC leaves it as it is
    # Cf before NFKC: a zero-width space dropped between a letter and its accent lets them
    # compose; NFKC makes no Cf and no space but the plain one (a test checks every character)
    table = _format_characters_and_spaces(text)
    result = unicodedata.normalize("NFKC", text.translate(table) if table else text)
    return text if result == text else result


def _format_characters_and_spaces(text: str) -> dict[int, str | None]:
    """A str.translate table for the characters of this text: Cf dropped, Zs a plain space.
    Built from the distinct characters (one pass in C, then a few dozen in an ordinary text)."""
    table: dict[int, str | None] = {}
    for char in set(text):
        category = unicodedata.category(char)
        if category == "Cf":
            table[ord(char)] = None
        elif category == "Zs" and char != " ":
            table[ord(char)] = " "
    return table


def _without_overlaps(found: list[_Span]) -> list[_Span]:
    kept: list[_Span] = []
    end = 0
    for span in sorted(found, key=lambda span: (span.start, span.start - span.end)):
        if span.start >= end:
            kept.append(span)
            end = span.end
    return kept


# what people put between digit groups (every other space is a plain one by now)
_SEP = "[ .\\-]"

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
_IBAN = re.compile(rf"(?<!\w)(?=([A-Za-z]{{2}}\d\d(?:{_SEP}?+[A-Za-z0-9]){{11,30}}+))")
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
    compact = "".join(char for char in candidate if char.isalnum())
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


_PHONE_SEP = "[ .\\-/]"
# +33 X..., 0033 X..., +33 (0)X..., (+33) X..., +33 0X... (nine digits in any groups), or
# 0X... (ten digits, their groups checked below); X is 1-9
_PHONE = re.compile(
    rf"(?<![\w+])(?:\(?+(?:\+|00)33\)?+(?:{_SEP}?+\(0\))?+{_PHONE_SEP}?+0?+[1-9]"
    rf"(?:{_PHONE_SEP}?+\d){{8}}|(?P<national>0[1-9](?:{_PHONE_SEP}?+\d){{8}}))(?!\w)"
)
_PHONE_SEPARATOR = re.compile(_PHONE_SEP)
# a year after a day or a month: "06/12/2024 10" and "02/2024 06 12" are ten digits, dates
_CENTURIES = ("19", "20")


def _phones(text: str) -> Iterator[_Span]:
    position = 0
    while match := _PHONE.search(text, position):
        if _is_phone(match.group("national")):
            yield _Span(match.start(), match.end(), "phone")
            position = match.end()
        else:
            # a number may start inside what was refused ("le 01/02/2024 06 12 34 56 78"):
            # the scan resumes at the next character (a refused match is at most 18 characters
            # long, so each character is read a bounded number of times)
            position = match.start() + 1


def _is_phone(national: str | None) -> bool:
    if national is None:
        return True  # after +33 or 0033: any groups
    groups = _PHONE_SEPARATOR.split(national)
    return not any(len(group) % 2 for group in groups) and not any(
        len(before) == 2 and len(group) == 4 and group[:2] in _CENTURIES
        for before, group in pairwise(groups)
    )


# before the at sign, what RFC 5322 allows (o'brien, a+b, a/b...) and the typographic apostrophe,
# except * ` | ~ { }: rare in addresses, they frame Markdown ("*jean@x.fr*" keeps its stars)
_LOCAL = r"[\w.!#$%&'’/=?^+\-]"
_EMAIL = re.compile(rf"(?<!{_LOCAL}){_LOCAL}++@[\w\-]++(?:\.[\w\-]++)++")


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
    return len(gap) <= 4 and all(char in " ,-–\t\n" for char in gap)


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
_SPACE = "[ \\t]"
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
