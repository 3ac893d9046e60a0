"""The bot as it runs (a real process, real Synapse) forwarding feedback to a team's webhook."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from bot.webhook.payload import webhook_pseudonyms
from tests.conftest import invite_bot
from tests.support.bot_process import BotProcess
from tests.support.matrix_user import answer_to, eventually, final_answer
from tests.test_webhook import HOOK_SECRET, Receiver, arrived

UP_WEB, DOWN = "\U0001f44d\ufe0f", "\U0001f44e"


def with_webhook(bot: BotProcess, url: str) -> None:
    config = tomllib.loads(bot.config_path.read_text(encoding="utf-8"))
    config["webhook"] = {"url": url, "secret": HOOK_SECRET, "max_backoff_s": 0.5}
    bot.config_path.write_text(tomli_w.dumps(config), encoding="utf-8")


async def test_a_vote_and_a_correction_reach_the_webhook_signed_and_pseudonymous(
    make_user, synapse, llm, tmp_path: Path
):
    receiver = await Receiver().start()  # checks every signature; a forged one is counted
    bot = BotProcess(tmp_path / "bot", synapse, synapse.new_user("lucie", exempt=True), llm)
    with_webhook(bot, receiver.url)
    bot.start()
    try:
        alice = await make_user("alice")
        bob = await make_user("bob")  # never consents
        room = await invite_bot(alice, bot)
        await alice.client.room_invite(room, bob.user_id)
        await bob.join(room)
        await alice.send(room, "!lucie consent yes")

        async def consented():
            return await bot.query("SELECT 1 FROM consents WHERE user_id = ?", alice.user_id)

        await eventually(consented)
        asked = await alice.send(room, "Lucie, une blague ?", mentions=[bot.user_id])
        await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
        answer = answer_to(alice.events[room], bot.user_id, asked)["event_id"]

        await bob.react(room, answer, DOWN)  # stored, never forwarded
        await alice.react(room, answer, UP_WEB)
        await alice.send(room, "!lucie correct Une meilleure blague.", reply_to=answer)
        events = await arrived(receiver, 2)

        async def bob_voted():
            return await bot.query("SELECT 1 FROM votes WHERE sender = ?", bob.user_id)

        assert await eventually(bob_voted)
    finally:
        bot.stop()
        await receiver.stop()
    assert [(e["kind"], e["value"]) for e in events] == [("vote", "up"), ("correction", None)]
    assert events[1]["text"] == "Une meilleure blague."
    ids = webhook_pseudonyms("test-pseudonym-secret-long-enough-for-hmac")  # BotProcess's
    assert {e["person"] for e in events} == {ids.of("user", alice.user_id)}
    assert {e["answer"] for e in events} == {ids.of("msg", answer)}
    assert {e["room"] for e in events} == {ids.of("room", room)}
    assert all(e["model"] == "stand-in" for e in events)
    assert len(receiver.requests) == 2 and receiver.forged == 0  # bob's 👎 never left
    sent = str(receiver.requests)
    assert alice.user_id not in sent and bob.user_id not in sent and room not in sent
    assert "alice" not in sent  # nor a display name
