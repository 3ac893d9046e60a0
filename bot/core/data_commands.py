"""Commands about training data: consent, erasure, corrections, regeneration, statistics."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from bot.config import Settings
from bot.core.clock import date_text, now_ms
from bot.core.command_registry import Command, CommandSpec, HelpLine, Reply, Who
from bot.core.events import TextMessage
from bot.core.feedback_events import FeedbackEvent, FeedbackForwarding, Kind
from bot.core.incidents import IncidentStore, refusals_text
from bot.core.ports import Image
from bot.core.records import AnswerRow
from bot.core.stores import Stores
from bot.report.room_chart import RoomCharts
from bot.texts import say

log = logging.getLogger(__name__)
# (answer, who asks) -> the notice to give instead of a new answer, or ""
Regenerate = Callable[[AnswerRow, str], Awaitable[str]]
MAX_CORRECTION_CHARS = 8000


CONSENT_HELP = (
    HelpLine("yes|no|status", "accord pour les données d'entraînement",
             "consent for training data"),
)  # fmt: skip
FORGET_HELP = (HelpLine("me", "effacer tout ce qui vous concerne", "erase everything about you"),)
CORRECT_HELP = (
    HelpLine("<texte>", "corriger une de mes réponses (en y répondant)",
             "correct one of my answers (as a reply to it)", usage_en="<text>"),
)  # fmt: skip
RETRY_HELP = (
    HelpLine("", "une autre réponse (en répondant à la mienne)",
             "another answer (as a reply to mine)"),
)  # fmt: skip
STATS_HELP = (HelpLine("", "statistiques", "statistics"),)
COLLECT_HELP = (
    HelpLine("on|off", "collecte des données dans ce salon", "data collection in this room"),
)


class DataCommands:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        regenerate: Regenerate,
        forgotten: Callable[[str], Awaitable[None]] | None = None,
        incidents: IncidentStore | None = None,
        mask: Callable[[str], str] = lambda text: text,  # personal identifiers out
        forward: FeedbackForwarding | None = None,  # to a webhook, when one is configured
        charts: RoomCharts | None = None,
    ) -> None:
        self.settings = settings
        self.feedback = stores.feedback
        self.erasure = stores.erasure
        self.rooms = stores.rooms
        self.answers = stores.conversations
        self.regenerate = regenerate
        self.forgotten = forgotten  # what else to erase of a person (the files they shared)
        self.incidents = incidents
        self.mask = mask
        self.forward = forward
        self.charts = charts or RoomCharts()

    @property
    def prefix(self) -> str:
        return self.settings.bot.command_prefix

    @property
    def collecting(self) -> bool:
        return self.settings.data.collection != "off"

    def specs(self) -> list[CommandSpec]:
        return [
            CommandSpec("consent", self.consent, CONSENT_HELP),
            CommandSpec("forget", self.forget, FORGET_HELP),
            CommandSpec("correct", self.correct, CORRECT_HELP),
            CommandSpec("retry", self.retry, RETRY_HELP),
            CommandSpec("stats", self.stats, STATS_HELP, Who.ADMIN),
            CommandSpec("collect", self.collect, COLLECT_HELP, Who.ADMIN),
        ]

    async def record_consent(
        self,
        user_id: str,
        room_id: str,
        lang: str,
        reaction_id: str | None = None,
        version: int | None = None,
    ) -> str:
        """Consent to the notice in force, or to the version of the notice reacted to (a ✅ on
        an older notice agrees to that text, which no longer counts)."""
        version = version or self.settings.data.notice_version
        await self.feedback.add_consent(user_id, "yes", version, room_id, now_ms(), reaction_id)
        return say(lang, "cmd.consent.yes", version=version, prefix=self.prefix)

    async def consent(self, command: Command, message: TextMessage, lang: str) -> str:
        if not self.collecting:
            return say(lang, "cmd.collection.off")
        action = command.args[0] if command.args else "status"
        if action == "yes":
            return await self.record_consent(message.sender, message.room_id, lang)
        if action == "no":
            version = self.settings.data.notice_version
            await self.feedback.add_consent(
                message.sender, "no", version, message.room_id, now_ms()
            )
            if self.forward is not None:  # what waits for the webhook stays in too
                await self.forward.consent_withdrawn(message.sender)
            return say(lang, "cmd.consent.no")
        if action == "status":
            current = await self.feedback.consent(message.sender)
            version = self.settings.data.notice_version
            if current and current[0] == "yes" and current[1] < version:
                prefix, old = self.prefix, current[1]
                return say(lang, "cmd.consent.outdated", old=old, version=version, prefix=prefix)
            if current and current[0] == "yes":
                return say(
                    lang, "cmd.consent.status_yes", when=date_text(current[2]), version=current[1]
                )
            return say(lang, "cmd.consent.status_no")
        return say(lang, "cmd.consent.usage", prefix=self.prefix)

    async def forget(self, command: Command, message: TextMessage, lang: str) -> str:
        if command.args != ["me"]:
            return say(lang, "cmd.forget.usage", prefix=self.prefix)
        try:
            if self.forward is not None:  # first: nothing of theirs leaves while the rest goes
                await self.forward.forget(message.sender, now_ms())
        finally:
            await self.erasure.forget(message.sender, now_ms())
            if self.forgotten is not None:
                await self.forgotten(message.sender)
        log.info("erased everything stored about a person on request")
        return say(lang, "cmd.forget.done")

    async def _replied_answer(self, message: TextMessage) -> AnswerRow | None:
        """The answer replied to, in the room the command came from and nowhere else."""
        if not message.reply_to:
            return None
        return await self.answers.answer_by_event(message.room_id, message.reply_to)

    async def correct(self, command: Command, message: TextMessage, lang: str) -> str:
        answer = await self._replied_answer(message)
        text = command.rest.strip()
        if answer is None or answer.answer_event_id is None or not text:
            return say(lang, "cmd.correct.usage", prefix=self.prefix)
        masked = self.mask(text[:MAX_CORRECTION_CHARS])
        await self.feedback.add_correction(
            message.event_id,
            answer.answer_event_id,
            message.room_id,
            message.sender,
            masked,
            message.ts,
        )
        # a correction says the answer was not good enough: it counts as a 👎
        await self.feedback.add_vote(
            message.event_id,
            answer.answer_event_id,
            message.room_id,
            message.sender,
            "down",
            "correction",
            message.ts,
            source="correction",
        )
        await self._forward("correction", message, answer.answer_event_id, masked)
        return say(lang, "cmd.correct.done")

    async def retry(self, command: Command, message: TextMessage, lang: str) -> str:
        answer = await self._replied_answer(message)
        if answer is None:
            return say(lang, "cmd.retry.usage", prefix=self.prefix)
        if answer.answer_event_id is not None:
            await self._forward("regeneration", message, answer.answer_event_id)
        return await self.regenerate(answer, message.sender)  # else the new answer replies

    async def _forward(
        self, kind: Kind, message: TextMessage, answer_event_id: str, text: str | None = None
    ) -> None:
        if self.forward is not None:
            event = FeedbackEvent(kind, message.event_id, message.room_id, answer_event_id,
                                  message.sender, message.ts, text=text)  # fmt: skip
            await self.forward.forward(event)

    async def stats(self, command: Command, message: TextMessage, lang: str) -> Reply:
        operator = message.sender in self.settings.bot.operators
        scope = None if operator else message.room_id
        answers = await self._answer_stats(scope, operator, lang)
        chart = functools.partial(self._chart, message.room_id, lang)
        if self.incidents is None:
            return Reply(answers, chart)
        refusals = refusals_text(await self.incidents.stats(scope), lang)
        return Reply(f"{answers}\n{refusals}" if refusals else answers, chart)

    async def _chart(self, room_id: str, lang: str) -> Image | None:
        """The room's approval per prompt version, drawn once the text has gone. An operator's
        text covers every room; the chart, posted in one room, shows that room only."""
        return await self.charts.chart(await self.feedback.approval(room_id), lang)

    async def _answer_stats(self, room_id: str | None, operator: bool, lang: str) -> str:
        rows = await self.feedback.stats(room_id)
        if not rows:
            return say(lang, "cmd.stats.empty")
        lines = []
        for row in rows:
            voted = row["up"] + row["down"]
            ratio = f"{100 * row['up'] / voted:.0f} %" if voted else "–"
            room = f"{row['room_id']} " if operator else ""
            lines.append(
                say(
                    lang,
                    "cmd.stats.line",
                    room=room,
                    version=row["prompt_version"],
                    answers=row["answers"],
                    grounding=self._grounding(row, lang),
                    up=row["up"],
                    down=row["down"],
                    ratio=ratio,
                    corrections=row["corrections"],
                )
            )
        return say(lang, "cmd.stats", lines="\n".join(lines))

    @staticmethod
    def _grounding(row: dict[str, int], lang: str) -> str:
        """Grounded and not-covered answers, where documents were searched at all."""
        if not row["grounded"] and not row["uncovered"]:
            return ""
        return say(lang, "cmd.stats.grounding", grounded=row["grounded"],
                   uncovered=row["uncovered"])  # fmt: skip

    async def collect(self, command: Command, message: TextMessage, lang: str) -> str:
        if command.action not in ("on", "off"):
            return say(lang, "cmd.collect.usage", prefix=self.prefix)
        await self.rooms.set_room(message.room_id, collection=int(command.action == "on"))
        return say(lang, "cmd.collect.set", state=command.action)
