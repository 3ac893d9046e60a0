"""`docs use|unuse`: room admins choose among the collections operators opened to them; any
other collection only an operator opens to a room."""

from __future__ import annotations

from bot.config import MatrixSettings, Settings
from bot.core.command_registry import CommandRegistry, parse_command
from bot.core.doc_commands import DocCommands
from bot.core.events import TextMessage
from bot.storage.store import Store


def message(room_id: str, sender: str, body: str) -> TextMessage:
    return TextMessage(room_id, "$cmd", sender, 1, "m.text", body, None, None, None, (), False)


async def test_room_admins_open_only_the_collections_operators_opened(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    settings = Settings(
        matrix=MatrixSettings(homeserver="http://h", user_id="@bot:x", password="p"),
        bot={"operators": ["@ops:x"]},
        rag={"collections": ["guide"], "open_collections": ["fiches"]},
    )

    async def admin(room_id: str, user_id: str) -> bool:
        return user_id in ("@admin:x", "@ops:x")

    commands = CommandRegistry("!lucie", admin)
    stores = (store.documents, store.conversations)
    commands.add(*DocCommands(settings, None, stores, admin).specs())  # type: ignore[arg-type]

    async def run(sender: str, text: str) -> str:
        command = parse_command(text, "!lucie")
        assert command is not None
        return await commands.run(command, message("!r", sender, text), "en")

    try:
        for name in ("guide", "fiches", "interieur"):
            await store.documents.ensure_collection(name, exportable=False, now=1)
        assert "no longer uses" in await run("@admin:x", "!lucie docs unuse guide")
        assert "now uses" in await run("@admin:x", "!lucie docs use guide")
        assert "now uses" in await run("@admin:x", "!lucie docs use fiches")
        refused = await run("@admin:x", "!lucie docs use interieur")
        assert refused.startswith("Refused: only the bot's operators")
        assert await store.documents.room_collections("!r", ["guide"]) == ["guide", "fiches"]
        assert (await run("@member:x", "!lucie docs use fiches")).startswith("Refused")
        assert "now uses" in await run("@ops:x", "!lucie docs use interieur")
        assert "interieur" in await store.documents.room_collections("!r", ["guide"])
    finally:
        await store.close()
