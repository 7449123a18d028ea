"""The vector leg: a live segment, sealed IVF segments, one trained coarse quantizer, tombstones.

The quantizer is trained once (warm start) on the first large enough live segment, which is a
representative sample of the data as it arrives; all sealed segments share it, so a vector's
list is comparable across segments. Until there is enough data to train (39 points per list,
faiss' own minimum), everything stays in the exact live segment.
"""

from __future__ import annotations

import uuid

import faiss
import numpy as np

from indexer.segments import LiveSegment, SealedSegment

MIN_POINTS_PER_LIST = 39
# Compact a sealed segment once this fraction of it is deleted: searching dead vectors costs
# time and the tombstone set grows.
COMPACT_DEAD_FRACTION = 0.3


def nlist_for(points: int) -> int:
    """One list per ~1,000 vectors (100 lists at 100k), and >= 39 training points per list.

    Measured on SciFact (9.6k MiniLM chunks): sqrt(N) = 92 lists with nprobe 10 lost 0.031
    nDCG@10 against exact search; 8-16 lists lost nothing. Fewer, larger lists keep the default
    nprobe of 10 close to exact at the sizes one segment holds.
    """
    return max(1, min(points // 1000, points // MIN_POINTS_PER_LIST, 65536))


class VectorIndex:
    """Search and mutate vectors by chunk id across all segments."""

    def __init__(self, dimension: int, *, nprobe: int = 10, seal_chunks: int = 8192) -> None:
        self.dimension = dimension
        self.nprobe = nprobe
        self.seal_chunks = seal_chunks
        self.live = LiveSegment(dimension)
        self.sealed: list[SealedSegment] = []
        self.quantizer: faiss.IndexFlatIP | None = None
        self.nlist = 0
        self.tombstones: set[int] = set()
        self._selector: faiss.IDSelector | None = None
        self._selector_keepalive: tuple[object, ...] = ()
        self._where: dict[int, SealedSegment] = {}

    # -- mutation -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if vectors.shape[1] != self.dimension:
            raise ValueError(
                f"vector dimension {vectors.shape[1]} != index dimension {self.dimension}"
            )
        self.live.add(ids, vectors)

    def remove(self, ids: set[int]) -> None:
        self.live.remove(ids)
        dead = {i for i in ids if i in self._where}
        if dead:
            self.tombstones |= dead
            self._selector = None

    def maybe_seal(self) -> SealedSegment | None:
        """Turn a full live segment into an IVF segment; trains the quantizer the first time."""
        if len(self.live) < self.seal_chunks:
            return None
        if self.quantizer is None:
            self.train(self.live.vectors)
        segment = self._seal(self.live.ids, self.live.vectors)
        self.live = LiveSegment(self.dimension)
        return segment

    def train(self, sample: np.ndarray) -> None:
        nlist = nlist_for(len(sample))
        quantizer = faiss.IndexFlatIP(self.dimension)
        kmeans = faiss.Kmeans(self.dimension, nlist, niter=20, seed=1234, spherical=True)
        kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
        assert kmeans.centroids is not None
        quantizer.add(kmeans.centroids)
        self.quantizer, self.nlist = quantizer, nlist

    def _seal(self, ids: np.ndarray, vectors: np.ndarray) -> SealedSegment:
        assert self.quantizer is not None
        segment = SealedSegment.build(
            f"seg-{uuid.uuid4().hex[:12]}", self.quantizer, self.nlist, ids, vectors
        )
        self.attach(segment)
        return segment

    def attach(self, segment: SealedSegment) -> None:
        self.sealed.append(segment)
        for chunk_id in segment.ids.tolist():
            self._where[chunk_id] = segment

    def detach(self, segment: SealedSegment) -> None:
        self.sealed.remove(segment)
        for chunk_id in segment.ids.tolist():
            if self._where.get(chunk_id) is segment:
                del self._where[chunk_id]
                self.tombstones.discard(chunk_id)
        self._selector = None

    def compact(self) -> list[SealedSegment]:
        """Rewrite sealed segments whose dead fraction is high; returns the new segments."""
        rewritten: list[SealedSegment] = []
        if not self.tombstones:
            return rewritten
        dead_ids = np.fromiter(self.tombstones, dtype=np.int64)
        for segment in list(self.sealed):
            is_dead = np.isin(segment.ids, dead_ids)
            if not is_dead.any() or is_dead.sum() < COMPACT_DEAD_FRACTION * len(segment):
                continue
            alive = segment.ids[~is_dead]
            vectors = segment.vectors_of(alive)
            self.detach(segment)
            if len(alive):
                rewritten.append(self._seal(alive, vectors))
        return rewritten

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.live) + len(self._where) - len(self.tombstones)

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for chunk_id in ids:
            if self.live.contains(chunk_id):
                found[chunk_id] = self.live.vector(chunk_id)
            elif chunk_id in self._where and chunk_id not in self.tombstones:
                found[chunk_id] = np.asarray(self._where[chunk_id].index.reconstruct(chunk_id))
        return found

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (chunk id, inner product) over all segments, tombstones excluded."""
        queries = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        scores, ids = self.live.search(queries, k)
        all_scores, all_ids = [scores[0]], [ids[0]]
        selector = self._exclusion()
        for segment in self.sealed:
            s, i = segment.search(queries, k, self.nprobe, selector)
            all_scores.append(s[0])
            all_ids.append(i[0])
        merged_scores = np.concatenate(all_scores)
        merged_ids = np.concatenate(all_ids)
        valid = merged_ids >= 0
        merged_scores, merged_ids = merged_scores[valid], merged_ids[valid]
        order = np.argsort(-merged_scores, kind="stable")[:k]
        return [(int(merged_ids[i]), float(merged_scores[i])) for i in order]

    def _exclusion(self) -> faiss.IDSelector | None:
        if not self.tombstones:
            return None
        if self._selector is None:
            dead = np.fromiter(self.tombstones, dtype=np.int64)
            batch = faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead))
            self._selector = faiss.IDSelectorNot(batch)
            self._selector_keepalive = (dead, batch)
        return self._selector
