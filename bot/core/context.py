"""What the model sees: the system prompt, then the conversation, under a token budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core.triggers import strip_bot_name

TokenCounter = Callable[[list[dict[str, str]]], Awaitable[int]]


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str
    speaker: str | None = None  # shown to the model in group rooms
    event_id: str | None = None  # the message it comes from


class Said(Protocol):
    """A stored message, as far as the model's view of it goes."""

    @property
    def body(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def sender_name(self) -> str | None: ...
    @property
    def from_bot(self) -> bool: ...
    @property
    def event_id(self) -> str: ...


def conversation_turn(message: Said, bot_id: str, bot_name: str | None) -> Turn:
    """How the model reads a message: the bot's own as its turns, people's without the bot's
    name in front. Answering and export both build turns here, so that what is exported is
    what the model read."""
    if message.from_bot:
        return Turn("assistant", message.body, event_id=message.event_id)
    body = strip_bot_name(message.body, bot_id, bot_name)
    speaker = message.sender_name or message.sender
    return Turn("user", body, speaker=speaker, event_id=message.event_id)


def to_messages(
    system_prompt: str | None, turns: Sequence[Turn], name_speakers: bool
) -> list[dict[str, str]]:
    """The chat messages for a system prompt (none: left out) and turns; in group rooms each
    person's turn starts with their name."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages += [_message(turn, name_speakers) for turn in turns]
    return _merge_same_roles(messages)


def _message(turn: Turn, name_speakers: bool) -> dict[str, str]:
    content = turn.content
    if name_speakers and turn.role == "user" and turn.speaker:
        content = f"{turn.speaker}: {content}"
    return {"role": turn.role, "content": content}


async def fit_turns(
    system_prompt: str, turns: Sequence[Turn], name_speakers: bool, budget: int, count: TokenCounter
) -> tuple[list[Turn], list[dict[str, str]]]:
    """The newest turns that fit the budget with the system prompt, and the messages they make.

    Counted turn by turn (as fit_to_budget counts messages), so that the turns kept, and so the
    record of what the model read, are known exactly."""
    single = [{"role": "system", "content": system_prompt}]
    single += [_message(turn, name_speakers) for turn in turns]
    if _surely_fits(single, budget):
        return list(turns), to_messages(system_prompt, turns, name_speakers)
    kept_messages, _ = await fit_to_budget(single, budget, count)
    kept = list(turns[len(turns) - (len(kept_messages) - 1) :]) if turns else []
    return kept, to_messages(system_prompt, kept, name_speakers)


# a chat template's header per message, counted generously
HEADER_TOKENS = 8


def _surely_fits(messages: list[dict[str, str]], budget: int) -> bool:
    """Byte-level tokenizers (Llama 3's, Lucie's) never make more tokens than UTF-8 bytes, so a
    prompt whose bytes fit needs no counting: most do, and counting asks the model server."""
    size = sum(len(m["content"].encode()) + HEADER_TOKENS for m in messages)
    return size <= budget


def _merge_same_roles(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Chat templates (Lucie's included) expect user and assistant to alternate."""
    merged: list[dict[str, str]] = []
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
    sizes = list(await asyncio.gather(*(count([message]) for message in messages)))
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
