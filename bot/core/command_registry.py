"""Room commands declared once: name, arguments, who may run them, help in both languages.

Help is generated from the declarations, and the admin check happens here, before any handler
runs, so that no command can forget it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from bot.core.events import TextMessage
from bot.core.governance import is_room_admin
from bot.core.ports import ChatPort, Image
from bot.texts import say


@dataclass(frozen=True)
class Command:
    name: str
    args: list[str]
    rest: str  # the raw text after the sub-command, for prompt texts

    @property
    def action(self) -> str | None:
        return self.args[0] if self.args else None


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


class Who(Enum):
    ANYONE = "anyone"
    ADMIN = "admin"  # room admins and operators


@dataclass(frozen=True)
class Reply:
    """A command's answer with a picture after its text (`stats`' chart). The picture is made
    only once the text has gone, so the text never waits for it nor fails with it."""

    text: str
    image: Callable[[], Awaitable[Image | None]] | None = None


Handler = Callable[[Command, TextMessage, str], Awaitable[str | Reply]]


@dataclass(frozen=True)
class HelpLine:
    usage: str  # after the command name, e.g. "set <texte>"
    fr: str
    en: str
    admin: bool = False
    usage_en: str | None = None  # when the arguments read differently in English


@dataclass(frozen=True)
class CommandSpec:
    name: str
    handler: Handler
    help: tuple[HelpLine, ...]
    who: Who = Who.ANYONE
    # sub-commands that only room admins may run, when the command itself is open to anyone
    admin_actions: frozenset[str] = field(default_factory=frozenset)

    def needs_admin(self, command: Command) -> bool:
        return self.who is Who.ADMIN or command.action in self.admin_actions


class RoomAdmins:
    """Who counts as a room admin: operators, and whoever may change the room's power levels,
    read fresh every time (a cached copy would let a demoted admin keep the right)."""

    def __init__(self, operators: list[str], port: ChatPort) -> None:
        self.operators = operators
        self.port = port

    async def __call__(self, room_id: str, user_id: str) -> bool:
        if user_id in self.operators:
            return True
        authority = await self.port.room_authority(room_id)
        return authority is not None and is_room_admin(authority, user_id)


IsAdmin = Callable[[str, str], Awaitable[bool]]


class CommandRegistry:
    def __init__(self, prefix: str, is_admin: IsAdmin) -> None:
        self.prefix = prefix
        self.is_admin = is_admin
        self._specs: dict[str, CommandSpec] = {}
        self.add(
            CommandSpec("help", self._help, (HelpLine("", "cette aide", "this help"),), Who.ANYONE)
        )

    def add(self, *specs: CommandSpec) -> None:
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"command {spec.name} declared twice")
            self._specs[spec.name] = spec

    async def run(self, command: Command, message: TextMessage, lang: str) -> str:
        """Carry out a command; the notice text to answer with ("" for none)."""
        return (await self.reply(command, message, lang)).text

    async def reply(self, command: Command, message: TextMessage, lang: str) -> Reply:
        """Carry out a command; its notice text ("" for none) and any picture to follow it."""
        spec = self._specs.get(command.name)
        if spec is None:
            return Reply(say(lang, "cmd.unknown", command=command.name[:40], prefix=self.prefix))
        if spec.needs_admin(command) and not await self.is_admin(message.room_id, message.sender):
            return Reply(say(lang, "cmd.not_admin"))
        answer = await spec.handler(command, message, lang)
        return answer if isinstance(answer, Reply) else Reply(answer)

    async def _help(self, command: Command, message: TextMessage, lang: str) -> str:
        return self.help(lang)

    def help(self, lang: str) -> str:
        english = lang == "en"
        colon, admins = (": ", " (admins)") if english else (" : ", " (admins)")
        lines = ["Commands:" if english else "Commandes :"]
        for spec in self._specs.values():
            for line in spec.help:
                args = line.usage_en if english and line.usage_en is not None else line.usage
                usage = f"{self.prefix} {spec.name} {args}".rstrip()
                text = line.en if english else line.fr
                admin = line.admin or spec.who is Who.ADMIN
                lines.append(f"- `{usage}`{colon}{text}{admins if admin else ''}")
        lines.append(say(lang, "cmd.help.footer"))
        return "\n".join(lines)
