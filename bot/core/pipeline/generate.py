"""The generate stage: the model's stream into the reply, through the output filters, with
another model server taking over when one breaks midway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.core.answer_size import AnswerText
from bot.core.pipeline.stages import OutputFilter
from bot.core.streaming import ReplyStream
from bot.llm.client import FAILOVER_KINDS, ChatModel, LLMError, Sampling, StreamResult

log = logging.getLogger(__name__)


@dataclass
class ModelRun:
    """What one answer got from the model."""

    text: AnswerText
    result: StreamResult
    error: LLMError | None = None
    stopped: bool = False  # cut short: nothing more could be shown
    replaced_by: list[str] = field(default_factory=list)  # filters that replaced the text
    halted: bool = False  # a filter replaced the whole answer: the model was stopped


class FilteredText:
    """What a send may show of the answer so far: the output filters read it only when an edit
    is due, so their cost follows the edits, not the tokens."""

    def __init__(self, text: AnswerText, filters: Sequence[OutputFilter], run: ModelRun) -> None:
        self.answer = text
        self.filters = filters
        self.run = run

    def text(self) -> str:
        shown = self.answer.text()
        for output_filter in self.filters:
            verdict = output_filter.streaming(shown)
            shown = verdict.text
            if verdict.replaced and output_filter.name not in self.run.replaced_by:
                self.run.replaced_by.append(output_filter.name)
            if verdict.halt:
                self.run.halted = True
                break
        return shown


class Generator:
    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def run(
        self,
        answer_id: int,
        messages: list[dict[str, str]],
        sampling: Sampling,
        reply: tuple[ReplyStream, asyncio.Event],  # the reply, and a flag raised at first text
        filters: Sequence[OutputFilter] = (),
    ) -> ModelRun:
        """Stream the model's answer into the reply; stop at once when nothing more can be
        shown (too large for one event, or refused by the homeserver)."""
        run = ModelRun(AnswerText(), StreamResult())
        for restart in range(len(self.model.backends)):
            run = ModelRun(AnswerText(), StreamResult())
            await self._stream(run, messages, sampling, reply, filters)
            error = run.error
            if error is not None:
                log.warning("model failed for answer %d: %s", answer_id, error.kind)
            broke_midway = error is not None and error.kind in FAILOVER_KINDS and run.text.size > 0
            if not (broke_midway and self.model.can_fail_over()) or reply[0].refused:
                break
            # another replica answers from the start; the same reply is edited as it goes
            log.info("answer %d restarts on another model server (%d)", answer_id, restart + 1)
        return run

    async def _stream(
        self,
        run: ModelRun,
        messages: list[dict[str, str]],
        sampling: Sampling,
        reply: tuple[ReplyStream, asyncio.Event],
        filters: Sequence[OutputFilter],
    ) -> None:
        stream, text_coming = reply
        view = FilteredText(run.text, filters, run) if filters else run.text
        try:
            # closing the stream drops the request: the model server stops generating
            async with contextlib.aclosing(
                self.model.stream(messages, sampling, run.result)
            ) as deltas:
                async for delta in deltas:
                    run.text.add(delta)
                    if run.text.has_text:
                        if stream.live:  # else typing goes on until the answer is sent
                            text_coming.set()
                        stream.update(view)  # read only when a send is due
                    if run.text.full or stream.overflowed or stream.refused:
                        run.stopped = True
                        break
                    if run.halted:
                        break  # replaced for good: nothing more of the model's is shown
        except LLMError as exc:
            run.error = exc
