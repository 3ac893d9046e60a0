"""What flows through the answer pipeline, and the three kinds of stage that can be added."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bot.core.context import Turn
from bot.core.records import AnswerRow, MessageRow, RoomRow
from bot.rag.documents import Found


@dataclass
class AnswerJob:
    """One answer as it goes through the stages; each stage adds what it knows."""

    row: AnswerRow
    question: MessageRow
    room: RoomRow
    lang: str
    is_dm: bool
    system: str = ""  # the system prompt: the operators' policy, then the room's prompt
    prompt_version: int = 0
    policy_sha256: str | None = None
    turns: list[Turn] = field(default_factory=list)  # what the model reads, oldest first
    sources: list[str] = field(default_factory=list)  # context sources that added something
    filters: list[str] = field(default_factory=list)  # filters that looked at it
    # passages given to the model; None where the room uses no documents
    found: list[Found] | None = None
    output_filters: list[OutputFilter] = field(default_factory=list)  # this answer's own


@dataclass(frozen=True)
class Refusal:
    """A request filter's no: why (for the record) and what the person is told."""

    reason: str
    notice: str
    record: str | None = None  # answers.refusal, when the refusal is a guardrail's


@dataclass(frozen=True)
class Verdict:
    """An output filter's word on a text: what may be shown, and whether it replaced it."""

    text: str
    replaced: bool = False
    reason: str | None = None
    # the answer ends here: the model is stopped, and no later filter touches the text
    halt: bool = False


class ContextSource(Protocol):
    name: str

    async def add(self, job: AnswerJob) -> None:
        """Add to what the model will read (job.system, job.turns); record the source's name in
        job.sources when it added something."""
        ...


class RequestFilter(Protocol):
    name: str

    async def check(self, job: AnswerJob) -> Refusal | None: ...


class OutputFilter(Protocol):
    name: str

    def streaming(self, text: str) -> Verdict:
        """At each edit, on the text so far: what may be shown now (a shorter start holds the
        rest back; another text replaces it)."""
        ...

    async def final(self, text: str) -> Verdict: ...
