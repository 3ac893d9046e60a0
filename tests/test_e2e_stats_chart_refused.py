"""A homeserver that refuses the chart's upload (max_upload_size far below any PNG) costs the
picture only: `!lucie stats` still answers with its text, the refusal is logged, the bot goes on.

A Synapse of its own for this module: the session's one takes uploads of any usual size."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import invite_bot
from tests.support.matrix_user import eventually, final_answer, notices, originals
from tests.support.synapse import Synapse
from tests.test_e2e_stats_chart import voted


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    server = Synapse(tmp_path_factory.mktemp("synapse-small-uploads"))
    server.configure()
    config = yaml.safe_load(server.config_path.read_text())
    config["max_upload_size"] = "100"  # bytes: every chart (some 20 KB) is refused with 413
    server.config_path.write_text(yaml.safe_dump(config))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_refused_upload_keeps_the_text_and_the_bot_goes_on(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    await voted(alice, bot, room)
    seen = len(notices(alice.events[room], bot.user_id))
    await alice.send(room, "!lucie stats")
    stats = await alice.wait_for(
        room, lambda ev: [n for n in notices(ev, bot.user_id)[seen:] if "Statistiques" in n]
    )
    assert "1 réponses" in stats[0] and "👍 1" in stats[0]

    async def logged() -> bool:
        return "could not post a picture" in bot.log()

    assert await eventually(logged)
    assert "M_TOO_LARGE" in bot.log() and "une question" not in bot.log()  # no content logged
    again = await alice.send(room, "Lucie, encore une ?", mentions=[bot.user_id])
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, again), 60)
    said = originals(alice.events[room], bot.user_id)
    assert "m.image" not in [e["content"].get("msgtype") for e in said]
