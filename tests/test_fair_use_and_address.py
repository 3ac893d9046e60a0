"""Per-person limits over a sliding window, and when the bot's name addresses it."""

from __future__ import annotations

from bot.core.events import TextMessage
from bot.core.fair_use import MAX_TRACKED, SlidingLimit
from bot.core.triggers import mentions_bot

BOT = "@lucie:example.org"


def msg(body: str) -> TextMessage:
    return TextMessage("!r", "$e", "@a:x", 1, "m.text", body, None, None, None, None, False)


def test_the_name_addresses_the_bot_only_as_a_salutation_or_an_at_mention():
    addressed = ("Lucie, quelle heure ?", "Lucie : et demain ?", "  lucie! vite", "Lucie ?",
                 "@Lucie quelle heure ?", "Dis @lucie, tu sais ?", "Lucie — oui")  # fmt: skip
    for body in addressed:
        assert mentions_bot(msg(body), BOT, "Lucie"), body
    about = ("J'ai vu Lucie hier à la réunion", "Lucie est partie en congés", "Merci Lucie",
             "Lucie Martin arrive", "@Lucienne, bonjour", "Lucienne, oui")  # fmt: skip
    for body in about:
        assert not mentions_bot(msg(body), BOT, "Lucie"), body


def test_a_person_gets_the_limit_then_one_refusal_notice_per_window():
    limit = SlidingLimit(2, window_s=60)
    assert limit.take("@a:x", now=0).allowed and limit.take("@a:x", now=1).allowed
    refused = limit.take("@a:x", now=2)
    assert not refused.allowed and refused.first_refusal and refused.retry_after_s == 58
    again = limit.take("@a:x", now=3)
    assert not again.allowed and not again.first_refusal  # told once, then silence
    assert limit.take("@b:x", now=3).allowed  # others keep their share
    assert limit.take("@a:x", now=60).allowed  # the first question left the window
    assert SlidingLimit(0, 60).take("@a:x").allowed  # 0: no limit


def test_many_senders_do_not_grow_memory_without_bound():
    limit = SlidingLimit(1, window_s=3600)
    for n in range(MAX_TRACKED + 50):
        limit.take(f"@p{n}:x", now=float(n))
    assert len(limit._events) == MAX_TRACKED
