"""An OpenAI-compatible /v1/moderations endpoint (OpenAI itself, a LiteLLM proxy…).

Only the checked text is sent: the endpoint judges one text alone, and an answer must not be
flagged for the question it answers. Categories keep the server's names ("violence/graphic")."""

from __future__ import annotations

from typing import Any

import httpx

from bot.config import OpenAIModerationSettings
from bot.guard.categories import UNKNOWN, clean_code
from bot.guard.ports import Exchange, ModerationUnavailable
from bot.guard.remote import RemoteModerator, bounded

MAX_CATEGORIES = 64  # OpenAI's models name 13


def flagged_categories(answer: Any) -> tuple[str, ...]:
    """The true categories of the first result, sorted, when it is flagged; () when not."""
    results = answer.get("results") if isinstance(answer, dict) else None
    result = results[0] if isinstance(results, list) and results else None
    if not isinstance(result, dict):
        raise ModerationUnavailable("answer has no result")
    flagged, categories = result.get("flagged"), result.get("categories")
    if not isinstance(flagged, bool) or not isinstance(categories, dict):
        raise ModerationUnavailable("result without flagged and categories")
    # None as some proxies write for a category their model does not cover
    if len(categories) > MAX_CATEGORIES or not all(
        value is None or isinstance(value, bool) for value in categories.values()
    ):
        raise ModerationUnavailable("malformed categories")
    if not flagged:
        return ()
    names = {clean_code(name) for name, value in categories.items() if value}
    return tuple(sorted(names)) or (UNKNOWN,)


class OpenAIModerator(RemoteModerator):
    """A Moderator asking a /v1/moderations endpoint; each check is one bounded request."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAIModerationSettings,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, key = settings.url, settings.api_key
        super().__init__(url, "moderations", key, timeout_s, transport, "guard.openai.url")
        self.settings = settings

    async def check(self, exchange: Exchange) -> tuple[str, ...]:
        body = {"model": self.settings.model, "input": bounded(exchange.text)}
        return flagged_categories(await self.ask(body))
