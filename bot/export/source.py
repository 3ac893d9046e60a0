"""Reading exportable answers from the database, a batch at a time, under the consent rules.

An answer is exportable when it finished (complete or cut), was not erased, was made while its
room collected data and the room still does, and every person whose words are in its context
consented to the notice in force (in opt-in mode). Votes, labels and corrections count only from
people who consented, and one person's votes on an answer count once (their latest standing one).
A room's own system prompt is included only if the admin who wrote it consented; the default
prompt always is, and so is the operators' policy that the model read before it. Records are
found by room and event id together: an event id alone may name an event of another room.

Refused questions and answers replaced by a refusal never make training rows, not even as the
context of a later answer; they are read apart (refused=True) as labelled safety examples,
under the same consent rules, and only when the asker's question is the last turn checked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any

import aiosqlite

from bot.core.context import conversation_turn
from bot.core.policy import system_prompt
from bot.export.grounding import answer_text, exportable_block
from bot.export.privacy import person_names
from bot.export.refusals import Refusal, parse_refusal, refused_events
from bot.storage.conversation_store import message_row
from bot.storage.export_reader import Key, Shard, SqliteExportReader
from bot.texts import PromptTexts


@dataclass(frozen=True)
class Turn:
    role: str  # system, user or assistant
    text: str
    sender: str | None
    event_id: str | None
    speaker: str | None = None  # the name the model read before the turn, in group rooms


@dataclass
class Answer:
    id: int
    event_id: str
    room_id: str
    question_event_id: str
    sibling: int
    text: str
    model: str
    sampling: dict[str, Any]
    prompt_version: int
    prompt_text: str
    lang: str
    finished_at: int
    context: list[Turn]
    speakers_named: bool = False
    sources_block: str | None = None  # the sources the model read before the question
    grounded: int | None = None  # None: no documents; 0: they did not cover it; 1: grounded
    policy_sha256: str | None = None  # None: answered before the operators' policy existed
    refusal: Refusal | None = None  # set only when read as a refusal
    votes: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    corrections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(1 if v["vote"] == "up" else -1 for v in self.votes)

    @property
    def author(self) -> str | None:
        users = [t.sender for t in self.context if t.role == "user"]
        return users[-1] if users else None


@dataclass(frozen=True)
class Feedback:
    """An answer's votes, labels and corrections that count, known before its context is read."""

    votes: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    corrections: list[dict[str, Any]]

    @property
    def score(self) -> int:
        return sum(1 if v["vote"] == "up" else -1 for v in self.votes)


# what the formats read of a vote: the columns left out cost a third of reading a million votes
VOTE_COLUMNS = ("reaction_event_id", "sender", "vote", "ts", "source")

# whether a question with this feedback may make a row (False: no context read); since answers
# are left out later (context unusable), it may say no only when no subset of them makes a row
Wanted = Callable[[list[Feedback]], bool]


class ExportSource:
    def __init__(
        self,
        reader: SqliteExportReader,
        prompts: PromptTexts,
        default_lang: str,
        bot_id: str,
        bot_name: str | None,
        opt_in: bool,
        notice_version: int,
    ) -> None:
        self.reader = reader
        self.prompts = prompts
        self.default_lang = default_lang
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.opt_in = opt_in
        self.notice_version = notice_version
        self.consenting: set[str] = set()
        self.notice_versions: dict[str, int] = {}
        self._room_prompts: dict[tuple[str, int], tuple[str, bool]] = {}
        self._policies: dict[str, str | None] = {}

    async def load_consents(self) -> None:
        """People whose latest word is yes, to the notice in force: a "yes" to an older notice
        agreed to other terms, so it waits for a new answer."""
        async for row in self.reader.latest_consents():
            if row["action"] == "yes" and row["notice_version"] >= self.notice_version:
                self.consenting.add(row["user_id"])
                self.notice_versions[row["user_id"]] = row["notice_version"]

    async def people_names(self) -> set[str]:
        """Every name the people the bot has stored may go by, the bot's own excepted."""
        names: set[str] = set()
        async for row in self.reader.people():
            names |= person_names(row["sender"], row["sender_name"])
        return names

    def may_use(self, user_id: str | None) -> bool:
        return (
            user_id is None
            or user_id == self.bot_id
            or not self.opt_in
            or (user_id in self.consenting)
        )

    async def questions(
        self,
        since_ms: int,
        room: str | None,
        refused: bool = False,
        wanted: Wanted | None = None,
        shard: Shard = (None, None),
    ) -> AsyncIterator[list[Answer]]:
        """Exportable answers grouped by question (siblings together), in a stable order; with
        refused, the refusals shown instead; with wanted, only the questions whose feedback it
        accepts (the others make no row in the format that asks); with shard, a part of them."""
        group: list[Answer] = []
        async for answer in self._answers(since_ms, room, refused, wanted, shard):
            if group and _question(group[0]) != _question(answer):
                yield group
                group = []
            group.append(answer)
        if group:
            yield group

    async def _answers(
        self, since_ms: int, room: str | None, refused: bool, wanted: Wanted | None, shard: Shard
    ) -> AsyncIterator[Answer]:
        held: list[aiosqlite.Row] = []
        async for batch in self.reader.finished_answers(since_ms, room, refused, shard):
            rows = held + batch
            # the last question may go on in the next batch: held back, to be judged whole
            cut = len(rows)
            while cut > 0 and _row_question(rows[cut - 1]) == _row_question(rows[-1]):
                cut -= 1
            held = rows[cut:]
            for answer in await self._complete(rows[:cut], refused, wanted):
                yield answer
        for answer in await self._complete(held, refused, wanted):
            yield answer

    async def _complete(
        self, rows: list[aiosqlite.Row], refused: bool, wanted: Wanted | None
    ) -> list[Answer]:
        if not rows:
            return []
        feedback: dict[Key, Feedback] = {}
        if not refused:
            # feedback first: it alone may tell that a question makes no row in this format
            feedback = await self._feedback(rows)
            if wanted is not None:
                rows = [
                    row
                    for _, found in groupby(rows, key=_row_question)
                    for question in [list(found)]
                    if wanted([feedback[_row_answer(row)] for row in question])
                    for row in question
                ]
                if not rows:
                    return []
        # read once: the keys of the whole batch, then each answer's context
        contexts = [json.loads(row["context_event_ids"] or "[]") for row in rows]
        context_keys = {
            (row["room_id"], event_id)
            for row, event_ids in zip(rows, contexts, strict=True)
            for event_id in event_ids
        }
        messages = await self.reader.by_key("messages", context_keys)
        # a refusal example may follow earlier refusals; a training conversation may not
        tainted = await self._refused_events(context_keys) if not refused else set()
        earlier = await self.reader.grounded_answers(
            key for key, found in messages.items() if found and found[0]["from_bot"]
        )
        grounded_ids = [row["id"] for row in rows if row["grounded"] is not None]
        grounded_ids += [answer_id for answer_id, _ in earlier.values()]
        sources = await self.reader.answer_sources(grounded_ids) if grounded_ids else {}
        answers = []
        turns: dict[Key, Turn] = {}  # a message in the context of several answers is read once
        for row, event_ids in zip(rows, contexts, strict=True):
            context = self._context(row, event_ids, messages, turns)
            if context is None or any((row["room_id"], t.event_id) in tainted for t in context):
                continue
            if not self._earlier_answers_usable(row, context, earlier, sources):
                continue
            answer = await self._answer(row, context)
            if answer is not None and self._ground(answer, row, sources.get(row["id"], [])):
                if not refused:
                    found = feedback[_row_answer(row)]
                    answer.votes, answer.labels = found.votes, found.labels
                    answer.corrections = found.corrections
                answers.append(answer)
        return answers

    async def _refused_events(self, keys: set[Key]) -> set[Key]:
        return refused_events(await self.reader.refusals_touching(keys))

    def _ground(self, answer: Answer, row: aiosqlite.Row, given: list[dict[str, Any]]) -> bool:
        """Attach the sources the model read; False when they may not be exported. A question
        refused before the model (or its passages) had none read: flagged passages stay out."""
        if row["grounded"] is None or (answer.refusal and answer.refusal.stage != "answer"):
            return True
        block = exportable_block(row["grounded"], given, answer.lang, self.may_use)
        if block is None:
            return False
        answer.sources_block, answer.grounded = block, row["grounded"]
        answer.text = answer_text(answer.text, row["grounded"])
        return True

    async def _feedback(self, rows: list[aiosqlite.Row]) -> dict[Key, Feedback]:
        keys = [_row_answer(row) for row in rows]
        # current_votes: one vote per person and answer, however many reactions they left
        votes = await self.reader.by_key(
            "current_votes", keys, standing_only=True, columns=VOTE_COLUMNS
        )
        labels = await self.reader.by_key("labels", keys, standing_only=True)
        corrections = await self.reader.by_key("corrections", keys)
        return {
            key: Feedback(
                votes=self._usable(votes.get(key, [])),
                labels=_once_each(self._usable(labels.get(key, []))),
                corrections=self._usable(corrections.get(key, [])),
            )
            for key in keys
        }

    def _earlier_answers_usable(
        self,
        row: aiosqlite.Row,
        context: list[Turn],
        earlier: dict[Key, tuple[int, int]],
        sources: dict[int, list[dict[str, Any]]],
    ) -> bool:
        """The bot's earlier answers in the context are held to their own sources' rules (they
        may quote them), and lose the list of sources the bot appended to them."""
        lang = row["room_lang"] or self.default_lang
        for index, turn in enumerate(context):
            answer = earlier.get((row["room_id"], turn.event_id or ""))
            if turn.role != "assistant" or answer is None:
                continue
            answer_id, grounded = answer
            if exportable_block(grounded, sources.get(answer_id, []), lang, self.may_use) is None:
                return False
            context[index] = replace(turn, text=answer_text(turn.text, grounded))
        return True

    def _usable(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.opt_in:
            return items
        # may_use, inlined: called for each of the million votes of a big export
        consenting, bot_id = self.consenting, self.bot_id
        return [
            item
            for item in items
            if (sender := item["sender"]) is None or sender == bot_id or sender in consenting
        ]

    async def _answer(self, row: aiosqlite.Row, context: list[Turn]) -> Answer | None:
        lang = row["room_lang"] or self.default_lang
        refusal = None
        if row["refusal"] is not None:
            refusal = parse_refusal(row["refusal"])
            # the asker's consent is checked through the context: it must end with their question
            if refusal is None or not refusal.reasons:
                return None
            if context[-1].event_id != row["question_event_id"]:
                return None
        prompt_text, prompt_usable = await self._prompt(row["room_id"], row["prompt_version"], lang)
        system: str | None = prompt_text if prompt_usable else None
        if row["policy_sha256"] is not None:
            policy = await self._policy(row["policy_sha256"])
            if policy is None:
                return None  # what the model read first is not on record: not as it read it
            system = system_prompt(policy, system, lang)
        if system is not None:
            context.insert(0, Turn("system", system, None, None))
        return Answer(
            id=row["id"],
            # a refusal before the model may have no event of its own: a stable stand-in
            event_id=row["answer_event_id"] or f"{row['question_event_id']}\x00{row['sibling']}",
            room_id=row["room_id"],
            question_event_id=row["question_event_id"],
            sibling=row["sibling"],
            text=row["text"],
            model=row["model"] or "",
            sampling=json.loads(row["sampling"] or "{}"),
            prompt_version=row["prompt_version"],
            prompt_text=prompt_text,
            lang=lang,
            finished_at=row["finished_at"] or row["created_at"],
            context=context,
            # answers recorded before this was kept were framed as in group rooms unless DMs
            speakers_named=bool(row["speakers_named"]),
            policy_sha256=row["policy_sha256"],
            refusal=refusal,
        )

    async def _policy(self, sha256: str) -> str | None:
        if sha256 not in self._policies:
            self._policies[sha256] = await self.reader.policy(sha256)
        return self._policies[sha256]

    def _context(
        self,
        row: aiosqlite.Row,
        event_ids: list[str],
        messages: dict[Key, list[dict[str, Any]]],
        read: dict[Key, Turn],
    ) -> list[Turn] | None:
        turns = []
        for event_id in event_ids:
            key = (row["room_id"], event_id)
            found = messages.get(key)
            if not found:
                return None  # erased since: the whole answer goes
            message = found[0]
            if not self.may_use(message["sender"]):
                return None
            edited = message.get("edited_at")
            if edited is not None and edited > (row["started_at"] or row["created_at"]):
                return None  # edited after the model read it: no longer what it read
            turn = read.get(key)
            if turn is None:
                # as the model read it: one conversation builder for answering and export
                seen = conversation_turn(message_row(message), self.bot_id, self.bot_name)
                turn = Turn(seen.role, seen.content, message["sender"], event_id, seen.speaker)
                read[key] = turn
            turns.append(turn)
        return turns if turns and turns[-1].role == "user" else None

    async def _prompt(self, room_id: str, version: int, lang: str) -> tuple[str, bool]:
        key = (room_id, version)
        if key not in self._room_prompts:
            text, usable = self.prompts.system(lang), True
            if version:
                row = await self.reader.prompt(room_id, version)
                if row is not None and row["text"] is not None:
                    text, usable = row["text"], self.may_use(row["set_by"])
            self._room_prompts[key] = (text, usable)
        return self._room_prompts[key]


def _question(answer: Answer) -> Key:
    return (answer.room_id, answer.question_event_id)


def _row_question(row: aiosqlite.Row) -> Key:
    return (row["room_id"], row["question_event_id"])


def _row_answer(row: aiosqlite.Row) -> Key:
    # the answers read for training all have an event of their own, which feedback names
    return (row["room_id"], row["answer_event_id"])


def _once_each(labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One person's label on an answer counts once, however many reactions carried it."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for label in labels:
        first.setdefault((label["sender"], label["label"]), label)
    return list(first.values())
