"""Rows in the shapes trainers load: TRL's SFT, KTO and DPO, OpenAssistant trees, Open WebUI,
and refusals as labelled safety examples (TRL's conversational prompt-completion)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations, pairwise
from typing import Any

from bot.core.context import Turn as ModelTurn
from bot.core.context import to_messages
from bot.export.privacy import NameMask, Pseudonyms, scrub, sha256
from bot.export.source import Answer, ExportSource
from bot.guard.pii import mask_personal_data
from bot.rag.citations import with_sources

# formats read from the refusals the bot showed, never from its answers (and the reverse)
REFUSAL_FORMATS = frozenset({"refusal"})
Row = dict[str, Any]


@dataclass
class RowMaker:
    ids: Pseudonyms
    source: ExportSource
    licence: str
    scrub_texts: bool
    collection: str
    names: NameMask

    def text(self, value: str) -> str:
        # identifiers are masked before storage; masked again here for rows stored before that
        # (or while guard.mask_personal_data was off), whatever data.scrub says
        value = self.names(mask_personal_data(value).text)
        return scrub(value) if self.scrub_texts else value

    def prompt(self, answer: Answer) -> list[dict[str, str]]:
        """The messages the model read, built as answering built them (speakers named in group
        rooms, same roles merged), then masked and scrubbed."""
        system = next((t.text for t in answer.context if t.role == "system"), None)
        turns = [ModelTurn(t.role, t.text, t.speaker) for t in answer.context if t.role != "system"]
        messages = to_messages(system, turns, answer.speakers_named)
        if answer.sources_block is not None:
            last = messages[-1]
            content = with_sources(last["content"], answer.sources_block, answer.lang)
            messages[-1] = {"role": last["role"], "content": content}
        return [{"role": m["role"], "content": self.text(m["content"])} for m in messages]

    def assistant(self, text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": self.text(text)}]

    def conversation_id(self, answer: Answer) -> str:
        first = next((t.event_id for t in answer.context if t.event_id), answer.question_event_id)
        return self.ids.of("conv", f"{answer.room_id}\x00{first}")

    def metadata(self, answer: Answer, source: str, raters: list[str]) -> Row:
        people = {t.sender for t in answer.context if t.role == "user" and t.sender} | set(raters)
        versions = [self.source.notice_versions.get(p) for p in people]
        return {
            "conversation_id": self.conversation_id(answer),
            "message_id": self.ids.of("msg", answer.event_id),
            "author_id": self.ids.of("user", answer.author) if answer.author else None,
            "rater_ids": sorted({self.ids.of("user", r) for r in raters}),
            "language": answer.lang,
            "model": answer.model,
            "prompt_version": answer.prompt_version,
            "prompt_sha256": sha256(answer.prompt_text),
            "policy_sha256": answer.policy_sha256,
            "sampling": answer.sampling,
            "source": source,
            "grounding": GROUNDING[answer.grounded],
            "consent": {
                "scope": self.collection,
                "notice_versions": sorted({v for v in versions if v is not None}),
            },
            "licence": self.licence,
            "created_at": _iso(answer.finished_at),
        }


# how an answer stood to the room's documents, for trainers to tell grounded rows apart
GROUNDING = {None: "none", 0: "not_covered", 1: "documents"}


def sft(maker: RowMaker, group: list[Answer]) -> Iterator[Row]:
    for answer in group:
        if answer.score > 0:
            raters = [v["sender"] for v in answer.votes]
            yield {
                "messages": maker.prompt(answer) + maker.assistant(answer.text),
                "metadata": maker.metadata(answer, "vote", raters),
            }
        for correction in answer.corrections:
            yield {
                "messages": maker.prompt(answer) + maker.assistant(correction["text"]),
                "metadata": maker.metadata(answer, "correction", [correction["sender"]]),
            }


def kto(maker: RowMaker, group: list[Answer]) -> Iterator[Row]:
    for answer in group:
        if answer.votes and answer.score != 0:
            yield {
                "prompt": maker.prompt(answer),
                "completion": maker.assistant(answer.text),
                "label": answer.score > 0,
                "metadata": maker.metadata(answer, "vote", [v["sender"] for v in answer.votes]),
            }


def dpo(maker: RowMaker, group: list[Answer]) -> Iterator[Row]:
    for answer in group:
        for correction in answer.corrections:
            yield {
                "prompt": maker.prompt(answer),
                "chosen": maker.assistant(correction["text"]),
                "rejected": maker.assistant(answer.text),
                "metadata": maker.metadata(answer, "correction", [correction["sender"]]),
            }
    voted = [a for a in group if a.votes]
    for first, second in combinations(voted, 2):
        if first.score == second.score:
            continue
        chosen, rejected = (first, second) if first.score > second.score else (second, first)
        raters = [v["sender"] for v in chosen.votes + rejected.votes]
        yield {
            "prompt": maker.prompt(chosen),
            "chosen": maker.assistant(chosen.text),
            "rejected": maker.assistant(rejected.text),
            "metadata": maker.metadata(chosen, "regeneration", raters),
        }


def oasst(maker: RowMaker, group: list[Answer]) -> Iterator[Row]:
    """One message tree per question: the context as a chain, the answers (regenerations and
    human corrections) as ranked replies of the question."""
    base = group[0]
    turns = [t for t in base.context if t.role != "system"]
    nodes: list[Row] = []
    for turn in turns:
        nodes.append(
            _node(
                maker,
                maker.ids.of("msg", turn.event_id or ""),
                turn.text,
                turn.sender,
                "prompter" if turn.role == "user" else "assistant",
                base.lang,
                synthetic=turn.role == "assistant",
                model=base.model if turn.role != "user" else None,
            )
        )
    replies: list[tuple[int, Row]] = []
    for answer in group:
        node = _node(
            maker,
            maker.ids.of("msg", answer.event_id),
            answer.text,
            None,
            "assistant",
            answer.lang,
            synthetic=True,
            model=answer.model,
            answer=answer,
        )
        replies.append((answer.score, node))
        for correction in answer.corrections:
            human = _node(
                maker,
                maker.ids.of("msg", correction["event_id"]),
                correction["text"],
                correction["sender"],
                "assistant",
                answer.lang,
                synthetic=False,
                model=None,
            )
            replies.append((answer.score + 1, human))  # a correction beats what it corrects
    ordered = sorted(replies, key=lambda pair: -pair[0])
    for rank, (_, node) in enumerate(ordered):
        node["rank"] = rank if len(ordered) > 1 else None
    for parent, child in pairwise(nodes):
        child["parent_id"] = parent["message_id"]
        parent["replies"].append(child)
    for _, node in ordered:
        node["parent_id"] = nodes[-1]["message_id"]
        nodes[-1]["replies"].append(node)
    yield {
        "message_tree_id": nodes[0]["message_id"],
        "tree_state": "ready_for_export",
        "prompt": nodes[0],
        "metadata": maker.metadata(base, "vote", [v["sender"] for a in group for v in a.votes]),
    }


def _node(
    maker: RowMaker,
    message_id: str,
    text: str,
    sender: str | None,
    role: str,
    lang: str,
    synthetic: bool,
    model: str | None,
    answer: Answer | None = None,
) -> Row:
    votes = answer.votes if answer else []
    labels: dict[str, dict[str, float | int]] = {}
    if answer:
        raters = max(1, len({v["sender"] for v in answer.labels}))
        for label in {item["label"] for item in answer.labels}:
            count = sum(1 for item in answer.labels if item["label"] == label)
            labels[label] = {"value": round(count / raters, 3), "count": count}
    ups = sum(1 for v in votes if v["vote"] == "up")
    downs = len(votes) - ups
    return {
        "message_id": message_id,
        "parent_id": None,
        "user_id": maker.ids.of("user", sender) if sender else None,
        "text": maker.text(text),
        "role": role,
        "lang": lang,
        "review_count": len(votes),
        "rank": None,
        "synthetic": synthetic,
        "model_name": model,
        "labels": labels,
        "emojis": [
            e for e in ({"name": "+1", "count": ups}, {"name": "-1", "count": downs}) if e["count"]
        ],
        "replies": [],
    }


def openwebui(maker: RowMaker, group: list[Answer]) -> Iterator[Row]:
    """Open WebUI's feedback records: one rating per vote, with a snapshot of the chat."""
    for answer in group:
        chat = maker.prompt(answer) + maker.assistant(answer.text)
        for vote in answer.votes:
            rater = vote["sender"]
            tags = sorted({item["label"] for item in answer.labels if item["sender"] == rater})
            comment = next((c["text"] for c in answer.corrections if c["sender"] == rater), "")
            seconds = vote["ts"] // 1000
            yield {
                "id": maker.ids.of("feedback", vote["reaction_event_id"]),
                "user_id": maker.ids.of("user", rater),
                "version": 0,
                "type": "rating",
                "data": {
                    "rating": 1 if vote["vote"] == "up" else -1,
                    "model_id": answer.model,
                    "reason": ", ".join(tags),
                    "comment": maker.text(comment),
                    "tags": tags,
                },
                "meta": {
                    "chat_id": maker.conversation_id(answer),
                    "message_id": maker.ids.of("msg", answer.event_id),
                    "source": vote["source"],
                },
                "snapshot": {"chat": {"messages": chat}},
                "created_at": seconds,
                "updated_at": seconds,
                "metadata": maker.metadata(answer, vote["source"], [rater]),
            }


def refusal(maker: RowMaker, group: list[Answer]) -> Iterator[Row]:
    """One labelled safety example per refusal: the conversation checked (the system prompt as
    composed, ending with the question) and the refusal the person was shown, never the text
    that was flagged (it is not kept). Shaped as TRL's conversational prompt-completion, so
    that a trainer mixes them into SFT on purpose, not by accident."""
    for answer in group:
        if answer.refusal is None:
            continue
        metadata = maker.metadata(answer, "refusal", [])
        metadata["moderation_backend"] = answer.refusal.backend
        yield {
            "prompt": maker.prompt(answer),
            "completion": maker.assistant(answer.text),
            "label": "refusal",
            "categories": list(answer.refusal.reasons),
            "stage": answer.refusal.stage,
            "metadata": metadata,
        }


BUILDERS: dict[str, Callable[[RowMaker, list[Answer]], Iterator[Row]]] = {
    "sft": sft,
    "kto": kto,
    "dpo": dpo,
    "oasst": oasst,
    "openwebui": openwebui,
    "refusal": refusal,
}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
