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
    start, end = say(lang, "guard.room_section"), say(lang, "guard.room_section_end")
    return f"{policy}\n\n{start}\n\n{_plain(room_prompt)}\n\n{end}"


def _plain(room_prompt: str) -> str:
    """The room's prompt without headings of its own: a heading there could pass for a new
    section of the operators' rules."""
    return "\n".join(line.lstrip().lstrip("#").lstrip() if line.lstrip().startswith("#") else line
                     for line in room_prompt.split("\n"))  # fmt: skip


def policy_sha256(policy: str) -> str:
    return hashlib.sha256(policy.encode()).hexdigest()
