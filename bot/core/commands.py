"""Room commands: `!lucie help | prompt … | mode … | lang … | reset`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config import Settings
from bot.core.clock import date_text, now_ms
from bot.core.data_commands import DataCommands, Regenerate, admin_choice
from bot.core.events import TextMessage
from bot.core.governance import is_room_admin
from bot.core.ports import ChatPort
from bot.storage.store import Store
from bot.texts import PromptTexts, say

log = logging.getLogger(__name__)
MAX_PROMPT_CHARS = 8000


@dataclass(frozen=True)
class Command:
    name: str
    args: list[str]
    rest: str  # the raw text after the sub-command, for prompt texts


def parse_command(body: str, prefix: str) -> Command | None:
    text = body.strip()
    if not text.lower().startswith(prefix.lower()):
        return None
    after = text[len(prefix) :]
    if after and not after[0].isspace():
        return None  # "!luciefoo" is not ours
    words = after.split()
    if not words:
        return Command("help", [], "")
    name = words[0].lower()
    rest = after.strip()[len(words[0]) :].strip()
    return Command(name, [w.lower() for w in words[1:]], rest)


class Commands:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        port: ChatPort,
        prompts: PromptTexts,
        regenerate: Regenerate,
    ) -> None:
        self.settings = settings
        self.store = store
        self.port = port
        self.prompts = prompts
        self.data = DataCommands(settings, store, regenerate, self.is_admin)

    @property
    def prefix(self) -> str:
        return self.settings.bot.command_prefix

    async def run(self, command: Command, message: TextMessage, lang: str) -> str:
        """Carry out a command and return the notice text to answer with ("" for none)."""
        handler = {
            "help": self._help,
            "prompt": self._prompt,
            "mode": self._mode,
            "lang": self._lang,
            "reset": self._reset,
            **self.data.handlers(),
        }.get(command.name)
        if handler is None:
            return say(lang, "cmd.unknown", command=command.name[:40], prefix=self.prefix)
        return await handler(command, message, lang)

    async def is_admin(self, room_id: str, user_id: str) -> bool:
        if user_id in self.settings.bot.operators:
            return True
        # read fresh every time: a cached copy would let a demoted admin keep the right
        authority = await self.port.room_authority(room_id)
        return authority is not None and is_room_admin(authority, user_id)

    async def _help(self, command: Command, message: TextMessage, lang: str) -> str:
        return say(lang, "cmd.help", prefix=self.prefix)

    async def _prompt(self, command: Command, message: TextMessage, lang: str) -> str:
        action = command.args[0] if command.args else "show"
        room_id, sender = message.room_id, message.sender
        if action == "show":
            return await self._show_prompt(room_id, lang)
        if action == "history":
            return await self._history(room_id, lang)
        if action not in ("set", "reset"):
            return say(lang, "cmd.prompt.usage", prefix=self.prefix)
        if not await self.is_admin(room_id, sender):
            return say(lang, "cmd.not_admin")
        if action == "reset":
            version = await self.store.add_prompt(room_id, None, sender, now_ms())
            log.info("prompt of %s reset to default by %s (v%d)", room_id, sender, version)
            return say(lang, "cmd.prompt.reset", version=version)
        text = command.rest[len("set") :].strip()
        if not text:
            return say(lang, "cmd.prompt.empty", prefix=self.prefix)
        version = await self.store.add_prompt(room_id, text[:MAX_PROMPT_CHARS], sender, now_ms())
        log.info("prompt of %s set by %s (v%d)", room_id, sender, version)
        return say(lang, "cmd.prompt.set", version=version)

    async def _show_prompt(self, room_id: str, lang: str) -> str:
        current = await self.store.current_prompt(room_id)
        if current is None or current.text is None:
            origin = say(lang, "cmd.prompt.default")
            version = current.version if current else 0
            text = self.prompts.system(lang)
        else:
            origin = say(
                lang, "cmd.prompt.set_by", who=current.set_by, when=date_text(current.set_at)
            )
            version, text = current.version, current.text
        quoted = "\n".join(f"> {line}" for line in text.splitlines())
        return say(lang, "cmd.prompt.show", version=version, origin=origin, text=quoted)

    async def _history(self, room_id: str, lang: str) -> str:
        rows = await self.store.prompt_history(room_id)
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
        refusal = await admin_choice(
            command, message, lang, ("mention", "all"), "cmd.mode.usage", self.prefix, self.is_admin
        )
        if refusal:
            return refusal
        await self.store.set_room(message.room_id, mode=command.args[0])
        return say(lang, "cmd.mode.set", mode=command.args[0])

    async def _lang(self, command: Command, message: TextMessage, lang: str) -> str:
        refusal = await admin_choice(
            command, message, lang, ("fr", "en"), "cmd.lang.usage", self.prefix, self.is_admin
        )
        if refusal:
            return refusal
        await self.store.set_room(message.room_id, lang=command.args[0])
        return say(command.args[0], "cmd.lang.set")

    async def _reset(self, command: Command, message: TextMessage, lang: str) -> str:
        await self.store.set_room(message.room_id, dm_reset_at=message.ts)
        return say(lang, "cmd.reset")
