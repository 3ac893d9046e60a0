"""What grounding needs from storage and from model servers; bot.storage and bot.rag's clients
provide them. Retrieval sits behind `Retriever`, so that a server engine can replace SQLite
where one machine's index no longer suffices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from bot.rag.documents import Found, PreparedPassage, Scope

if TYPE_CHECKING:
    import numpy as np

EmbedKind = Literal["query", "passage"]


@dataclass(frozen=True)
class NewDocument:
    """A document about to be indexed: in a room (shared by a message) or in a collection."""

    name: str  # the file name people see
    version: str  # sha256 of the file's bytes
    kind: str
    size: int
    room_id: str | None = None
    event_id: str | None = None  # the message that shared it
    sharer: str | None = None
    collection: str | None = None
    path: str | None = None  # a collection file's path, as given to `kb add`


@dataclass(frozen=True)
class DocumentRow:
    id: int
    name: str
    version: str
    kind: str
    size: int
    pages: int | None
    passages: int
    added_at: int
    room_id: str | None
    event_id: str | None
    sharer: str | None
    collection: str | None
    path: str | None
    embedded: bool  # its passages have vectors


@dataclass(frozen=True)
class CollectionRow:
    name: str
    exportable: bool
    documents: int
    passages: int
    created_at: int


class DocumentStore(Protocol):
    # indexing: a document is invisible to searches until finished; a failed one is discarded
    async def begin_document(self, doc: NewDocument, now: int) -> int: ...

    async def add_passages(
        self,
        document_id: int,
        passages: Sequence[PreparedPassage],
        vectors: np.ndarray | None,  # (len(passages), dim) float32, L2-normalised
    ) -> None: ...

    async def finish_document(self, document_id: int, pages: int | None) -> None:
        """Make it searchable; in the same transaction remove earlier versions of the same file
        (same room and sharing event, or same collection and path)."""
        ...

    async def discard_document(self, document_id: int) -> None: ...

    # reading and removing
    async def document(self, document_id: int) -> DocumentRow | None: ...

    async def room_documents(self, room_id: str) -> list[DocumentRow]: ...

    async def has_documents(self, room_id: str) -> bool:
        """Whether the room has a searchable document of its own (asked at every answer)."""
        ...

    async def collection_documents(self, name: str) -> list[DocumentRow]: ...

    async def remove_document(self, document_id: int) -> bool: ...

    async def remove_shared_by_event(self, room_id: str, event_id: str) -> int: ...

    async def remove_shared_by(self, user_id: str) -> int: ...

    async def remove_collection(self, name: str, path: str | None = None) -> int: ...

    async def discard_unfinished_shared(self) -> int:
        """Room documents a stop left half indexed (collections' belong to `kb`, which may be
        running in another process)."""
        ...

    async def shared_file_erased(self, room_id: str, event_id: str, sharer: str, ts: int) -> bool:
        """Whether the message that shared a file was erased, or its sharer asked to be
        forgotten after sharing it."""
        ...

    # collections and the rooms that use them
    async def ensure_collection(self, name: str, exportable: bool, now: int) -> None: ...

    async def collections(self) -> list[CollectionRow]: ...

    async def room_collections(self, room_id: str, defaults: Sequence[str]) -> list[str]:
        """The collections a room uses: the defaults it did not opt out of, and its choices."""
        ...

    async def use_collection(self, room_id: str, name: str, used: bool) -> None: ...

    async def auto_index(self, room_id: str) -> bool: ...

    async def set_auto_index(self, room_id: str, on: bool) -> None: ...

    # searching
    async def lexical(self, terms: Sequence[str], scope: Scope, limit: int) -> list[int]:
        """Passage ids matching any of the terms, best BM25 first."""
        ...

    async def scope_stamp(self, scope: Scope) -> str:
        """Changes whenever a document of the scope is added or removed (cheap to read)."""
        ...

    async def scope_vectors(self, scope: Scope) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, vectors) of every embedded passage in the scope."""
        ...

    async def found(self, passage_ids: Sequence[int]) -> dict[int, Found]:
        """The passages with what to cite (score 0; the retriever sets it)."""
        ...

    # what answers used
    async def record_sources(self, answer_id: int, found: Sequence[Found]) -> None:
        """The passages given to the model for an answer, in rank order, recorded with its
        request (a removal must find the answer to clear the request that quotes them)."""
        ...

    async def mark_cited(self, answer_id: int, cited: set[int]) -> None:
        """Which of them (1-based numbers) the answer cites."""
        ...

    async def answer_sources(self, answer_id: int) -> list[Found]:
        """What an answer was given, in rank order (text empty where the document is gone)."""
        ...

    async def last_sourced_answer(self, room_id: str) -> int | None:
        """The room's latest answer that was given sources."""
        ...


class Embedder(Protocol):
    dim: int | None

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; raises EmbeddingsError."""
        ...


class Reranker(Protocol):
    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        """A relevance score per document, in the given order; raises EmbeddingsError."""
        ...


class Retriever(Protocol):
    async def search(self, query: str, scope: Scope, k: int) -> list[Found]: ...
