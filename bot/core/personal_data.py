"""Personal identifiers (NIR, IBAN, phone, e-mail, postal address) masked before anything is
stored, so that they never reach what the model reads later, a log or an export; the person is
reminded once not to share them."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.events import TextMessage
from bot.core.metrics import Metrics
from bot.core.records import RoomRow
from bot.core.rooms import Rooms
from bot.guard.pii import mask_personal_data
from bot.texts import say


class Reminders(Protocol):
    async def first_reminder(self, user_id: str, now: int) -> bool: ...


class PersonalData:
    def __init__(
        self, settings: Settings, reminders: Reminders, rooms: Rooms, metrics: Metrics
    ) -> None:
        self.enabled = settings.guard.mask_personal_data
        self.reminders = reminders
        self.rooms = rooms
        self.metrics = metrics

    def masked(self, text: str) -> str:
        """The text with its identifiers masked (a correction, an edit, a fetched message)."""
        if not self.enabled:
            return text
        masked = mask_personal_data(text)
        for kind in masked.kinds:
            self.metrics.personal_data.labels(kind).inc()
        return masked.text

    async def question(self, message: TextMessage, room: RoomRow) -> TextMessage:
        """A question with its identifiers masked; the first time a person shares some, a
        reminder not to."""
        if not self.enabled:
            return message
        masked = mask_personal_data(message.body)
        if masked.text != message.body:  # what is stored is what was checked
            message = dataclasses.replace(message, body=masked.text, formatted_body=None)
        if not masked.kinds:
            return message
        for kind in masked.kinds:
            self.metrics.personal_data.labels(kind).inc()
        if await self.reminders.first_reminder(message.sender, now_ms()):
            lang = self.rooms.lang(room)
            kinds = ", ".join(say(lang, f"pii.{kind}") for kind in masked.kinds)
            text = say(lang, "pii.reminder", kinds=kinds)
            self.rooms.notice_later(room.room_id, text, message.event_id)
        return message
