"""Pseudonyms, scrubbing and name masking: what keeps people out of exported rows."""

from __future__ import annotations

from bot.export.privacy import NameMask, Pseudonyms, scrub


def test_pseudonyms_are_stable_keyed_and_kind_separated():
    one, other = Pseudonyms("secret-a"), Pseudonyms("secret-b")
    assert one.of("user", "@alice:x") == Pseudonyms("secret-a").of("user", "@alice:x")
    assert one.of("user", "@alice:x") != other.of("user", "@alice:x")
    assert one.of("user", "@alice:x") != one.of("msg", "@alice:x")
    assert "alice" not in one.of("user", "@alice:x")
    assert one.of("user", "@alice:x").startswith("user_")


def test_scrub_replaces_contacts_ids_and_links_but_keeps_ordinary_numbers():
    text = (
        "Écrivez à marie.curie@example.fr ou au 06 12 34 56 78 (+33 1 23 45 67 89), "
        "@marie:agent.tchap.gouv.fr, https://exemple.fr/a?b=c et www.exemple.org. "
        "Il y a 8 pattes et 2026 ans, 3,14."
    )
    cleaned = scrub(text)
    for leaked in ("marie", "06 12", "+33", "exemple", "tchap"):
        assert leaked not in cleaned, leaked
    assert cleaned.count("<PHONE>") == 2 and "<EMAIL>" in cleaned
    assert "<MATRIX_ID>" in cleaned and cleaned.count("<URL>") == 2
    assert "8 pattes et 2026 ans, 3,14." in cleaned


def test_names_are_masked_as_whole_words_only():
    mask = NameMask({"Alice Martin", "alice3", "Al"})
    assert mask("Bonjour Alice Martin, dit ALICE3.") == "Bonjour <NAME>, dit <NAME>."
    assert mask("Alicegate et Al") == "Alicegate et Al"  # too short names are left alone
    assert NameMask(set())("rien") == "rien"
    assert mask("İstanbul, Alice Martin !") == "İstanbul, <NAME> !"  # offsets stay aligned
