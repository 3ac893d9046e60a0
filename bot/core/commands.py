"""Room settings commands: `prompt …`, `mode …`, `lang …`, `reset`."""

from __future__ import annotations

import logging

from bot.core.clock import date_text, now_ms
from bot.core.command_registry import Command, CommandSpec, HelpLine, Who
from bot.core.events import TextMessage
from bot.core.stores import RoomStore
from bot.texts import PromptTexts, say

log = logging.getLogger(__name__)
MAX_PROMPT_CHARS = 8000

PROMPT_HELP = (
    HelpLine("show", "afficher les consignes du salon", "show the room's instructions"),
    HelpLine("set <texte>", "changer les consignes", "change the instructions", admin=True,
             usage_en="set <text>"),
    HelpLine("reset", "revenir aux consignes par défaut", "back to the default instructions",
             admin=True),
    HelpLine("history", "versions précédentes des consignes",
             "earlier versions of the instructions"),
)  # fmt: skip
PROMPT_ADMIN_ACTIONS = frozenset({"set", "reset"})
MODE_HELP = (
    HelpLine("mention|all", "répondre seulement aux mentions, ou à tout",
             "answer mentions only, or everything"),
)  # fmt: skip
LANG_HELP = (HelpLine("fr|en", "langue du bot dans ce salon", "the bot's language in this room"),)
RESET_HELP = (
    HelpLine("", "oublier la conversation en cours (message direct)",
             "forget the current conversation (direct messages)"),
)  # fmt: skip


class RoomCommands:
    def __init__(self, prefix: str, rooms: RoomStore, prompts: PromptTexts) -> None:
        self.prefix = prefix
        self.rooms = rooms
        self.prompts = prompts

    def specs(self) -> list[CommandSpec]:
        return [
            CommandSpec("prompt", self._prompt, PROMPT_HELP, admin_actions=PROMPT_ADMIN_ACTIONS),
            CommandSpec("mode", self._mode, MODE_HELP, Who.ADMIN),
            CommandSpec("lang", self._lang, LANG_HELP, Who.ADMIN),
            CommandSpec("reset", self._reset, RESET_HELP),
        ]

    async def _prompt(self, command: Command, message: TextMessage, lang: str) -> str:
        action = command.action or "show"
        room_id, sender = message.room_id, message.sender
        if action == "show":
            return await self._show_prompt(room_id, lang)
        if action == "history":
            return await self._history(room_id, lang)
        if action == "reset":
            version = await self.rooms.add_prompt(room_id, None, sender, now_ms())
            log.info("prompt of %s reset to default by %s (v%d)", room_id, sender, version)
            return say(lang, "cmd.prompt.reset", version=version)
        if action != "set":
            return say(lang, "cmd.prompt.usage", prefix=self.prefix)
        text = command.rest[len("set") :].strip()
        if not text:
            return say(lang, "cmd.prompt.empty", prefix=self.prefix)
        version = await self.rooms.add_prompt(room_id, text[:MAX_PROMPT_CHARS], sender, now_ms())
        log.info("prompt of %s set by %s (v%d)", room_id, sender, version)
        return say(lang, "cmd.prompt.set", version=version)

    async def _show_prompt(self, room_id: str, lang: str) -> str:
        current = await self.rooms.current_prompt(room_id)
        if current is None or current.text is None:
            origin = say(lang, "cmd.prompt.default")
            version = current.version if current else 0
            text = self.prompts.system(lang)
        else:
            origin = say(
                lang, "cmd.prompt.set_by", who=current.set_by, when=date_text(current.set_at)
            )
            version, text = current.version, current.text
        room = say(lang, "cmd.prompt.show", version=version, origin=origin, text=_quoted(text))
        policy = say(lang, "cmd.prompt.policy", policy=_quoted(self.prompts.policy(lang)))
        return f"{policy}\n\n{room}"

    async def _history(self, room_id: str, lang: str) -> str:
        rows = await self.rooms.prompt_history(room_id)
        if not rows:
            return say(lang, "cmd.prompt.history_empty")
        lines = []
        for row in rows[:20]:
            summary = say(lang, "cmd.prompt.default") if row.text is None else row.text
            summary = summary.replace("\n", " ")
            if len(summary) > 80:
                summary = summary[:79] + "…"
            lines.append(f"- v{row.version}, {date_text(row.set_at)}, {row.set_by}: {summary}")
        return say(lang, "cmd.prompt.history", lines="\n".join(lines))

    async def _mode(self, command: Command, message: TextMessage, lang: str) -> str:
        if command.action not in ("mention", "all"):
            return say(lang, "cmd.mode.usage", prefix=self.prefix)
        await self.rooms.set_room(message.room_id, mode=command.action)
        return say(lang, "cmd.mode.set", mode=command.action)

    async def _lang(self, command: Command, message: TextMessage, lang: str) -> str:
        if command.action not in ("fr", "en"):
            return say(lang, "cmd.lang.usage", prefix=self.prefix)
        await self.rooms.set_room(message.room_id, lang=command.action)
        return say(command.action, "cmd.lang.set")

    async def _reset(self, command: Command, message: TextMessage, lang: str) -> str:
        await self.rooms.set_room(message.room_id, dm_reset_at=message.ts)
        return say(lang, "cmd.reset")


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())
