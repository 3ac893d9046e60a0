"""French personal identifiers masked before storage: each kind found in ordinary sentences,
ordinary numbers (dates, amounts, article numbers, references) left alone, hostile texts read in
linear time."""

from __future__ import annotations

import random
import re
import sys
import time
import unicodedata

import pytest

from bot.guard import pii
from bot.guard.pii import Masked, mask_personal_data
from tests.test_export_units import _nested_repeats


def masked(text: str) -> tuple[str, tuple[str, ...]]:
    result = mask_personal_data(text)
    return result.text, result.kinds


# --- true positives, one kind at a time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the key checks (97 - number mod 97), with or without groups
        ("Mon numéro de sécu est le 2 55 08 14 168 025 38, merci.", "le [NIR], merci."),
        ("NIR : 255081416802538.", "NIR : [NIR]."),
        ("n° 2.55.08.14.168.025.38", "n° [NIR]"),
        ("Corse : 2 90 12 2A 004 123 67", "Corse : [NIR]"),  # 2A counted as 19
        ("Corse : 290122a00412367 voilà", "Corse : [NIR] voilà"),
        # written in its own groups, a NIR is one even with a mistyped key, or without its key
        ("Sécu 1 85 05 78 006 084 36 (je crois)", "Sécu [NIR] (je crois)"),
        ("sans la clé : 2 55 08 14 168 025, c'est ça ?", "sans la clé : [NIR], c'est ça ?"),
        ("temporaire 7 55 08 14 168 025 38", "temporaire [NIR]"),
    ],
)
def test_nir_is_masked(text: str, expected: str) -> None:
    out, kinds = masked(text)
    assert kinds == ("nir",)
    assert out.endswith(expected)
    assert not re.search(r"\d{3}", out)


def test_nir_key_is_validated_when_the_number_is_run_together() -> None:
    assert pii.nir_key("2550814168025") == 38
    assert pii.nir_key("290122A004123") == 67
    assert masked("NIR 255081416802539") == ("NIR 255081416802539", ())
    assert masked("NIR 2550814168025") == ("NIR 2550814168025", ())  # 13 digits: a barcode?
    # random 15-digit numbers shaped like a NIR: masked only when the key happens to check
    draw = random.Random(14)
    numbers = [
        f"{draw.choice('12')}{draw.randrange(100):02d}{draw.randrange(1, 13):02d}"
        f"{draw.randrange(1, 96):02d}{draw.randrange(1000):03d}{draw.randrange(1000):03d}"
        f"{draw.randrange(100):02d}"
        for _ in range(2000)
    ]
    hits = [number for number in numbers if mask_personal_data(f"n° {number}").kinds]
    assert hits == [number for number in numbers if pii.nir_key(number[:13]) == int(number[13:])]
    assert 0 < len(hits) < len(numbers) // 40  # about 1 in 100


@pytest.mark.parametrize(
    "iban",
    [
        "FR76 3000 6000 0112 3456 7890 189",
        "FR7630006000011234567890189",
        "fr76 3000 6000 0112 3456 7890 189",
        "FR14 2004 1010 0505 0001 3M02 606",
        "DE89 3704 0044 0532 0130 00",
        "GB29 NWBK 6016 1331 9268 19",
        "BE68 5390 0754 7034",
    ],
)
def test_iban_with_a_valid_checksum_is_masked(iban: str) -> None:
    text = f"Pour le remboursement, mon IBAN est {iban} et le BIC suit. 1234 5678"
    assert masked(text) == (
        "Pour le remboursement, mon IBAN est [IBAN] et le BIC suit. 1234 5678",
        ("iban",),
    )
    # more groups after it (an amount, a reference) are not swallowed
    assert masked(f"IBAN {iban} 1234 5678 EUR")[0] == "IBAN [IBAN] 1234 5678 EUR"


@pytest.mark.parametrize(
    "text",
    [
        "IBAN FR76 3000 6000 0112 3456 7890 188",  # checksum off by one
        "IBAN FR76 3000 6000 0112 3456 7890 18",  # one character short for France
        "IBAN FR7630006000011234567890189X",  # glued to more: something else
        "IBAN ZZ76 3000 6000 0112 3456 7890 189",  # no such country
    ],
)
def test_iban_without_a_valid_checksum_or_length_is_left(text: str) -> None:
    assert masked(text) == (text, ())


@pytest.mark.parametrize(
    "phone",
    [
        "06 12 34 56 78",
        "0612345678",
        "06.12.34.56.78",
        "06-12-34-56-78",
        "01 23 45 67 89",
        "+33 6 12 34 56 78",
        "+33612345678",
        "0033 6 12 34 56 78",
        "+33 (0)1 23 45 67 89",
        "(+33) 6 12 34 56 78",
        "09\u00a087\u00a065\u00a043\u00a021",
    ],
)
def test_french_phone_numbers_are_masked(phone: str) -> None:
    assert masked(f"Rappelez-moi au {phone}, après 18 h.") == (
        "Rappelez-moi au [PHONE], après 18 h.",
        ("phone",),
    )


def test_email_addresses_are_masked() -> None:
    text = "Écrivez à jean-marc.dupont+rh@interieur.gouv.fr ou à Zoé.Müller@exemple.fr."
    assert masked(text) == ("Écrivez à [EMAIL] ou à [EMAIL].", ("email",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("J'habite 12 rue de la Paix, 75002 Paris depuis 2010.", "J'habite [ADDRESS] depuis 2010."),
        ("au 3 bis avenue des Champs-Élysées", "au [ADDRESS]"),
        ("au 12 rue de la paix et je voudrais savoir", "au [ADDRESS] et je voudrais savoir"),
        ("15 bd Saint-Michel 75005 PARIS CEDEX 05, merci", "[ADDRESS], merci"),
        ("Livraison au 4 impasse d'Alsace.", "Livraison au [ADDRESS]."),
        ("1 place de la Concorde", "[ADDRESS]"),
        ("le 7, rue du 8 Mai 1945 à Lyon", "le [ADDRESS] à Lyon"),
        ("12A av. Foch", "[ADDRESS]"),
        ("1250 route des Alpes", "[ADDRESS]"),
        ("Code postal et ville : 13001 Marseille", "Code postal et ville : [ADDRESS]"),
        ("97400 Saint-Denis, La Réunion", "[ADDRESS], La Réunion"),
    ],
)
def test_postal_addresses_are_masked_whole(text: str, expected: str) -> None:
    assert masked(text) == (expected, ("address",))


# --- written to slip past: invisible characters, look-alike digits and spaces -------------------

NIR = "2 55 08 14 168 025 38"
IBAN = "FR76 3000 6000 0112 3456 7890 189"
PHONE = "06 12 34 56 78"
EMAIL = "marie.curie@exemple.fr"
IDENTIFIERS = [(NIR, "[NIR]"), (IBAN, "[IBAN]"), (PHONE, "[PHONE]"), (EMAIL, "[EMAIL]")]
# format characters (Unicode category Cf): zero-width space, soft hyphen, word joiner,
# left-to-right mark, right-to-left override, zero-width no-break space (BOM)
INVISIBLE = ["\u200b", "\u00ad", "\u2060", "\u200e", "\u202e", "\ufeff"]


@pytest.mark.parametrize("invisible", INVISIBLE)
@pytest.mark.parametrize(("identifier", "token"), IDENTIFIERS)
def test_format_characters_inside_an_identifier_do_not_hide_it(
    identifier: str, token: str, invisible: str
) -> None:
    middle = len(identifier) // 2
    once = identifier[:middle] + invisible + identifier[middle:]
    everywhere = invisible.join(identifier)
    for written in (once, everywhere):
        assert masked(f"Voici : {written}, merci.") == (
            f"Voici : {token}, merci.",
            (token[1:-1].lower(),),
        )


def full_width(text: str) -> str:
    """Digits, letters and signs of the ASCII range written in their full-width forms."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


@pytest.mark.parametrize(("identifier", "token"), IDENTIFIERS)
def test_full_width_digits_letters_and_at_sign_are_read_as_ascii(
    identifier: str, token: str
) -> None:
    assert full_width("06") == "\uff10\uff16"
    assert masked(f"Voici : {full_width(identifier)}.") == (
        f"Voici : {token}.",
        (token[1:-1].lower(),),
    )
    assert masked("jean\uff20exemple.fr") == ("[EMAIL]", ("email",))  # only the at sign


# thin space, figure space, narrow no-break space, ideographic space, em space
SPACES = ["\u2009", "\u2007", "\u202f", "\u3000", "\u2003"]


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize(("identifier", "token"), IDENTIFIERS[:3])
def test_any_unicode_space_separates_groups(identifier: str, token: str, space: str) -> None:
    written = identifier.replace(" ", space)
    assert masked(f"Voici{space}: {written}.") == (f"Voici : {token}.", (token[1:-1].lower(),))


@pytest.mark.parametrize(
    "phone",
    [
        "06/12/34/56/78",
        "06-12 34 56 78",
        "06.12-34 56/78",
        "06 1234 5678",
        "0612 34 56 78",
        "06 12 34 5678",
        "06 20 12 34 56",
        "+33 612 345 678",
        "+33 6 1234 5678",
        "+33/6/12/34/56/78",
        "+33 06 12 34 56 78",
        "\u2068+33\u2069 6 12 34 56 78",  # bidirectional isolates around the country code
    ],
)
def test_phone_numbers_with_mixed_separators_and_groups_are_masked(phone: str) -> None:
    assert masked(f"Mon portable : {phone}.") == ("Mon portable : [PHONE].", ("phone",))


def test_a_phone_number_right_after_a_date_is_masked() -> None:
    # "01/02/2024 06" is ten digits, refused as a date: the number starting inside is found
    text = "Depuis le 01/02/2024 06 12 34 56 78 est mon numéro, et le 06/12/2024 10 h."
    assert masked(text) == (
        "Depuis le 01/02/2024 [PHONE] est mon numéro, et le 06/12/2024 10 h.",
        ("phone",),
    )


@pytest.mark.parametrize(
    "iban",
    [
        "FR76-3000-6000-0112-3456-7890-189",
        "FR76\u202f3000\u202f6000\u202f0112\u202f3456\u202f7890\u202f189",
    ],
)
def test_iban_with_dashes_or_narrow_spaces_is_masked(iban: str) -> None:
    assert masked(f"IBAN {iban} merci") == ("IBAN [IBAN] merci", ("iban",))


@pytest.mark.parametrize("address", ["o'brien@x.fr", "o’brien@x.fr", "a!b#c$d%e&f=g?h^i/j@x.fr"])
def test_apostrophes_and_other_signs_before_the_at_sign_are_masked(address: str) -> None:
    assert masked(f"Écrivez à {address} demain") == ("Écrivez à [EMAIL] demain", ("email",))


def test_the_text_returned_is_the_normalised_text_with_lines_and_accents_kept() -> None:
    # invisible characters go, every space becomes a plain space, compatibility forms their
    # plain letters; line breaks, tabs, accents and ordinary punctuation stay as written
    text = "Bonjour\u200b,\n\n\tl\u2019été\u00a0: « ça va » ?\r\nﬁn – 1\u202f250\u00a0€"
    assert mask_personal_data(text) == Masked(
        "Bonjour,\n\n\tl\u2019été : « ça va » ?\r\nfin – 1 250 €", ()
    )
    assert mask_personal_data("e\u0301te\u0301").text == "été"  # composed, as NFKC does
    # what is returned reads the same when checked again
    hostile = "Tél\u00a0: ０６\u200b12\u2009３４ 56 78, IBAN FR76\u202f3000 6000 0112 3456 7890 189"
    once = mask_personal_data(hostile)
    assert once.text == "Tél : [PHONE], IBAN [IBAN]" and once.kinds == ("iban", "phone")
    assert mask_personal_data(once.text) == Masked(once.text, ())


def test_normalising_leaves_no_format_character_nor_other_space_and_is_stable() -> None:
    """Every character Python knows, at once: what NFKC makes is never to be dropped again."""
    every = "".join(chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code < 0xE000)
    once = pii.normalised(every)
    left = {char for char in once if unicodedata.category(char) in ("Cf", "Zs")}
    assert left == {" "}
    assert pii.normalised(once) is once


# --- false positives: ordinary French numbers stay --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "La réunion est fixée au 12/05/2024 à 14h30, salle 204.",
        "Le 01.02.2024 et le 05 06 2024, rien n'a changé.",
        "Le budget est de 1 250 000 € (1 000 000 € l'an dernier), soit 12 345,67 € de plus.",
        "Voir l'article L. 121-1 du code de la consommation et l'article R. 4127-1.",
        "La loi n° 78-17 du 6 janvier 1978 et le décret n° 2019-1234 du 12 décembre 2019.",
        "Ma commande n° 2024-00123 (référence CMD-548721) est arrivée en 2023.",
        "SIRET 732 829 320 00074, TVA FR40 303 265 045.",
        "Il reste 1 place de parking et j'ai 2 cours de maths demain.",
        "En 1789, place de la Bastille, le peuple s'est soulevé.",
        "Ça coûte 15000 Euros, et plus de 20000 Français l'ont acheté.",
        "Version 2.0.1, build 4567, ticket 123456789012345, code 1850578006084.",
        "Il a couru 3 rues plus loin ; appelez le 15, le 17 ou le 112.",
        "Le hash de45a1b2c3d4e5f60718293a4b5c6d7e8f901234 est dans le journal.",
        "Score : 10-12, 08-09, en 1998 puis en 2018.",
        "Rendez-vous le 06/12/2024 à 12:30, ou le 06/12/2024 10 h, ou le 06-12-2024 12 h 30.",
        "Le 01.02.2024 15 h, le 05 06 2024 16h, de 12:30 à 14:00.",
        "Le 06/12/2024, à 12:30, 1 250 000 € selon l'article L. 121-1.",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert mask_personal_data(text) == Masked(text, ())


def test_ordinary_numbers_with_typographic_spaces_are_left_alone() -> None:
    text = "Le 06/12/2024\u202fà 12:30, 1\u202f250\u202f000\u00a0€ (article L.\u00a0121-1)."
    plain = "Le 06/12/2024 à 12:30, 1 250 000 € (article L. 121-1)."
    assert mask_personal_data(text) == Masked(plain, ())


# --- several kinds, overlaps, order -----------------------------------------------------------


def test_kinds_come_in_a_stable_order_each_once() -> None:
    text = (
        "Contact : marie@exemple.fr, 06 12 34 56 78 ou 01 23 45 67 89 ; "
        "IBAN FR76 3000 6000 0112 3456 7890 189 ; sécu 2 55 08 14 168 025 38 ; "
        "8 rue Victor Hugo 69002 Lyon ; marie2@exemple.fr"
    )
    out, kinds = masked(text)
    assert kinds == ("nir", "iban", "phone", "email", "address")
    assert out == (
        "Contact : [EMAIL], [PHONE] ou [PHONE] ; IBAN [IBAN] ; sécu [NIR] ; [ADDRESS] ; [EMAIL]"
    )


def test_overlapping_finds_give_one_mask() -> None:
    # a phone number inside an e-mail address: the e-mail starts first and wins
    assert masked("0612345678@exemple.fr") == ("[EMAIL]", ("email",))
    assert masked("jean.0612345678@exemple.fr") == ("[EMAIL]", ("email",))
    # a NIR holds no phone number that would be masked on its own
    assert masked("2 55 08 14 168 025 38") == ("[NIR]", ("nir",))


def test_text_without_identifiers_comes_back_unchanged() -> None:
    assert mask_personal_data("") == Masked("", ())
    text = "Bonjour, comment déclarer mes revenus ?"
    result = mask_personal_data(text)
    assert result.text is text and result.kinds == ()


# --- hostile texts ------------------------------------------------------------------------------

SIZE = 65_536


def fill(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


HOSTILE = [
    "1" * SIZE,
    "0" * SIZE,
    fill("0 "),
    fill("06 12 34 56 7"),
    fill("+33 (0)6 12 "),
    fill("1 85 05 78 006 0"),
    fill("ab12 "),
    fill("FR76 3000 "),
    fill("FR76"),
    fill("a@"),
    fill("a."),
    "a" * SIZE,
    "a@" + "b-" * (SIZE // 2),
    fill("12 rue "),
    fill("1 rue de la "),
    "12 rue " + "A" * SIZE,
    "12 rue d'" + "'" * SIZE,
    fill("75007 "),
    fill("75007 Paris-"),
    "75007 " + "P" * SIZE,
    fill("1 bis "),
    fill("\u200b"),
    fill("0\u00ad6"),
    fill("０６ "),
    fill("06/12/2024 10 "),
    fill("01/02/2024 06 1"),
    fill("+33 06 12 34 "),
    fill("o'"),
    fill("a'b@"),
    fill("FR76-3000-"),
    # NFKC writes U+FDFA out in 18 letters (the most it expands): as long as the others once
    # normalised
    "\ufdfa" * (SIZE // 18),
    "".join(map(chr, range(0x10000, 0x10000 + SIZE))),  # as many distinct characters as can be
]
BENIGN = fill(
    "Bonjour, je voudrais savoir comment déclarer mes revenus de 2024 avant le 12/05/2024, "
    "pour un montant de 1 250 000 €, selon l'article L. 121-1 du code. "
)


def test_expressions_cannot_backtrack_catastrophically() -> None:
    expressions = [value for value in vars(pii).values() if isinstance(value, re.Pattern)]
    assert len(expressions) >= 8
    for expression in expressions:
        assert _nested_repeats(expression) == [], expression.pattern


def _best_of_three(text: str) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        mask_personal_data(text)
        timings.append(time.perf_counter() - started)
    return min(timings)


def test_hostile_texts_take_about_as_long_as_ordinary_ones() -> None:
    """Relative, not absolute: a quadratic scan of 65 kB takes thousands of times longer than a
    linear one; these stay within a small factor of an ordinary text of the same size."""
    benign = _best_of_three(BENIGN)
    slow = {text[:20]: _best_of_three(text) / benign for text in HOSTILE}
    assert max(slow.values()) < 25, slow
