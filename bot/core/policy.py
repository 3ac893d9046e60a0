"""The system prompt as the model reads it: the operators' policy first, then the room's own
instructions, marked as the room's. Answering and export both build it here, so that what is
exported is what the model read."""

from __future__ import annotations

import hashlib

from bot.texts import say


def system_prompt(policy: str | None, room_prompt: str | None, lang: str) -> str:
    """policy None: an answer from before policies existed, which read the room's prompt alone."""
    if policy is None:
        return room_prompt or ""
    if not room_prompt:
        return policy
    return f"{policy}\n\n{say(lang, 'guard.room_section')}\n\n{room_prompt}"


def policy_sha256(policy: str) -> str:
    return hashlib.sha256(policy.encode()).hexdigest()
