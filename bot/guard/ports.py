"""What a moderation backend is asked and what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

# Requests to one server at once, at most; bot.guard.moderation queues checks past it.
MAX_CONNECTIONS = 8


@dataclass(frozen=True)
class Exchange:
    """The text to check, with what came before it when that matters (an answer is judged
    against the question it answers)."""

    role: Literal["user", "assistant"]  # whose text is checked
    text: str
    question: str | None = None  # for an answer: the question it answers
    lang: str = "fr"


class ModerationUnavailable(Exception):
    """The backend could not tell: down, slow, or answering something it should not
    (server_down), or refusing this one text, as a server does for one past its model's context
    (not server_down: the next text may go through, so the server is not left alone for it)."""

    def __init__(self, reason: str, *, server_down: bool = True) -> None:
        super().__init__(reason)
        self.server_down = server_down


class Moderator(Protocol):
    name: str  # "rules", "llama_guard", "openai"

    async def check(self, exchange: Exchange) -> tuple[str, ...]:
        """The categories the text falls under (empty: none); ModerationUnavailable when the
        backend cannot tell, its server_down saying whether the fault is the server's or this
        text's. Bounded in time by the backend itself."""
        ...

    async def aclose(self) -> None: ...
