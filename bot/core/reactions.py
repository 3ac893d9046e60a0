"""Reactions and redactions: 👍/👎 votes, reason labels and 🔁 on answers, ✅ on the consent
notice; a redaction withdraws a reaction or erases a message and what was built on it."""

from __future__ import annotations

import logging
from typing import Any

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.data_commands import DataCommands
from bot.core.events import Reaction, Redaction, parse_reaction, parse_redaction
from bot.core.feedback_events import FeedbackEvent, FeedbackForwarding, Kind
from bot.core.governance import Authority, bare_emoji, normalise_vote, redaction_honoured
from bot.core.metrics import Metrics
from bot.core.questions import Questions
from bot.core.records import AnswerRow
from bot.core.rooms import Rooms
from bot.core.stores import Stores

log = logging.getLogger(__name__)
CONSENT_KEY = "\u2705"  # ✅
REGENERATE_KEY = "\U0001f501"  # 🔁


class Reactions:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        rooms: Rooms,
        questions: Questions,
        data: DataCommands,
        metrics: Metrics,
        authority: Authority,
        forward: FeedbackForwarding | None = None,  # to a webhook, when one is configured
    ) -> None:
        self.settings = settings
        self.sync, self.answers = stores.sync, stores.conversations
        self.feedback, self.erasure = stores.feedback, stores.erasure
        self.rooms = rooms
        self.questions = questions
        self.data = data
        self.metrics = metrics
        self.reasons = {bare_emoji(k): v for k, v in settings.data.reason_emojis.items()}
        self.authority = authority
        self.forward = forward

    async def _may_redact(self, redaction: Redaction) -> bool:
        room_id, target = redaction.room_id, redaction.redacts
        stored = await self.answers.message(room_id, target)
        author = stored.sender if stored else await self.feedback.author(room_id, target)
        return await redaction_honoured(redaction, author, self.authority)

    async def on_reaction(self, room_id: str, event: dict[str, Any], bot_id: str) -> None:
        reaction = parse_reaction(room_id, event)
        if reaction is None or reaction.sender == bot_id:
            return
        key = bare_emoji(reaction.key)
        if key == CONSENT_KEY and self.settings.data.collection == "opt_in":
            await self._consent(reaction)
            return
        answer = await self.answers.answer_by_event(room_id, reaction.target)
        if answer is not None:
            await self._on_answer(reaction, key, answer)

    async def _consent(self, reaction: Reaction) -> None:
        room = await self.rooms.get(reaction.room_id)
        if reaction.target != room.consent_notice_event_id:
            return
        if await self.sync.claim_event(reaction.room_id, reaction.event_id, now_ms()):
            reply = await self.data.record_consent(
                reaction.sender,
                reaction.room_id,
                self.rooms.lang(room),
                reaction.event_id,
                version=room.consent_notice_version,
            )
            self.rooms.notice_later(reaction.room_id, reply, reaction.target)

    async def _on_answer(self, reaction: Reaction, key: str, answer: AnswerRow) -> None:
        args = (reaction.event_id, reaction.target, reaction.room_id, reaction.sender)
        vote = normalise_vote(reaction.key)
        if vote is not None:
            if await self.feedback.add_vote(*args, vote, reaction.key, reaction.ts):
                self.metrics.votes.labels(vote).inc()
                await self._forward("vote", reaction, vote)
        elif key in self.reasons:
            label = self.reasons[key]
            if await self.feedback.add_label(*args, label, reaction.key, reaction.ts):
                await self._forward("label", reaction, label, key)
        elif key == REGENERATE_KEY and await self.sync.claim_event(
            reaction.room_id, reaction.event_id, now_ms()
        ):
            await self._forward("regeneration", reaction)
            notice = await self.questions.regenerate(answer, reaction.sender)
            if notice:
                self.rooms.notice_later(reaction.room_id, notice, reaction.target)

    async def _forward(
        self, kind: Kind, reaction: Reaction, value: str | None = None, emoji: str | None = None
    ) -> None:
        if self.forward is not None:
            event = FeedbackEvent(
                kind, reaction.event_id, reaction.room_id, reaction.target, reaction.sender,
                reaction.ts, value=value, emoji=emoji,
            )  # fmt: skip
            await self.forward.forward(event)

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> str | None:
        """The id of the event redacted, when the redaction is honoured."""
        redaction = parse_redaction(room_id, event)
        if redaction is None or not await self._may_redact(redaction):
            return None
        # a withdrawn reaction, or a message whose text and derived records must go
        redacts, now = redaction.redacts, now_ms()
        withdrawn = await self.feedback.withdraw_reaction(room_id, redacts, now)
        if withdrawn and self.forward is not None:
            await self.forward.withdrawn(room_id, redacts, now)
        await self.erasure.erase_event(room_id, redacts, now)
        given = await self.feedback.consent_given_by(room_id, redacts)
        if given is not None:  # taking back the ✅ takes back the consent
            await self.feedback.add_consent(given[0], "no", given[1], room_id, now)
            if self.forward is not None:
                await self.forward.consent_withdrawn(given[0])
        return redacts
