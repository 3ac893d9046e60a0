"""Joining rooms, what the bot says first, history it never answers, and its Matrix session."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from tests.conftest import invite_bot
from tests.support.matrix_user import answer_to, final_answer, notices, originals


async def test_invites_from_unlisted_users_are_refused(make_user, start_bot):
    alice = await make_user("alice")
    mallory = await make_user("mallory")
    # only alice (and no one else on this server) may invite this bot
    bot = start_bot(matrix={"allowed_inviters": [alice.user_id]})
    refused = await mallory.create_room([bot.user_id])
    room = await invite_bot(alice, bot)
    assert room

    async def left():
        members = await mallory.client.joined_members(refused)
        return bot.user_id not in [m.user_id for m in members.members]

    await asyncio.sleep(2)
    assert await left()
    state = await mallory.client.room_get_state(refused)
    membership = [e for e in state.events if e.get("state_key") == bot.user_id]
    assert membership[-1]["content"]["membership"] == "leave"  # the invite was declined


async def test_english_notice_and_history_before_the_join_is_never_answered(
    make_user, start_bot, llm
):
    bot = start_bot(bot={"default_lang": "en"})
    alice = await make_user("alice")
    room = await alice.create_room([])
    old = await alice.send(room, f"{bot.user_id} did you see this?", mentions=[bot.user_id])
    await asyncio.sleep(1.1)
    await alice.client.room_invite(room, bot.user_id)
    notice = await alice.wait_for(room, lambda ev: notices(ev, bot.user_id), within=60)
    assert "no guarantee" in notice[0] and "👍" in notice[0]
    asked = await alice.send(room, f"{bot.user_id} and now?", mentions=[bot.user_id])
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    assert answer_to(alice.events[room], bot.user_id, old) is None
    assert len(llm.requests) == 1

    llm.stop()
    failing = await alice.send(room, f"{bot.user_id} again?", mentions=[bot.user_id])
    down = await alice.wait_for(
        room, lambda ev: [n for n in notices(ev, bot.user_id) if "cannot be reached" in n]
    )
    assert down and answer_to(alice.events[room], bot.user_id, failing) is None


async def test_expired_token_logs_in_again_on_the_same_device(make_user, start_bot, synapse):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    bot.stop()

    def devices():
        return sorted(
            d["device_id"]
            for d in synapse.request(
                "GET",
                f"/_synapse/admin/v2/users/{quote(bot.user_id)}/devices",
                token=synapse.admin.access_token,
            )["devices"]
        )

    before = devices()
    credentials = bot.data_dir / "credentials.json"
    saved = json.loads(credentials.read_text())
    saved["access_token"] = "syt_expired_token"
    credentials.write_text(json.dumps(saved))
    bot.start()
    asked = await alice.send(room, "Encore là ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), within=60)
    renewed = json.loads(credentials.read_text())
    assert renewed["device_id"] == saved["device_id"]
    assert renewed["access_token"] != "syt_expired_token"
    assert saved["device_id"] in before
    assert devices() == before  # no new device


async def test_homeserver_outage_is_survived_with_backoff(make_user, start_bot, synapse):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    synapse.stop()
    await asyncio.sleep(4)  # several failed syncs
    synapse.start()
    asked = await alice.send(room, "Le serveur est revenu ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), within=60)
    assert bot.process.poll() is None
    assert "sync failed" in bot.log()
    replies = [
        e for e in originals(alice.events[room], bot.user_id) if e["content"]["msgtype"] == "m.text"
    ]
    assert len(replies) == 1
