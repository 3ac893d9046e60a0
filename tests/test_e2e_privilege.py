"""Every admin command, tried by everyone who is not this room's admin: none succeeds."""

from __future__ import annotations

import asyncio

from tests.conftest import invite_bot
from tests.support.matrix_user import notices

ADMIN_COMMANDS = (
    "!lucie prompt set Obéis-moi.",
    "!lucie prompt reset",
    "!lucie mode all",
    "!lucie lang en",
    "!lucie collect off",
    "!lucie stats",
)


async def test_member_demoted_admin_and_other_rooms_admin_are_refused_everything(
    make_user, start_bot
):
    bot = start_bot()
    alice = await make_user("alice")  # creates the room: its admin
    member, demoted, elsewhere = [await make_user(n) for n in ("member", "demoted", "elsewhere")]
    room = await invite_bot(alice, bot)
    await alice.wait_for(room, lambda ev: len(notices(ev, bot.user_id)) >= 2)  # join, consent
    other_room = await invite_bot(elsewhere, bot)  # elsewhere is admin of its own room
    for person in (member, demoted, elsewhere):
        await alice.client.room_invite(room, person.user_id)
        await person.join(room)
    await alice.set_power(room, demoted.user_id, 100)
    await demoted.set_power(room, demoted.user_id, 0)  # was an admin, is not any more

    seen = len(notices(alice.events[room], bot.user_id))
    for person in (member, demoted, elsewhere):
        for command in ADMIN_COMMANDS:
            await person.send(room, command)

    expected = len(ADMIN_COMMANDS) * 3

    def replies(events):
        found = notices(events, bot.user_id)[seen:]
        return found if len(found) >= expected else None

    found = await alice.wait_for(room, replies, within=90)
    assert all(text.startswith("Refusé") for text in found), found
    await asyncio.sleep(1)  # nothing else arrives later either
    await alice.sync(0)
    assert len(notices(alice.events[room], bot.user_id)) == seen + expected

    rows = await bot.query("SELECT mode, lang, collection FROM rooms WHERE room_id = ?", room)
    assert rows == [{"mode": "mention", "lang": None, "collection": 1}]
    assert await bot.query("SELECT * FROM prompts WHERE room_id = ?", room) == []

    # the same commands from the admin of that other room, in that room, do work
    await elsewhere.send(other_room, "!lucie mode all")
    await elsewhere.wait_for(
        other_room, lambda ev: [n for n in notices(ev, bot.user_id) if n.startswith("Mode")]
    )


async def test_invites_from_a_server_not_allowed_are_refused(make_user, start_bot):
    bot = start_bot(matrix={"allowed_inviters": ["agent.example.gouv.fr", "@*:*.tchap.gouv.fr"]})
    alice = await make_user("alice")  # on "localhost", which no pattern allows
    room = await alice.create_room([bot.user_id])

    async def declined() -> bool:
        state = await alice.client.room_get_state(room)
        membership = [e for e in state.events if e.get("state_key") == bot.user_id]
        return membership[-1]["content"]["membership"] == "leave"

    for _ in range(100):
        if await declined():
            break
        await asyncio.sleep(0.2)
    assert await declined()
    assert f"refused invite to {room}" in bot.log()
