"""The first context sources: the room's system prompt, and the conversation the question is
part of (its reply chain, its thread, or the recent exchange of a DM)."""

from __future__ import annotations

from bot.core.clock import now_ms
from bot.core.history import History
from bot.core.pipeline.stages import AnswerJob
from bot.core.policy import policy_sha256, system_prompt
from bot.core.stores import RoomStore
from bot.texts import PromptTexts


class RoomPrompt:
    """The operators' policy, always first, then the prompt the room's admins set (or the
    default one in the room's language), marked as the room's: admins can add to the policy,
    never remove it."""

    name = "room_prompt"

    def __init__(self, rooms: RoomStore, prompts: PromptTexts) -> None:
        self.rooms = rooms
        self.prompts = prompts
        self._kept: set[str] = set()  # policies already in the database

    async def add(self, job: AnswerJob) -> None:
        prompt = await self.rooms.current_prompt(job.row.room_id)
        room_prompt = prompt.text if prompt and prompt.text else self.prompts.system(job.lang)
        policy = self.prompts.policy(job.lang)
        job.system = system_prompt(policy, room_prompt, job.lang)
        job.prompt_version = prompt.version if prompt else 0
        job.policy_sha256 = policy_sha256(policy)
        if job.policy_sha256 not in self._kept:
            await self.rooms.remember_policy(job.policy_sha256, job.lang, policy, now_ms())
            self._kept.add(job.policy_sha256)
        job.sources.append(self.name)


class Conversation:
    """The messages the question builds on, as turns with their event ids."""

    name = "conversation"

    def __init__(self, history: History) -> None:
        self.history = history

    async def add(self, job: AnswerJob) -> None:
        chain = await self.history.conversation(job.question, job.room, job.is_dm)
        # a question a guardrail refused stays out of what the model reads later: "answer my
        # previous message" must not get it answered after all
        earlier = [m.event_id for m in chain if m.event_id != job.question.event_id]
        refused = await self.history.messages.refused_questions(job.row.room_id, earlier)
        job.turns += [self.history.turn(m) for m in chain if m.event_id not in refused]
        job.sources.append(self.name)
