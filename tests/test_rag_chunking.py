"""Passages follow the document's structure: whole paragraphs packed within a section and a
page, long paragraphs cut at sentence ends with overlap, nothing empty, nothing over size."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from bot.rag.chunking import overlap_tail, split_passages
from bot.rag.documents import Block, Passage

SENTENCES = [
    "La demande de logement social se fait en ligne ou au guichet de la mairie.",
    "Le dossier comprend une pièce d'identité et les deux derniers avis d'imposition.",
    "Un numéro unique d'enregistrement est attribué dans le mois qui suit.",
    "La demande doit être renouvelée chaque année, à la date anniversaire.",
    "Sans renouvellement, elle est radiée et l'ancienneté est perdue.",
    "La commission d'attribution examine au moins trois candidatures par logement.",
]


def passages(blocks: list[Block], target: int = 300, overlap: int = 60) -> list[Passage]:
    return list(split_passages(blocks, target, overlap))


def long_paragraph(sentences: int = 40) -> str:
    return " ".join(
        f"{SENTENCES[index % len(SENTENCES)][:-1]} ({index})." for index in range(sentences)
    )


def test_whole_paragraphs_are_packed_up_to_the_target() -> None:
    blocks = [Block(text, section="Logement") for text in SENTENCES]
    found = passages(blocks, target=200)
    assert [p.text for p in found] == [
        f"{SENTENCES[0]} {SENTENCES[1]}",
        f"{SENTENCES[2]} {SENTENCES[3]}",
        f"{SENTENCES[4]} {SENTENCES[5]}",
    ]
    assert all(p.section == "Logement" for p in found)
    assert [p.ordinal for p in found] == [0, 1, 2]


def test_no_passage_crosses_sections_or_pages() -> None:
    blocks = [
        Block("Premier.", page=1, section="A"),
        Block("Deuxième.", page=1, section="A"),
        Block("Troisième.", page=1, section="B"),
        Block("Quatrième.", page=2, section="B"),
        Block("Cinquième.", page=2, section="B"),
        Block("Sixième.", page=2, section=None),
    ]
    found = passages(blocks)
    assert [(p.text, p.page, p.section) for p in found] == [
        ("Premier. Deuxième.", 1, "A"),
        ("Troisième.", 1, "B"),
        ("Quatrième. Cinquième.", 2, "B"),
        ("Sixième.", 2, None),
    ]


def test_a_long_paragraph_is_cut_at_sentence_ends_with_overlap() -> None:
    paragraph = long_paragraph()
    found = passages([Block(paragraph, page=4, section="Demande")], target=300, overlap=80)
    assert len(found) > 5
    for previous, current in itertools.pairwise(found):
        assert len(current.text) <= 300
        shared = _shared_edge(previous.text, current.text)
        assert 20 <= shared <= 80, (previous.text, current.text)
    # cut at sentence ends: every piece ends a sentence (the sentences are shorter than the gap)
    assert all(p.text.endswith(").") for p in found)
    assert all((p.page, p.section) == (4, "Demande") for p in found)
    # nothing lost: every numbered sentence is in some passage
    assert {f"({index})" for index in range(40)} <= set(
        re.findall(r"\(\d+\)", " ".join(p.text for p in found))
    )


def _shared_edge(previous: str, current: str) -> int:
    """Length of the longest end of `previous` that `current` starts with."""
    for size in range(min(len(previous), len(current)), 0, -1):
        if current.startswith(previous[-size:]):
            return size
    return 0


def test_no_overlap_between_whole_paragraphs() -> None:
    found = passages([Block(text) for text in SENTENCES], target=160, overlap=80)
    assert all(_shared_edge(a.text, b.text) == 0 for a, b in itertools.pairwise(found))


def test_an_endless_sentence_is_cut_at_spaces_and_an_endless_word_anywhere() -> None:
    words = " ".join(f"mot{index}" for index in range(400))
    found = passages([Block(words)], target=200, overlap=40)
    assert all(len(p.text) <= 200 for p in found)
    assert all(not p.text.startswith(" ") and re.fullmatch(r"(mot\d+ ?)+", p.text) for p in found)
    token = "x" * 1000
    cut = passages([Block(token)], target=200, overlap=40)
    assert all(len(p.text) <= 200 for p in cut)
    assert sum(len(p.text) for p in cut) >= 1000


def test_whitespace_normalised_and_empty_or_punctuation_dropped() -> None:
    blocks = [
        Block("  \n\t "),
        Block("— … !!! ..."),
        Block("Un\u00a0texte\n  avec\tdes   blancs\u200b.\x00"),
        Block("Premier paragraphe.\n\n\nSecond paragraphe."),
    ]
    found = list(split_passages(blocks, 30, 5, first_ordinal=7))
    assert [(p.ordinal, p.text) for p in found] == [
        (7, "Un texte avec des blancs."),
        (8, "Premier paragraphe."),
        (9, "Second paragraphe."),
    ]


def test_the_section_title_is_not_prepended() -> None:
    found = passages([Block("Le corps du texte.", section="Titre de section")])
    assert found == [Passage(0, "Le corps du texte.", None, "Titre de section")]


def test_overlap_tail_starts_at_a_word_or_sentence() -> None:
    text = "Une phrase entière. Puis une autre phrase qui continue longtemps"
    assert overlap_tail(text, 50) == "Puis une autre phrase qui continue longtemps"
    assert overlap_tail(text, 20) == "continue longtemps"
    assert overlap_tail(text, 0) == ""
    assert overlap_tail("court", 50) == "court"


@pytest.mark.parametrize("seed", range(30))
def test_random_text_keeps_every_word_in_bounded_passages(seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = [
        "é",
        "allocation",
        "l'aide",
        "CAF",
        "12,5",
        "—",
        "?",
        "!",
        ".",
        "https://a.fr/" + "x" * 50,
    ]
    blocks = []
    for _ in range(rng.randint(1, 30)):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 400))]
        separators = [rng.choice([" ", " ", "\n", "\n\n", ". ", "\t"]) for _ in words]
        text = "".join(w + s for w, s in zip(words, separators, strict=True))
        blocks.append(
            Block(text, page=rng.choice([None, 1, 2]), section=rng.choice([None, "A", "B"]))
        )
    target, overlap = rng.randint(40, 400), rng.randint(0, 200)
    found = list(split_passages(blocks, target, overlap, first_ordinal=3))
    assert [p.ordinal for p in found] == list(range(3, 3 + len(found)))
    assert all(0 < len(p.text) <= target and p.text == p.text.strip() for p in found)
    assert all(any(char.isalnum() for char in p.text) for p in found)
    assert all("  " not in p.text and "\n" not in p.text for p in found)
    written = " ".join(p.text for p in found)
    for block in blocks:
        for word in block.text.split():
            if any(char.isalnum() for char in word) and len(word) <= target // 2:
                assert word in written
