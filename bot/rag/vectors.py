"""The vectors of the passages a room may search, held in memory and compared by one matrix
product, off the event loop (numpy's BLAS releases the GIL).

Vectors are held per part of a scope: a room's own documents, and each collection apart, so that
rooms sharing a large collection share one copy of it. A part is read again when its stamp
changes: a document was added or removed, maybe by `lucie-bot kb` in another process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.rag.documents import Scope
from bot.rag.ports import DocumentStore

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MAX_PARTS = 64
MAX_SCOPES = 4096  # rooms whose last check is remembered (a few hundred bytes each)
# 64 M floats: 256 MB, e.g. 160,000 passages of a 384-dimension model (multilingual-e5-small)
MAX_FLOATS = 64_000_000


@dataclass(frozen=True)
class _Part:
    stamp: str
    ids: np.ndarray  # int64 passage ids
    matrix: np.ndarray  # (len(ids), dim) float32, rows L2-normalised


def _parts_of(scope: Scope) -> list[Scope]:
    parts = [Scope(scope.room_id)] if scope.room_id is not None else []
    return parts + [Scope(None, (name,)) for name in dict.fromkeys(scope.collections)]


def _nearest(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], query: np.ndarray, limit: int
) -> list[tuple[int, float]]:
    """The `limit` passages of highest cosine, best first (rows and query normalised)."""
    import numpy as np  # loaded with the first vectors: a bot without embeddings never needs it

    vector = np.asarray(query, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        return []
    vector = vector / norm
    found_ids, found_scores = [], []
    for ids, matrix in parts:
        if matrix.ndim != 2 or matrix.shape[1] != vector.shape[0] or len(ids) == 0:
            continue
        scores = matrix @ vector
        if len(scores) > limit:
            best = np.argpartition(-scores, limit - 1)[:limit]
            ids, scores = ids[best], scores[best]
        found_ids.append(ids)
        found_scores.append(scores)
    if not found_ids:
        return []
    all_ids, all_scores = np.concatenate(found_ids), np.concatenate(found_scores)
    order = np.argsort(-all_scores, kind="stable")[:limit]
    return [(int(all_ids[i]), float(all_scores[i])) for i in order]


class VectorCache:
    """A few parts' vectors, least recently used dropped first, within a bound on floats."""

    def __init__(self, max_parts: int = MAX_PARTS, max_floats: int = MAX_FLOATS) -> None:
        self.max_parts = max_parts
        self.max_floats = max_floats
        self._parts: OrderedDict[Scope, _Part] = OrderedDict()
        self._loading: dict[Scope, asyncio.Lock] = {}
        # a whole scope's stamp when its parts were last found fresh: while it holds, one read
        # of the stamp stands for all of them
        self._checked: OrderedDict[Scope, str] = OrderedDict()

    @property
    def floats(self) -> int:
        return sum(part.matrix.size for part in self._parts.values())

    async def nearest(
        self, store: DocumentStore, scope: Scope, query_vector: np.ndarray, limit: int
    ) -> list[tuple[int, float]]:
        """Passage ids of the scope nearest the query, with their cosine, best first."""
        import numpy as np

        if limit <= 0:
            return []
        parts = await self._parts_for(store, scope)
        held = [(part.ids, part.matrix) for part in parts if len(part.ids)]
        dims = {matrix.shape[1] for _, matrix in held}
        if dims - {np.asarray(query_vector).size}:
            log.warning(
                "stored vectors of size %s, the query's is %d: rebuild with the current model",
                sorted(dims),
                np.asarray(query_vector).size,
            )
        if not held:
            return []
        return await asyncio.to_thread(_nearest, held, query_vector, limit)

    async def _parts_for(self, store: DocumentStore, scope: Scope) -> list[_Part]:
        keys = _parts_of(scope)
        stamp = await store.scope_stamp(scope)
        if self._checked.get(scope) == stamp and all(key in self._parts for key in keys):
            self._checked.move_to_end(scope)
            for key in keys:
                self._parts.move_to_end(key)
            return [self._parts[key] for key in keys]
        parts = [await self._part(store, key) for key in keys]
        self._checked[scope] = stamp
        self._checked.move_to_end(scope)
        while len(self._checked) > MAX_SCOPES:
            self._checked.popitem(last=False)
        return parts

    async def _part(self, store: DocumentStore, key: Scope) -> _Part:
        # the stamp is read before the vectors: a change in between makes the next search
        # read them again, never keeps old vectors under a new stamp
        stamp = await store.scope_stamp(key)
        held = self._fresh(key, stamp)
        if held is not None:
            return held
        lock = self._loading.setdefault(key, asyncio.Lock())
        try:
            async with lock:  # one read of a part at a time, for searches arriving together
                held = self._fresh(key, stamp)
                if held is not None:
                    return held
                ids, matrix = await store.scope_vectors(key)
                part = _Part(stamp, ids, matrix)
                self._keep(key, part)
                return part
        finally:
            if not lock.locked():
                self._loading.pop(key, None)

    def _fresh(self, key: Scope, stamp: str) -> _Part | None:
        held = self._parts.get(key)
        if held is None or held.stamp != stamp:
            return None
        self._parts.move_to_end(key)
        return held

    def _keep(self, key: Scope, part: _Part) -> None:
        self._parts.pop(key, None)
        if part.matrix.size > self.max_floats:
            log.warning(
                "%d vectors exceed the cache (%d floats): read at every search",
                len(part.ids),
                self.max_floats,
            )
            return
        self._parts[key] = part
        total = self.floats
        while len(self._parts) > self.max_parts or total > self.max_floats:
            _, dropped = self._parts.popitem(last=False)
            total -= dropped.matrix.size
