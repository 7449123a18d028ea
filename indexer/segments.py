"""Vector segments: one small exact live segment, many immutable IVF segments.

Why segments: an IVF index takes appends, but rewriting a million-vector index to disk on every
snapshot is impossible. Sealed segments are written once and only referenced by later
generations; only the live segment (bounded by `seal_chunks`) is rewritten each snapshot.
Deletes in sealed segments are tombstones applied at search time with a faiss ID selector.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

faiss.omp_set_num_threads(1)  # queries are small; threads are better spent on embedding


class LiveSegment:
    """Exact inner-product search over appended vectors; every append is searchable at once."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dimension), dtype=np.float32)
        self._position: dict[int, int] = {}

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        base = len(self)
        self._ids = np.concatenate([self._ids, ids.astype(np.int64)])
        self._vectors = np.concatenate([self._vectors, vectors.astype(np.float32)])
        for offset, chunk_id in enumerate(ids.tolist()):
            self._position[chunk_id] = base + offset

    def remove(self, ids: set[int]) -> int:
        present = [i for i in ids if i in self._position]
        if not present:
            return 0
        keep = ~np.isin(self._ids, np.asarray(present, dtype=np.int64))
        self._ids = self._ids[keep]
        self._vectors = self._vectors[keep]
        self._position = {int(i): p for p, i in enumerate(self._ids.tolist())}
        return len(present)

    def contains(self, chunk_id: int) -> bool:
        return chunk_id in self._position

    def vector(self, chunk_id: int) -> np.ndarray:
        return self._vectors[self._position[chunk_id]]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if n == 0 or k <= 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        scores = queries @ self._vectors.T
        k = min(k, n)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(top_scores, order, axis=1), self._ids[top]

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, ids=self._ids, vectors=self._vectors)

    @classmethod
    def load(cls, path: Path, dimension: int) -> LiveSegment:
        segment = cls(dimension)
        with np.load(path) as data:
            segment.add(data["ids"], data["vectors"])
        return segment


class SealedSegment:
    """An immutable IVF-flat segment assigned with the index's shared coarse quantizer."""

    def __init__(self, name: str, index: faiss.IndexIVFFlat) -> None:
        self.name = name
        self.index = index
        self.index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        self._ids = self._all_ids()

    @classmethod
    def build(
        cls,
        name: str,
        quantizer: faiss.IndexFlatIP,
        nlist: int,
        ids: np.ndarray,
        vectors: np.ndarray,
    ) -> SealedSegment:
        ivf = faiss.IndexIVFFlat(quantizer, quantizer.d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True  # the quantizer was trained once for the whole index
        ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        return cls(name, ivf)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def _all_ids(self) -> np.ndarray:
        invlists = self.index.invlists
        assert invlists is not None
        parts = []
        for list_no in range(self.index.nlist):
            size = invlists.list_size(list_no)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        return (
            np.vstack([self.index.reconstruct(int(i)) for i in ids])
            if len(ids)
            else np.zeros((0, self.index.d), dtype=np.float32)
        )

    def search(
        self, queries: np.ndarray, k: int, nprobe: int, exclude: faiss.IDSelector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe, self.index.nlist)
        if exclude is not None:
            params.sel = exclude
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, name: str, path: Path) -> SealedSegment:
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIVFFlat):
            raise ValueError(f"{path} is not an IVF-flat segment")
        return cls(name, index)
