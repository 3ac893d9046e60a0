"""The token budget: whole turns kept, newest first; a prompt that surely fits is not counted."""

from __future__ import annotations

from bot.core.context import Turn, fit_turns


async def test_a_prompt_that_surely_fits_asks_no_count_and_a_long_one_keeps_the_newest_turns():
    asked: list[int] = []

    async def count(messages: list[dict[str, str]]) -> int:
        asked.append(len(messages))
        return sum(len(m["content"].split()) for m in messages)

    turns = [Turn("user", f"question {n} " + "mot " * 30, event_id=f"$q{n}") for n in range(5)]
    kept, messages = await fit_turns("Sois brève.", turns, False, 4096, count)
    assert kept == turns and asked == []  # 5 short turns: no request to the model server
    kept, messages = await fit_turns("Sois brève.", turns, False, 70, count)
    assert [t.event_id for t in kept] == ["$q3", "$q4"] and asked
    assert messages[0]["content"] == "Sois brève." and len(messages) == 2  # user turns merged
