"""The moderation backends the configuration lists, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import GuardSettings
from bot.guard.moderation import Moderation
from bot.guard.ports import Moderator
from bot.guard.rules import RulesModerator


@dataclass
class Guard:
    moderation: Moderation
    rules: RulesModerator | None  # checked inline at each streamed edit

    @classmethod
    def build(cls, settings: GuardSettings) -> Guard:
        moderators: list[Moderator] = []
        rules = None
        if "rules" in settings.backends:
            rules = RulesModerator(settings.rules, settings.default_rules)
            moderators.append(rules)
        # the remote backends load an HTTP client: only when configured
        if "llama_guard" in settings.backends:
            from bot.guard.llama_guard import LlamaGuardModerator

            moderators.append(LlamaGuardModerator(settings.llama_guard, settings.timeout_s))
        if "openai" in settings.backends:
            from bot.guard.openai_moderation import OpenAIModerator

            moderators.append(OpenAIModerator(settings.openai, settings.timeout_s))
        return cls(Moderation(settings, moderators), rules)

    async def aclose(self) -> None:
        await self.moderation.aclose()
