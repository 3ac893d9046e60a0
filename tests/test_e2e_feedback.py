"""👍/👎 on the bot's answers are stored, emoji variants alike, and withdrawn by redaction."""

from __future__ import annotations

from tests.conftest import invite_bot
from tests.support.matrix_user import answer_to, eventually, final_answer


async def test_votes_stored_variants_normalised_and_redaction_withdraws(make_user, start_bot):
    bot = start_bot()
    alice = await make_user("alice")
    bob = await make_user("bob")
    room = await invite_bot(alice, bot)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    asked = await alice.send(room, "Lucie, une blague ?", mentions=[bot.user_id])
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    answer = answer_to(alice.events[room], bot.user_id, asked)["event_id"]

    up_web = await alice.react(room, answer, "\U0001f44d\ufe0f")  # Element Web, Tchap
    down_tone = await bob.react(room, answer, "\U0001f44e\U0001f3fd")  # skin tone
    await alice.react(room, asked, "\U0001f44d")  # on a question: not a vote
    await bob.react(room, answer, "\U0001f389")  # not a vote key

    async def votes():
        rows = await bot.query(
            "SELECT reaction_event_id, sender, vote, withdrawn_at, answer_event_id, ts FROM votes"
        )
        return rows if len(rows) == 2 else None

    rows = {r["reaction_event_id"]: r for r in await eventually(votes)}
    assert rows[up_web]["vote"] == "up" and rows[up_web]["sender"] == alice.user_id
    assert rows[down_tone]["vote"] == "down" and rows[down_tone]["sender"] == bob.user_id
    assert {r["answer_event_id"] for r in rows.values()} == {answer}
    assert all(r["ts"] > 0 and r["withdrawn_at"] is None for r in rows.values())

    await bob.redact(room, down_tone)

    async def withdrawn():
        rows = await bot.query(
            "SELECT withdrawn_at FROM votes WHERE reaction_event_id = ?", down_tone
        )
        return rows[0]["withdrawn_at"]

    assert await eventually(withdrawn)
    still = await bot.query("SELECT withdrawn_at FROM votes WHERE reaction_event_id = ?", up_web)
    assert still[0]["withdrawn_at"] is None
