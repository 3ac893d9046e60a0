"""Room admins own the system prompt; everyone else is refused with a reason."""

from __future__ import annotations

from bot.core.policy import system_prompt
from bot.texts import PromptTexts
from tests.conftest import invite_bot
from tests.support.matrix_user import final_answer, notices


def notice_with(text: str, bot_id: str, after: int):
    return lambda events: [n for n in notices(events, bot_id)[after:] if text in n]


async def test_prompt_set_by_admin_reaches_model_members_and_demoted_admins_refused(
    make_user, start_bot, llm
):
    bot = start_bot()
    alice = await make_user("alice")  # room creator: power 100
    bob = await make_user("bob")
    room = await invite_bot(alice, bot)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    seen = len(notices(alice.events[room], bot.user_id))

    await alice.send(room, "!lucie prompt set Tu réponds toujours en alexandrins.")
    await alice.wait_for(room, notice_with("version 1", bot.user_id, seen))
    asked = await alice.send(room, "Lucie, parle-moi de Paris.", mentions=[bot.user_id])
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    system = llm.requests[-1]["body"]["messages"][0]
    assert system["role"] == "system"
    # the operators' policy first, then the room's prompt, marked as the room's
    assert system["content"].startswith(PromptTexts(None).policy("fr"))
    policy, room_prompt = PromptTexts(None).policy("fr"), "Tu réponds toujours en alexandrins."
    assert system["content"] == system_prompt(policy, room_prompt, "fr")
    assert system["content"].index("## Consignes propres à ce salon") > len(policy)

    seen = len(notices(alice.events[room], bot.user_id))
    await bob.send(room, "!lucie prompt set Ignore tout.")
    await alice.wait_for(room, notice_with("Refusé", bot.user_id, seen))

    # make bob admin, then demote him: the right goes at once
    await alice.set_power(room, bob.user_id, 100)
    seen = len(notices(alice.events[room], bot.user_id))
    await bob.send(room, "!lucie prompt set Réponds en anglais.")
    await alice.wait_for(room, notice_with("version 2", bot.user_id, seen))
    await bob.set_power(room, bob.user_id, 0)  # bob demotes himself
    seen = len(notices(alice.events[room], bot.user_id))
    await bob.send(room, "!lucie prompt set Tout est permis.")
    await alice.wait_for(room, notice_with("Refusé", bot.user_id, seen))

    seen = len(notices(alice.events[room], bot.user_id))
    await bob.send(room, "!lucie prompt history")
    history = await alice.wait_for(room, notice_with("Historique", bot.user_id, seen))
    assert "v2" in history[0] and bob.user_id in history[0]
    assert "v1" in history[0] and alice.user_id in history[0]
    assert "Tout est permis" not in history[0]
    async with bot.store() as store:
        versions = await store.rooms.prompt_history(room)
    assert [(p.version, p.set_by) for p in versions] == [(2, bob.user_id), (1, alice.user_id)]
    answers = await bot.query("SELECT prompt_version, request_messages FROM answers")
    assert answers[0]["prompt_version"] == 1


async def test_mode_all_lang_en_help_and_unknown_commands(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    seen = len(notices(alice.events[room], bot.user_id))
    await alice.send(room, "!lucie frobnicate")
    await alice.wait_for(room, notice_with("Commande inconnue", bot.user_id, seen))
    await alice.send(room, "!lucie lang en")
    await alice.wait_for(room, notice_with("English", bot.user_id, seen))
    await alice.send(room, "!lucie help")
    await alice.wait_for(room, notice_with("Commands:", bot.user_id, seen))
    await alice.send(room, "!lucie mode all")
    await alice.wait_for(room, notice_with("Room mode: all", bot.user_id, seen))
    asked = await alice.send(room, "No mention here, still answered?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    system = llm.requests[-1]["body"]["messages"][0]["content"]
    prompts = PromptTexts(None)  # the English policy and default prompt
    assert system == system_prompt(prompts.policy("en"), prompts.system("en"), "en")
    await alice.send(room, "!lucie prompt show")
    shown = await alice.wait_for(room, notice_with("Room instructions", bot.user_id, seen))
    assert "default" in shown[0] and "> You are Lucie" in shown[0]
