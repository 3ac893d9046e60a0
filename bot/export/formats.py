"""Rows in the shapes trainers load: TRL's SFT, KTO and DPO, OpenAssistant trees, Open WebUI,
and refusals as labelled safety examples (TRL's conversational prompt-completion)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations, pairwise
from typing import Any

from bot.core.context import Turn as ModelTurn
from bot.core.context import to_messages
from bot.export.privacy import NameMask, Pseudonyms, TextMemo, scrub, sha256
from bot.export.source import Answer, ExportSource, Wanted
from bot.guard.pii import mask_personal_data
from bot.rag.citations import with_sources

# formats read from the refusals the bot showed, never from its answers (and the reverse)
REFUSAL_FORMATS = frozenset({"refusal"})
Row = dict[str, Any]


# characters of raw and masked texts remembered: the system prompts, and the turns shared by the
# answers of a question and by the rows made from each answer
MEMO_CHARACTERS = 500_000


@dataclass
class RowMaker:
    ids: Pseudonyms
    source: ExportSource
    licence: str
    scrub_texts: bool
    collection: str
    names: NameMask
    _memo: TextMemo = field(default_factory=lambda: TextMemo(MEMO_CHARACTERS), init=False)
    _last: tuple[Answer, _Facts] | None = field(default=None, init=False)
    _prompt_hashes: dict[str, str] = field(default_factory=dict, init=False)

    def text(self, value: str) -> str:
        # the same texts come back (the system prompt in every row, a conversation's turns in
        # each of its answers' rows): masking is a pure function of the text, so it is done once
        masked = self._memo.get(value)
        if masked is None:
            masked = self._mask(value)
            self._memo.put(value, masked)
        return masked

    def _mask(self, value: str) -> str:
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
        return self._facts(answer).conversation_id

    def metadata(self, answer: Answer, source: str, raters: list[str]) -> Row:
        facts = self._facts(answer)
        people = facts.users | set(raters)
        versions = [self.source.notice_versions.get(p) for p in people]
        return {
            "conversation_id": facts.conversation_id,
            "message_id": facts.message_id,
            "author_id": facts.author_id,
            "rater_ids": sorted({self.ids.of("user", r) for r in raters}),
            "language": answer.lang,
            "model": answer.model,
            "prompt_version": answer.prompt_version,
            "prompt_sha256": facts.prompt_sha256,
            "policy_sha256": answer.policy_sha256,
            "sampling": answer.sampling,
            "source": source,
            "grounding": GROUNDING[answer.grounded],
            "consent": {
                "scope": self.collection,
                "notice_versions": sorted({v for v in versions if v is not None}),
            },
            "licence": self.licence,
            "created_at": facts.created_at,
        }

    def _facts(self, answer: Answer) -> _Facts:
        """What every row of an answer says about it, worked out once for its rows in a row
        (Open WebUI makes one per vote). The answer is held, so that "is" cannot meet another
        answer at the same address."""
        last = self._last
        if last is not None and last[0] is answer:
            return last[1]
        first = next((t.event_id for t in answer.context if t.event_id), answer.question_event_id)
        author = answer.author
        facts = _Facts(
            conversation_id=self.ids.of("conv", f"{answer.room_id}\x00{first}"),
            message_id=self.ids.of("msg", answer.event_id),
            author_id=self.ids.of("user", author) if author else None,
            prompt_sha256=self._prompt_sha256(answer.prompt_text),
            created_at=_iso(answer.finished_at),
            users=frozenset(t.sender for t in answer.context if t.role == "user" and t.sender),
        )
        self._last = (answer, facts)
        return facts

    def _prompt_sha256(self, text: str) -> str:
        # a handful of prompts (a room's versions, the default per language) in every row
        known = self._prompt_hashes.get(text)
        if known is None:
            if len(self._prompt_hashes) >= PROMPT_HASHES:
                self._prompt_hashes.clear()
            known = self._prompt_hashes[text] = sha256(text)
        return known


@dataclass(frozen=True)
class _Facts:
    conversation_id: str
    message_id: str
    author_id: str | None
    prompt_sha256: str
    created_at: str
    users: frozenset[str]


PROMPT_HASHES = 256


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
        # sorted: a set of strings iterates in an order that changes with each process
        for label in sorted({item["label"] for item in answer.labels}):
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
    for chat, head, tail in openwebui_parts(maker, group):
        yield {**head, "snapshot": {"chat": {"messages": chat}}, **tail}


def openwebui_parts(
    maker: RowMaker, group: list[Answer]
) -> Iterator[tuple[list[dict[str, str]], Row, Row]]:
    """Each record as the keys before its snapshot, the chat (the same list for all the votes
    of an answer) and the keys after it: the JSONL writer encodes the chat once per answer."""
    for answer in group:
        chat = maker.prompt(answer) + maker.assistant(answer.text)
        chat_id, message_id = maker.conversation_id(answer), maker.ids.of("msg", answer.event_id)
        for vote in answer.votes:
            rater = vote["sender"]
            tags = sorted({item["label"] for item in answer.labels if item["sender"] == rater})
            comment = next((c["text"] for c in answer.corrections if c["sender"] == rater), "")
            seconds = vote["ts"] // 1000
            head = {
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
                "meta": {"chat_id": chat_id, "message_id": message_id, "source": vote["source"]},
            }
            tail = {
                "created_at": seconds,
                "updated_at": seconds,
                "metadata": maker.metadata(answer, vote["source"], [rater]),
            }
            yield chat, head, tail


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


# which questions may make a row, judged from their feedback alone (ExportSource.questions
# reads no context for the others); each says no only where its builder above makes no row
# from any of the question's answers: not one of them voted or corrected
WANTED: dict[str, Wanted] = {
    "sft": lambda group: any(f.score > 0 or f.corrections for f in group),
    "kto": lambda group: any(f.votes and f.score != 0 for f in group),
    "dpo": lambda group: any(f.corrections for f in group) or sum(bool(f.votes) for f in group) > 1,
    "openwebui": lambda group: any(f.votes for f in group),
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
