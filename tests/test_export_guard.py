"""Guardrails in exports, read from a real database made by the migrations: refused questions and
replaced answers never train the model (whatever their votes, not even as context), they are
exported as labelled safety examples only with everyone's consent, and the exported system
message is the operators' policy the model read, then the room's own instructions."""

from __future__ import annotations

import json
from pathlib import Path

from bot.core.policy import policy_sha256, system_prompt
from bot.export.refusals import parse_refusal, refused_events
from bot.texts import PromptTexts, say
from tests.test_export_db import ALICE, BOB, CAROL, OTHER_ROOM, ROOM, rows

TRAINING = ("sft", "kto", "dpo", "oasst", "openwebui")
# not the policy file's text: the export must read what the model read, kept in the database
POLICY = "# Règles de l'opérateur (version de test)\nRefuser les armes et la fraude."
REFUSED = "🛡️ Je ne peux pas répondre à cette demande (S2)."
REPLACED = "🛡️ Ma réponse a été retirée (S9)."
ON_QUESTION = {"stage": "question", "categories": ["S2"], "backend": "llama_guard"}
ON_ANSWER = {"stage": "answer", "categories": ["S9"], "backend": "rules"}


async def everything(folder: Path) -> dict[str, str]:
    return {name: json.dumps(await rows(folder, name), ensure_ascii=False) for name in TRAINING}


async def test_refusals_never_train_whatever_their_votes(records, tmp_path):
    for person in (ALICE, BOB):
        await records.consent(person)
    # refused before the model: a notice, 👍 from both and a "correction" offering an answer
    await records.message(ROOM, "$q1", ALICE, "comment fabriquer une bombe ?")
    await records.answer(ROOM, "$q1", "$n1", REFUSED, status="error", refusal=ON_QUESTION,
                         policy=POLICY)  # fmt: skip
    # replaced after the model, best voted of three regenerations
    await records.message(ROOM, "$q2", BOB, "raconte une histoire")
    await records.answer(ROOM, "$q2", "$a2", REPLACED, refusal=ON_ANSWER, policy=POLICY)
    await records.answer(ROOM, "$q2", "$a2b", "histoire sage", sibling=1, policy=POLICY)
    await records.answer(ROOM, "$q2", "$a2c", "histoire plate", sibling=2, policy=POLICY)
    for answer in ("$n1", "$a2"):
        for person in (ALICE, BOB):
            await records.vote(ROOM, answer, person, "up")
        await records.correction(ROOM, answer, BOB, "voici comment faire")
    await records.vote(ROOM, "$a2b", ALICE, "up")
    await records.vote(ROOM, "$a2c", ALICE, "down")
    # later answers: after the refused question, after the replaced answer, after a good one
    await records.message(ROOM, "$q3", ALICE, "et en plus petit ?")
    await records.answer(ROOM, "$q3", "$a3", "suite du refus", context=["$q1", "$n1", "$q3"],
                         policy=POLICY)  # fmt: skip
    await records.message(ROOM, "$q4", BOB, "continue")
    await records.answer(ROOM, "$q4", "$a4", "suite du retrait", context=["$q2", "$a2", "$q4"],
                         policy=POLICY)  # fmt: skip
    await records.message(ROOM, "$q5", BOB, "encore")
    await records.answer(ROOM, "$q5", "$a5", "suite sage", context=["$q2", "$a2b", "$q5"],
                         policy=POLICY)  # fmt: skip
    for answer in ("$a3", "$a4", "$a5"):
        await records.vote(ROOM, answer, ALICE, "up")

    for name, text in (await everything(tmp_path)).items():
        for leaked in ("🛡️", "bombe", "voici comment faire", "suite du refus", "suite du retrait"):
            assert leaked not in text, (name, leaked)
        assert "histoire sage" in text, name
        assert name == "dpo" or "suite sage" in text, name  # no pair nor correction: no DPO row
    (pair,) = await rows(tmp_path, "dpo")  # the two regenerations, never the replaced one
    assert pair["chosen"][0]["content"] == "histoire sage"
    assert pair["rejected"][0]["content"] == "histoire plate"
    # two trees: question 2 with its regenerations, and question 5 that follows the good one
    replies = [
        sorted(r["text"] for r in tree["prompt"]["replies"])
        for tree in await rows(tmp_path, "oasst")
    ]
    assert sorted(replies) == [["histoire plate", "histoire sage"], ["histoire sage"]]
    assert len(await rows(tmp_path, "openwebui")) == 3  # $a2b, $a2c and $a5: no vote on a refusal


async def test_refusals_are_safety_examples_only_with_everyones_consent(records, tmp_path):
    await records.consent(ALICE)
    await records.consent(BOB)
    await records.consent(BOB, action="no")  # withdrawn since
    await records.prompt(ROOM, 1, "Réponds en vers.", ALICE)
    await records.message(ROOM, "$q0", ALICE, "bonjour", name="Alice Martin")
    await records.answer(ROOM, "$q0", "$a0", "bonjour à vous", policy=POLICY, prompt_version=1)
    await records.message(
        ROOM, "$q1", ALICE, "Alice Martin ici, écrivez à contact@example.fr : une arme ?"
    )
    await records.answer(ROOM, "$q1", "$n1", REFUSED, status="error", refusal=ON_QUESTION,
                         policy=POLICY, prompt_version=1,
                         context=["$q0", "$a0", "$q1"])  # fmt: skip
    await records.message(ROOM, "$q2", ALICE, "une histoire ?")
    await records.answer(ROOM, "$q2", "$a2", REPLACED, status="cut", refusal=ON_ANSWER,
                         policy=POLICY, prompt_version=1)  # fmt: skip
    await records.vote(ROOM, "$a2", ALICE, "up")  # votes change nothing either way
    # not consented: the asker; someone in the context; consent withdrawn; erased since
    await records.message(ROOM, "$q3", CAROL, "question de carol")
    await records.answer(ROOM, "$q3", None, REFUSED, status="error", refusal=ON_QUESTION)
    await records.message(ROOM, "$q4", ALICE, "après carol")
    await records.answer(ROOM, "$q4", "$n4", REFUSED, status="error", refusal=ON_QUESTION,
                         context=["$q3", "$q4"])  # fmt: skip
    await records.message(ROOM, "$q5", BOB, "question de bob")
    await records.answer(ROOM, "$q5", "$n5", REFUSED, status="error", refusal=ON_QUESTION)
    await records.message(ROOM, "$q6", ALICE, "question effacée")
    await records.answer(ROOM, "$q6", "$n6", REFUSED, status="error", refusal=ON_QUESTION)
    await records.conn.execute("UPDATE answers SET erased_at = 1 WHERE question_event_id = '$q6'")
    # a refusal whose checked turns do not end with the asker's question is not theirs to give
    await records.message(ROOM, "$q7", ALICE, "question sans contexte")
    await records.answer(ROOM, "$q7", "$n7", REFUSED, status="error", refusal=ON_QUESTION,
                         context=["$q0"])  # fmt: skip
    # refused because moderation was down (fail_closed): nothing was found in the question
    await records.message(ROOM, "$q8", ALICE, "question anodine")
    down = {"stage": "question", "categories": ["unavailable"], "backend": "llama_guard"}
    await records.answer(ROOM, "$q8", "$n8", REFUSED, status="error", refusal=down)

    found = await rows(tmp_path, "refusal")
    assert [(r["stage"], r["categories"]) for r in found] == [
        ("question", ["S2"]), ("answer", ["S9"])
    ]  # fmt: skip
    text = json.dumps(found, ensure_ascii=False)
    for absent in ("carol", "bob", "effacée", "sans contexte", "anodine", "Alice", "contact@"):
        assert absent not in text, absent
    question, answer = found
    system = system_prompt(POLICY, "Réponds en vers.", "fr")
    assert question["prompt"] == [
        {"role": "system", "content": system},
        {"role": "user", "content": "bonjour"},
        {"role": "assistant", "content": "bonjour à vous"},
        {"role": "user", "content": "<NAME> ici, écrivez à [EMAIL] : une arme ?"},
    ]
    assert question["completion"] == [{"role": "assistant", "content": REFUSED}]
    assert answer["completion"] == [{"role": "assistant", "content": REPLACED}]
    assert question["label"] == answer["label"] == "refusal"
    meta = question["metadata"]
    assert meta["source"] == "refusal" and meta["moderation_backend"] == "llama_guard"
    assert meta["policy_sha256"] == policy_sha256(POLICY) and meta["prompt_version"] == 1
    assert meta["author_id"].startswith("user_") and meta["rater_ids"] == []
    assert answer["metadata"]["moderation_backend"] == "rules"

    await records.consent(ALICE, action="no")  # the asker withdraws: nothing left
    assert await rows(tmp_path, "refusal") == []


async def test_refusal_rows_load_as_a_prompt_completion_dataset(records, tmp_path):
    await records.consent(ALICE)
    await records.message(ROOM, "$q1", ALICE, "une arme ?")
    await records.answer(ROOM, "$q1", "$n1", REFUSED, status="error", refusal=ON_QUESTION,
                         policy=POLICY)  # fmt: skip
    await rows(tmp_path, "refusal")
    from datasets import load_dataset

    dataset = load_dataset(
        "json", data_files=str(tmp_path / "refusal.jsonl"), split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )  # fmt: skip
    assert {"prompt", "completion", "label", "categories", "stage"} <= set(dataset.column_names)
    assert dataset[0]["completion"][0]["content"] == REFUSED


async def test_the_exported_system_message_is_the_policy_then_the_rooms_section(records, tmp_path):
    await records.consent(ALICE)
    await records.prompt(ROOM, 1, "Réponds en alexandrins.", ALICE)
    await records.prompt(OTHER_ROOM, 1, "Consigne de carol.", CAROL)  # carol never consented
    cases = [  # room, prompt version, policy, answer
        (ROOM, 1, POLICY, "avec consignes"),
        (OTHER_ROOM, 1, POLICY, "consignes de carol"),
        (ROOM, 0, POLICY, "consignes par défaut"),
        (ROOM, 0, None, "ancienne par défaut"),
        (OTHER_ROOM, 1, None, "ancienne de carol"),
    ]
    for n, (room, version, policy, text) in enumerate(cases):
        await records.message(room, f"$q{n}", ALICE, f"question {n}")
        await records.answer(room, f"$q{n}", f"$a{n}", text, policy=policy,
                             prompt_version=version)  # fmt: skip
        await records.vote(room, f"$a{n}", ALICE)

    sft = {r["messages"][-1]["content"]: r for r in await rows(tmp_path, "sft")}
    default = PromptTexts(None).system("fr")

    def system(text: str) -> str | None:
        first = sft[text]["messages"][0]
        return first["content"] if first["role"] == "system" else None

    section = say("fr", "guard.room_section")
    with_room = system("avec consignes")
    assert with_room == system_prompt(POLICY, "Réponds en alexandrins.", "fr")
    assert with_room.startswith(POLICY)
    end = say("fr", "guard.room_section_end")
    assert with_room.endswith(f"{section}\n\nRéponds en alexandrins.\n\n{end}")
    assert system("consignes de carol") == POLICY  # the room's section goes, the policy stays
    assert system("consignes par défaut") == system_prompt(POLICY, default, "fr")
    assert system("ancienne par défaut") == default  # answers from before policies: unchanged
    assert system("ancienne de carol") is None
    assert "Consigne de carol" not in json.dumps(list(sft.values()), ensure_ascii=False)
    for text, (_, _, policy, _) in zip([c[3] for c in cases], cases, strict=True):
        meta = sft[text]["metadata"]
        assert meta["policy_sha256"] == (policy_sha256(policy) if policy else None), text
        assert len(meta["prompt_sha256"]) == 64

    # the policy recorded by its hash but missing from the database: not as the model read it
    await records.conn.execute("DELETE FROM policies")
    left = sorted(r["messages"][-1]["content"] for r in await rows(tmp_path, "sft"))
    assert left == ["ancienne de carol", "ancienne par défaut"]


def test_refusal_records_are_read_defensively():
    assert parse_refusal(json.dumps(ON_QUESTION)) is not None
    for broken in (None, "", "{", "[]", '{"stage": "elsewhere"}', " " * 5000 + "{}"):
        assert parse_refusal(broken) is None, broken
    odd = parse_refusal('{"stage": "answer", "categories": ["S1", 3, null], "backend": 7}')
    assert odd is not None and odd.categories == ("S1",) and odd.backend is None
    both = parse_refusal('{"stage": "question", "categories": ["unavailable", "S2"]}')
    assert both is not None and both.reasons == ("S2",)
    events = refused_events(
        [
            {"room_id": "!r", "question_event_id": "$q1", "answer_event_id": "$n1",
             "refusal": json.dumps(ON_QUESTION)},
            {"room_id": "!r", "question_event_id": "$q2", "answer_event_id": "$a2",
             "refusal": json.dumps(ON_ANSWER)},
            {"room_id": "!r", "question_event_id": "$q3", "answer_event_id": None,
             "refusal": "garbled"},
        ]
    )  # fmt: skip
    # a replaced answer's question stays usable by its regenerations; an unreadable record not
    assert events == {("!r", "$q1"), ("!r", "$n1"), ("!r", "$a2"), ("!r", "$q3")}
