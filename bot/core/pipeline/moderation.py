"""The moderation stages: the question (and the passages found for it) checked before the model,
the answer checked while it streams and at the end.

With a moderation server, the answer shows only what has been checked: each edit sends the new
text for checking and shows what was cleared before, so a flagged text is never visible, not even
for one edit. The embedded rules check inline at each edit. A flagged answer is replaced, in the
same message, by a short refusal, and the model is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from bot.config import GuardSettings
from bot.core.context import Turn
from bot.core.incidents import Incident, Stage
from bot.core.pipeline.stages import AnswerJob, Refusal, Verdict
from bot.guard.categories import category_name
from bot.guard.moderation import Decision, Moderation
from bot.guard.ports import Exchange
from bot.rag.documents import Found
from bot.texts import say

log = logging.getLogger(__name__)
# what came before the new text, sent with it: a phrase cut by an edit is still seen whole
OVERLAP_CHARS = 300
SELF_HARM = "S11"
MAX_REMEMBERED = 20_000  # clean turns remembered, the oldest forgotten first


class IncidentSink(Protocol):
    async def record(self, incident: Incident) -> None: ...


class InlineRules(Protocol):
    def match(self, text: str, lang: str) -> tuple[str, ...]: ...


def refusal_record(stage: Stage, decision: Decision) -> str:
    """answers.refusal: what refused it, never the text."""
    return json.dumps(
        {"stage": stage, "categories": list(decision.categories), "backend": decision.backend}
    )


def _names(decision: Decision, lang: str) -> str:
    return ", ".join(category_name(c, lang) for c in decision.categories[:3])


def refusal_text(decision: Decision, lang: str, key: str) -> str:
    """What the person reads instead: someone writing about self-harm gets help, not a rule."""
    if decision.action == "unavailable":
        return say(lang, "guard.unavailable")
    if SELF_HARM in decision.categories:
        return say(lang, "guard.self_harm")
    return say(lang, key, category=_names(decision, lang))


class ModerationRecords:
    """Incidents for every flag of a decision: what was found, at which stage, by whom."""

    def __init__(self, incidents: IncidentSink, log_content: bool) -> None:
        self.incidents = incidents
        self.log_content = log_content

    async def note(self, job: AnswerJob, stage: Stage, decision: Decision, text: str) -> None:
        for flag in decision.flags:
            action = flag.action
            if action == "allow":
                continue
            await self.incidents.record(
                Incident(
                    room_id=job.row.room_id,
                    answer_id=job.row.id,
                    stage=stage,
                    category=flag.category,
                    backend=flag.backend,
                    action=action,
                    sender=job.question.sender,
                    text=text if self.log_content else None,
                )
            )


class RequestModeration:
    """A request filter: the question, then the passages; the answer's own filter added."""

    name = "moderation"

    def __init__(
        self,
        settings: GuardSettings,
        moderation: Moderation,
        rules: InlineRules | None,
        records: ModerationRecords,
    ) -> None:
        self.settings = settings
        self.moderation = moderation
        self.rules = rules
        self.records = records
        # turns already found clean, by room, event and text: a conversation's earlier turns
        # are not sent again with each question (an edited one is: its text changed)
        self._clean: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    async def check(self, job: AnswerJob) -> Refusal | None:
        question = job.turns[-1].content if job.turns else job.question.body
        if self.settings.check_question:
            refusal = await self._turns(job, question)
            if refusal is not None:
                return refusal
        if self.settings.check_passages and job.found:
            refusal = await self._passages(job)
            if refusal is not None:
                return refusal
        if self.settings.check_answer:
            # first among the answer's filters: what it replaces, no later filter decorates
            job.output_filters.insert(0, AnswerModeration(self, job, question))
        return None

    async def _turns(self, job: AnswerJob, question: str) -> Refusal | None:
        """Everything people wrote that the model will read, each turn on its own (a turn is
        at most one message, so no check cuts it): the question, and the turns before it,
        edited since they were asked or never asked of the bot at all, with the names the
        model reads before them in group rooms."""
        room_id = job.row.room_id
        said = [self._as_read(t, room_id, job.is_dm) for t in job.turns if t.role == "user"]
        said = said or [(question, None)]
        fresh = [(text, key) for text, key in said if key is None or key not in self._clean]
        decisions = await asyncio.gather(
            *(self.moderation.check(Exchange("user", text, lang=job.lang)) for text, _ in fresh)
        )
        refusal = None
        for (text, key), decision in zip(fresh, decisions, strict=True):
            judged = await self._judge(job, "question", decision, text)
            if judged is not None:
                refusal = refusal or judged
            elif key is not None:
                self._remember(key)
        return refusal

    @staticmethod
    def _as_read(turn: Turn, room_id: str, is_dm: bool) -> tuple[str, tuple[str, str, str] | None]:
        text = turn.content if is_dm or not turn.speaker else f"{turn.speaker}: {turn.content}"
        if turn.event_id is None:
            return text, None
        return text, (room_id, turn.event_id, hashlib.sha256(text.encode()).hexdigest())

    def _remember(self, key: tuple[str, str, str]) -> None:
        self._clean[key] = None
        while len(self._clean) > MAX_REMEMBERED:
            self._clean.popitem(last=False)

    async def _judge(
        self, job: AnswerJob, stage: Stage, decision: Decision, text: str
    ) -> Refusal | None:
        if decision.action == "pass":
            return None
        await self.records.note(job, stage, decision, text)
        if decision.action == "log":
            return None
        notice = refusal_text(decision, job.lang, "guard.refused")
        return Refusal(
            reason=",".join(decision.categories),
            notice=notice,
            record=refusal_record(stage, decision),
        )

    async def _passages(self, job: AnswerJob) -> Refusal | None:
        """Flagged passages are left out (a document may hold anything, and instructions aimed
        at the model); when they cannot be checked under fail_closed, the question is refused."""
        assert job.found is not None
        decisions = await asyncio.gather(
            *(self.moderation.check(Exchange("user", f.text, lang=job.lang)) for f in job.found)
        )
        kept: list[Found] = []
        for found, decision in zip(job.found, decisions, strict=True):
            if decision.action == "unavailable":
                return await self._judge(job, "passages", decision, found.text)
            if decision.action != "pass":
                await self.records.note(job, "passages", decision, found.text)
            if decision.action != "refuse":
                kept.append(found)
        if len(kept) < len(job.found):
            log.info("answer %d: %d passages left out", job.row.id, len(job.found) - len(kept))
        job.found = kept
        return None


class AnswerModeration:
    """An output filter made for one answer."""

    name = "moderation"

    def __init__(self, stage: RequestModeration, job: AnswerJob, question: str) -> None:
        self.stage = stage
        self.job = job
        self.question = question
        self.moderation = stage.moderation
        self.replaced: Verdict | None = None
        self.decision: Decision | None = None  # the one that replaced the answer
        self._inline_upto = 0  # characters the inline rules have read
        self._cleared = 0  # characters the servers have cleared
        self._pending: asyncio.Task[Decision] | None = None
        self._pending_upto = 0
        self._notes: list[asyncio.Task[None]] = []
        self._poke: Callable[[], None] = lambda: None
        self._seen = ""  # the text at the last look: what the counts above are counts of

    def wake_on(self, poke: Callable[[], None]) -> None:
        """How to have the reply read the text again once a check has cleared more of it: the
        model may be silent for a while, and cleared text must not wait for its next token."""
        self._poke = poke

    def streaming(self, text: str) -> Verdict:
        if self.replaced is not None:
            return self.replaced
        if not text.startswith(self._seen):
            self._start_over()  # another model server took over, from the start
        self._seen = text
        rules = self.stage.rules
        if rules is not None and len(text) > self._inline_upto:
            new = text[max(0, self._inline_upto - OVERLAP_CHARS) :]
            self._inline_upto = len(text)
            decision = self.moderation.decide("rules", rules.match(new, self.job.lang))
            if decision.action in ("refuse", "unavailable"):  # logged ones: at the end, once
                self._flagged(decision, new)
                return self._replace(decision)
        if not self.moderation.has_remote:
            return Verdict(text)
        self._collect()
        if self.replaced is not None:
            return self.replaced
        if self._pending is None and len(text) > self._cleared:
            start = max(0, self._cleared - OVERLAP_CHARS)
            exchange = Exchange("assistant", text[start:], self.question, self.job.lang)
            self._pending = asyncio.ensure_future(self.moderation.check(exchange))
            self._pending.add_done_callback(lambda _: self._poke())
            self._pending_upto = len(text)
        return Verdict(text[: self._cleared])

    def _start_over(self) -> None:
        """Nothing of a new text has been checked, whatever was of the one before."""
        if self._pending is not None:
            self._pending.cancel()
        self._pending = None
        self._inline_upto = self._cleared = self._pending_upto = 0

    def _collect(self) -> None:
        """A server's word on the text sent at an earlier edit, once it came."""
        pending = self._pending
        if pending is None or not pending.done():
            return
        self._pending = None
        if pending.cancelled() or pending.exception() is not None:
            return  # held back; the check at the end decides
        decision = pending.result()
        if decision.action in ("pass", "log"):
            self._cleared = self._pending_upto
        elif decision.action == "refuse":
            self._flagged(decision, "")
            self._replace(decision)
        # unavailable: the text stays held back, and the check at the end decides, so that one
        # server blip mid-answer does not replace an answer the server would have cleared

    def _flagged(self, decision: Decision, text: str) -> None:
        note = self.stage.records.note(self.job, "answer", decision, text)
        self._notes.append(asyncio.ensure_future(note))

    def _replace(self, decision: Decision) -> Verdict:
        self.decision = decision
        notice = refusal_text(decision, self.job.lang, "guard.replaced")
        reason = ",".join(decision.categories)
        self.replaced = Verdict(notice, replaced=True, reason=reason, halt=True)
        return self.replaced

    async def final(self, text: str) -> Verdict:
        """The whole answer, checked once more with the question it answers."""
        try:
            if self.replaced is None and text.strip():
                self._collect()
            if self.replaced is None and text.strip():
                exchange = Exchange("assistant", text, self.question, self.job.lang)
                decision = await self.moderation.check(exchange)
                if decision.action != "pass":
                    await self.stage.records.note(self.job, "answer", decision, text)
                    if decision.action in ("refuse", "unavailable"):
                        self._replace(decision)
            return self.replaced or Verdict(text)
        finally:
            await self._settle()

    async def _settle(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pending
        for note in self._notes:
            with contextlib.suppress(Exception):
                await note

    @property
    def record(self) -> str | None:
        return refusal_record("answer", self.decision) if self.decision else None


def answer_refusal(filters: Sequence[object]) -> str | None:
    """answers.refusal of an answer its moderation replaced, else None."""
    for output_filter in filters:
        if isinstance(output_filter, AnswerModeration) and output_filter.record:
            return output_filter.record
    return None
