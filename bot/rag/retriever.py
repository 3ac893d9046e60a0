"""Hybrid retrieval: BM25 over the analysed terms and, when an embeddings server is set, the
nearest vectors, fused by reciprocal rank and optionally reranked by a cross-encoder.

A model server is a help, never a need: when the embeddings or rerank server fails, the search
carries on with what is left (BM25 alone at worst) and leaves that server alone for a while, so
that a hung server does not cost every question its timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time

from bot.config import RagSettings
from bot.rag.analysis import query_terms
from bot.rag.documents import Found, Scope
from bot.rag.embeddings import EmbeddingsError
from bot.rag.fusion import reciprocal_rank_fusion
from bot.rag.ports import DocumentStore, Embedder, Reranker
from bot.rag.vectors import VectorCache

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 4000  # a question's words beyond this add nothing to a search
PAUSE_AFTER_FAILURE_S = 30.0


def _in_scope(found: Found, scope: Scope) -> bool:
    if found.collection is not None:
        return found.collection in scope.collections
    return scope.room_id is not None and found.room_id == scope.room_id


class _Breaker:
    """Remembers a server's failure, to skip it for a while."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.until = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self.until

    def failed(self, exc: Exception) -> None:
        self.until = time.monotonic() + PAUSE_AFTER_FAILURE_S
        # the error names the server and the kind of failure, never the question
        log.warning(
            "%s server failed (%s): searching without it for %.0f s",
            self.what,
            exc,
            PAUSE_AFTER_FAILURE_S,
        )


class HybridRetriever:
    def __init__(
        self,
        store: DocumentStore,
        settings: RagSettings,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        vectors: VectorCache | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.embedder = embedder
        self.reranker = reranker
        self.vectors = vectors or VectorCache()
        self._embeddings = _Breaker("embeddings")
        self._rerank = _Breaker("rerank")

    async def search(self, query: str, scope: Scope, k: int) -> list[Found]:
        """The k passages of the scope that best answer the query; [] when none is relevant."""
        query = query[:MAX_QUERY_CHARS]
        if k <= 0 or not query.strip():
            return []
        limit = self.settings.candidates
        # the dense search first: its quick reads then go before the full-text query on the
        # database's thread, and its matrix product overlaps that query
        dense, lexical = await asyncio.gather(
            self._dense(query, scope, limit),
            self.store.lexical(query_terms(query), scope, limit),
        )
        fused = reciprocal_rank_fusion([lexical, [pid for pid, _ in dense]])[:limit]
        if not fused:
            return []
        rows = await self.store.found([pid for pid, _ in fused])
        # the store's queries name the scope already; this makes a leak impossible twice
        ranked = [
            (pid, score) for pid, score in fused if pid in rows and _in_scope(rows[pid], scope)
        ]
        ranked = await self._reranked(query, ranked, rows)
        lexical_ranks = {pid: rank for rank, pid in enumerate(lexical, start=1)}
        dense_ranks = {pid: rank for rank, (pid, _) in enumerate(dense, start=1)}
        return [
            dataclasses.replace(
                rows[pid],
                score=score,
                lexical_rank=lexical_ranks.get(pid),
                dense_rank=dense_ranks.get(pid),
            )
            for pid, score in ranked[:k]
        ]

    async def _dense(self, query: str, scope: Scope, limit: int) -> list[tuple[int, float]]:
        if self.embedder is None or self._embeddings.open:
            return []
        try:
            vectors = await self.embedder.embed([query], "query")
        except EmbeddingsError as exc:
            self._embeddings.failed(exc)
            return []
        if vectors.ndim != 2 or vectors.shape[0] != 1:
            self._embeddings.failed(EmbeddingsError(f"vectors of shape {vectors.shape}"))
            return []
        hits = await self.vectors.nearest(self.store, scope, vectors[0], limit)
        return [(pid, cosine) for pid, cosine in hits if cosine >= self.settings.min_similarity]

    async def _reranked(
        self, query: str, ranked: list[tuple[int, float]], rows: dict[int, Found]
    ) -> list[tuple[int, float]]:
        if self.reranker is None or self._rerank.open or len(ranked) < 2:
            return ranked
        try:
            scores = await self.reranker.rerank(query, [rows[pid].text for pid, _ in ranked])
            if len(scores) != len(ranked):
                raise EmbeddingsError(f"{len(scores)} scores for {len(ranked)} passages")
        except EmbeddingsError as exc:
            self._rerank.failed(exc)
            return ranked
        rescored = [
            (pid, float(score) if math.isfinite(score) else -math.inf)
            for (pid, _), score in zip(ranked, scores, strict=True)
        ]
        return sorted(rescored, key=lambda pair: -pair[1])
