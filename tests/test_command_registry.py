"""Commands declared once: help comes from the declarations, admin checks happen before any
handler runs, and a name cannot be declared twice."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.core.command_registry import CommandRegistry, CommandSpec, HelpLine, Who, parse_command
from bot.core.commands import RoomCommands
from bot.core.data_commands import DataCommands
from bot.core.events import TextMessage
from bot.texts import PromptTexts


def message(sender: str, body: str) -> TextMessage:
    return TextMessage("!r", "$e", sender, 1, "m.text", body, None, None, None, (), False)


async def admins_only(room_id: str, user_id: str) -> bool:
    return user_id == "@admin:x"


def registry(ran: list[str]) -> CommandRegistry:
    async def handler(command, message, lang) -> str:
        ran.append(command.name + (f" {command.action}" if command.action else ""))
        return "done"

    commands = CommandRegistry("!lucie", admins_only)
    commands.add(
        CommandSpec("open", handler, (HelpLine("", "ouvert", "open"),)),
        CommandSpec("closed", handler, (HelpLine("", "fermé", "closed"),), Who.ADMIN),
        CommandSpec(
            "mixed",
            handler,
            (HelpLine("show", "voir", "show"), HelpLine("set", "changer", "change", True)),
            admin_actions=frozenset({"set"}),
        ),
    )
    return commands


async def test_admin_checks_run_before_any_handler():
    ran: list[str] = []
    commands = registry(ran)

    async def run(sender: str, body: str) -> str:
        command = parse_command(body, "!lucie")
        assert command is not None
        return await commands.run(command, message(sender, body), "en")

    assert await run("@member:x", "!lucie open") == "done"
    assert (await run("@member:x", "!lucie closed")).startswith("Refused")
    assert await run("@member:x", "!lucie mixed show") == "done"
    assert (await run("@member:x", "!lucie mixed set x")).startswith("Refused")
    assert await run("@admin:x", "!lucie mixed set x") == "done"
    assert (await run("@member:x", "!lucie nope")).startswith("Unknown command")
    assert ran == ["open", "mixed show", "mixed set"]


def test_help_is_generated_from_the_declarations_in_both_languages():
    commands = registry([])
    english, french = commands.help("en"), commands.help("fr")
    assert english.startswith("Commands:") and french.startswith("Commandes :")
    assert "- `!lucie closed`: closed (admins)" in english
    assert "- `!lucie mixed set` : changer (admins)" in french
    assert "- `!lucie mixed show` : voir\n" in french
    assert english.endswith("Vote on answers with 👍 or 👎.")
    with pytest.raises(ValueError, match="twice"):
        commands.add(CommandSpec("open", commands._help, ()))


def test_every_real_command_has_help_in_both_languages(tmp_path):
    commands = CommandRegistry("!lucie", admins_only)
    commands.add(*RoomCommands("!lucie", None, PromptTexts(None)).specs())  # type: ignore[arg-type]
    nothing = SimpleNamespace(feedback=None, erasure=None, rooms=None, conversations=None)
    commands.add(*DataCommands(None, nothing, None).specs())  # type: ignore[arg-type]
    for name in ("help", "prompt", "mode", "lang", "reset", "consent", "forget", "correct",
                 "retry", "stats", "collect"):  # fmt: skip
        assert f"`!lucie {name}" in commands.help("fr") and f"`!lucie {name}" in commands.help("en")
    assert "- `!lucie prompt set <texte>` : changer les consignes (admins)" in commands.help("fr")
    assert "- `!lucie prompt set <text>`: change the instructions (admins)" in commands.help("en")
