"""What the model sees: the system prompt, then the conversation, under a token budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

TokenCounter = Callable[[list[dict[str, str]]], Awaitable[int]]


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str
    speaker: str | None = None  # shown to the model in group rooms


def to_messages(system_prompt: str, turns: Sequence[Turn], name_speakers: bool) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}]
    for turn in turns:
        content = turn.content
        if name_speakers and turn.role == "user" and turn.speaker:
            content = f"{turn.speaker}: {content}"
        messages.append({"role": turn.role, "content": content})
    return _merge_same_roles(messages)


def _merge_same_roles(messages: list[dict]) -> list[dict]:
    """Chat templates (Lucie's included) expect user and assistant to alternate."""
    merged: list[dict] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"] != "system":
            merged[-1] = {
                "role": message["role"],
                "content": merged[-1]["content"] + "\n\n" + message["content"],
            }
        else:
            merged.append(message)
    return merged


async def fit_to_budget(
    messages: list[dict[str, str]], budget: int, count: TokenCounter
) -> tuple[list[dict[str, str]], int]:
    """Drop the oldest turns until the prompt fits; the system prompt and the newest question stay.

    Returns the messages and their token count (which can exceed the budget when those two alone
    do: the server then says so and the user is told).
    """
    sizes = [await count([message]) for message in messages]
    system, turns, turn_sizes = messages[:1], messages[1:], sizes[1:]
    total = sizes[0] + sum(turn_sizes)
    while total > budget and len(turns) > 1:
        total -= turn_sizes.pop(0)
        turns.pop(0)
    while turns and turns[0]["role"] == "assistant" and len(turns) > 1:
        # a conversation should start with the person, not with an orphan answer
        total -= turn_sizes.pop(0)
        turns.pop(0)
    return system + turns, total
