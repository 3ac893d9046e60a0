"""Feedback as events for the outside (a team's webhook): a vote, a label, their withdrawal, a
correction or a regeneration, forwarded only when the person consented and the room collects.

What is taken back follows what left, consent or not: a removal, or a person forgotten, goes
when (and only when) what it takes back had left; what had not left yet is dropped instead.

The core decides what may leave; how it leaves (pseudonyms, signature, HTTP, retries) is the
sink's business (bot.webhook). Forwarding never fails the feedback it follows: the vote is
stored whatever happens to its event.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.config import DataSettings
from bot.core.governance import bare_emoji
from bot.core.stores import FeedbackStore, RoomStore

log = logging.getLogger(__name__)

Kind = Literal[
    "vote", "vote_removed", "label", "label_removed", "correction", "correction_removed",
    "regeneration", "person_forgotten",
]  # fmt: skip
# events that take something back: never taken back themselves, they carry nothing new
TAKING_BACK = frozenset({"vote_removed", "label_removed", "correction_removed", "person_forgotten"})


@dataclass(frozen=True)
class FeedbackEvent:
    kind: Kind
    source_event_id: str  # the reaction, command or redaction: one event for each
    room_id: str
    answer_event_id: str
    sender: str
    ts: int
    value: str | None = None  # "up"/"down" for votes, the label's name for labels
    emoji: str | None = None  # the reaction key a label came from
    text: str | None = None  # a correction, as stored (personal identifiers masked)
    model: str | None = None
    prompt_version: int | None = None


@dataclass(frozen=True)
class AnswerFacts:
    model: str | None
    prompt_version: int
    collected: bool  # made while its room collected (otherwise never exported, nor forwarded)


@dataclass(frozen=True)
class GivenFeedback:
    """A vote or label as stored, found again by the reaction that carried it."""

    kind: Literal["vote", "label", "correction"]  # a correction's own 👎, redacted with it
    answer_event_id: str
    sender: str
    value: str
    raw_key: str


class FeedbackFacts(Protocol):
    """What forwarding reads beside the core's stores (bot.storage.outbox_store)."""

    async def answer_facts(self, room_id: str, answer_event_id: str) -> AnswerFacts | None: ...
    async def given(self, room_id: str, reaction_event_id: str) -> GivenFeedback | None: ...


class FeedbackSink(Protocol):
    """Takes an event for delivery without waiting for the receiver (bot.webhook.Webhook)."""

    async def emit(self, event: FeedbackEvent) -> None: ...
    async def take_back(self, room_id: str, source_event_id: str) -> bool:
        """Drop what this reaction or message made that has not left; whether any of it left."""
        ...

    async def drop_person(self, user_id: str) -> None:
        """Drop the person's events that have not left (consent taken back)."""
        ...

    async def forget(self, user_id: str) -> bool:
        """Drop the person's events that have not left and what is remembered of those that
        did ("forget me"); whether any did."""
        ...


def consents(current: tuple[str, int, int] | None, notice_version: int) -> bool:
    """The person's latest word is yes, to the notice in force (as exports count it)."""
    return current is not None and current[0] == "yes" and current[1] >= notice_version


class FeedbackForwarding:
    def __init__(
        self,
        data: DataSettings,
        stores: tuple[RoomStore, FeedbackStore],
        facts: FeedbackFacts,
        sink: FeedbackSink,
    ) -> None:
        self.data = data
        self.rooms, self.feedback = stores
        self.facts = facts
        self.sink = sink

    async def forward(self, event: FeedbackEvent) -> None:
        try:
            await self._forward(event)
        except Exception as exc:  # the feedback is stored; only its copy outside is lost
            log.warning("feedback event not forwarded: %s", type(exc).__name__)

    async def withdrawn(self, room_id: str, reaction_event_id: str, ts: int) -> None:
        """A reaction (or a correction) taken back: what has not left stays in, and the removal
        of what left goes, whatever the person's consent now (it carries nothing new)."""
        try:
            given = await self.facts.given(room_id, reaction_event_id)
            if not await self.sink.take_back(room_id, reaction_event_id) or given is None:
                return
            removed: dict[str, Kind] = {"vote": "vote_removed", "label": "label_removed",
                                        "correction": "correction_removed"}  # fmt: skip
            value = None if given.kind == "correction" else given.value
            emoji = bare_emoji(given.raw_key) if given.kind == "label" else None
            event = FeedbackEvent(
                removed[given.kind], reaction_event_id, room_id, given.answer_event_id,
                given.sender, ts, value=value, emoji=emoji,
            )  # fmt: skip
            facts = await self.facts.answer_facts(room_id, given.answer_event_id)
            if facts is not None:
                event = dataclasses.replace(
                    event, model=facts.model, prompt_version=facts.prompt_version
                )
            await self.sink.emit(event)
        except Exception as exc:
            log.warning("feedback removal not forwarded: %s", type(exc).__name__)

    async def consent_withdrawn(self, user_id: str) -> None:
        """What the person gave and has not left yet stays in."""
        try:
            await self.sink.drop_person(user_id)
        except Exception as exc:
            log.warning("pending feedback events not dropped: %s", type(exc).__name__)

    async def forget(self, user_id: str, ts: int) -> None:
        """ "Forget me": what has not left stays in; a receiver that got something of theirs is
        told, by their pseudonym alone, to drop it."""
        try:
            if await self.sink.forget(user_id):
                await self.sink.emit(FeedbackEvent("person_forgotten", "", "", "", user_id, ts))
        except Exception as exc:
            log.warning("pending feedback events not dropped: %s", type(exc).__name__)

    async def _forward(self, event: FeedbackEvent) -> None:
        if not await self._may_forward(event.sender, event.room_id):
            return
        facts = await self.facts.answer_facts(event.room_id, event.answer_event_id)
        if facts is None or not facts.collected:
            return
        await self.sink.emit(
            dataclasses.replace(event, model=facts.model, prompt_version=facts.prompt_version)
        )

    async def _may_forward(self, sender: str, room_id: str) -> bool:
        if self.data.collection != "opt_in":
            return False
        room = await self.rooms.room(room_id)
        if room is None or not room.collection:
            return False
        return consents(await self.feedback.consent(sender), self.data.notice_version)
