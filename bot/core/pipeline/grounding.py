"""The grounding stage: passages from the room's documents and collections, given to the model
inside its budget, set apart from instructions; the answer's citations checked against them and
its sources listed at the end; what was given recorded with the answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.config import RagSettings
from bot.core.context import TokenCounter
from bot.core.pipeline.stages import AnswerJob, Verdict
from bot.rag.citations import (
    cited_numbers,
    drop_unknown_citations,
    not_covered,
    sources_block,
    sources_footer,
    with_sources,
)
from bot.rag.documents import Found, Scope
from bot.rag.ports import DocumentStore, Retriever

log = logging.getLogger(__name__)
SHORT_QUESTION_CHARS = 40  # a follow-up this short is searched with the turn before it


class Citations:
    """An output filter made for one answer: citations of sources it was not given go, and its
    sources (or the documents' silence) are added at the end."""

    name = "citations"

    def __init__(self, found: Sequence[Found], lang: str) -> None:
        self.found = found
        self.lang = lang
        self.cited: set[int] = set()

    def streaming(self, text: str) -> Verdict:
        return Verdict(drop_unknown_citations(text, len(self.found)))

    async def final(self, text: str) -> Verdict:
        if not text.strip():
            return Verdict(text)
        clean = drop_unknown_citations(text, len(self.found))
        if not self.found:
            return Verdict(clean + not_covered(self.lang))
        self.cited = cited_numbers(clean, len(self.found))
        return Verdict(clean + sources_footer(self.found, self.cited, self.lang))


class Grounding:
    """A context source: searches when the room has documents or uses a collection."""

    name = "documents"

    def __init__(self, settings: RagSettings, store: DocumentStore, retriever: Retriever) -> None:
        self.settings = settings
        self.store = store
        self.retriever = retriever

    async def add(self, job: AnswerJob) -> None:
        if not self.settings.enabled:
            return
        room_id = job.row.room_id
        collections = await self.store.room_collections(room_id, self.settings.collections)
        if not collections and not await self.store.has_documents(room_id):
            return
        scope = Scope(room_id, tuple(collections))
        job.found = await self.retriever.search(self._query(job), scope, self.settings.top_k)
        job.sources.append(self.name)

    @staticmethod
    def _query(job: AnswerJob) -> str:
        question = job.turns[-1].content if job.turns else job.question.body
        if len(question) < SHORT_QUESTION_CHARS:
            earlier = [t.content for t in job.turns[:-1] if t.role == "user"]
            if earlier:
                return f"{earlier[-1]}\n{question}"
        return question

    async def fit(self, job: AnswerJob, budget: int, count: TokenCounter) -> int:
        """Keep the best passages that fit the sources' share of the budget; the tokens they
        take, which the conversation does without."""
        assert job.found is not None
        share = int(budget * self.settings.sources_share)
        found = list(job.found)
        while True:
            block = [{"role": "user", "content": sources_block(found, job.lang)}]
            size = len(block[0]["content"].encode())  # bytes bound tokens: no count needed
            if size > share:
                size = await count(block)
            if size <= share or not found:
                break
            found.pop()
        job.found = found
        job.output_filters.append(Citations(found, job.lang))
        return size

    @staticmethod
    def into_messages(job: AnswerJob, messages: list[dict[str, str]]) -> None:
        """The sources go before the question, in the person's turn: they are data, as the
        question is, never part of the system prompt's instructions."""
        assert job.found is not None
        last = messages[-1]
        block = sources_block(job.found, job.lang)
        messages[-1] = {"role": last["role"], "content": with_sources(last["content"], block,
                                                                      job.lang)}  # fmt: skip

    async def given(self, job: AnswerJob) -> None:
        """Recorded with the request, before the model answers."""
        if job.found is not None:
            await self.store.record_sources(job.row.id, job.found)

    async def record(self, job: AnswerJob) -> None:
        """Which sources the answer cites, once it is over."""
        if not job.found:
            return
        for output_filter in job.output_filters:
            if isinstance(output_filter, Citations) and output_filter.cited:
                await self.store.mark_cited(job.row.id, output_filter.cited)
