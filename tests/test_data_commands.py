"""Statistics per prompt version: room admins see their room, operators every room."""

from __future__ import annotations

from bot.config import MatrixSettings, Settings
from bot.core.command_registry import CommandRegistry, parse_command
from bot.core.data_commands import DataCommands
from bot.core.events import TextMessage
from bot.storage.store import Store


def message(room_id: str, sender: str, body: str) -> TextMessage:
    return TextMessage(room_id, "$cmd", sender, 1, "m.text", body, None, None, None, (), False)


async def test_stats_per_prompt_version_for_admins_and_operators(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    settings = Settings(
        matrix=MatrixSettings(homeserver="http://h", user_id="@bot:x", password="p"),
        bot={"operators": ["@ops:x"]},
    )

    async def admin(room_id: str, user_id: str) -> bool:
        return user_id in ("@admin:x", "@ops:x")

    async def regenerate(answer, requester) -> str:
        raise AssertionError("not used here")

    commands = CommandRegistry("!lucie", admin)
    commands.add(*DataCommands(settings, store, regenerate).specs())
    try:
        for n, (room, version, votes) in enumerate(
            [("!a", 0, ["up", "up", "down"]), ("!a", 1, ["up"]), ("!b", 0, ["down"])]
        ):
            await store.conversations.queue_answer(room, f"$q{n}", 1, None, 1)
            row = await store.conversations.answer_for_question(room, f"$q{n}")
            await store.conversations.update_answer(
                row.id, answer_event_id=f"$a{n}", status="complete", prompt_version=version
            )
            for k, vote in enumerate(votes):
                await store.feedback.add_vote(f"$v{n}{k}", f"$a{n}", room, f"@p{k}:x", vote, "x", 2)
        await store.feedback.add_correction("$c", "$a0", "!a", "@p9:x", "better", 3)

        stats = parse_command("!lucie stats", "!lucie")
        room_view = await commands.run(stats, message("!a", "@admin:x", "!lucie stats"), "en")
        assert "prompt v0: 1 answers, 👍 2 / 👎 1 (67 %), 1 corrections" in room_view
        assert "prompt v1: 1 answers, 👍 1 / 👎 0 (100 %)" in room_view
        assert "!b" not in room_view and "!a" not in room_view
        everywhere = await commands.run(stats, message("!a", "@ops:x", "!lucie stats"), "en")
        assert "!a prompt v0" in everywhere and "!b prompt v0: 1 answers, 👍 0 / 👎 1" in everywhere
        refused = await commands.run(stats, message("!a", "@member:x", "!lucie stats"), "en")
        assert refused.startswith("Refused")
    finally:
        await store.close()
