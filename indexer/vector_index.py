"""The vector leg: a live segment, sealed IVF segments sharing one coarse quantizer, tombstones.

Why one shared quantizer: a vector's list is comparable across segments, so a query is assigned
to its `nprobe` lists once and every sealed segment scans just those lists
(`search_preassigned`): one query over all sealed segments costs about what one faiss IVF index
of the same size costs, plus a small per-segment overhead that the merge policy
(indexer/merge_policy.py) keeps to O(log N) segments.

The quantizer follows the data. It is first trained on the first full live segment (enough data
for >= 39 points per list, faiss' minimum). It is retrained - and every sealed segment re-assigned
to it, merged into one segment - once the index has grown RETRAIN_GROWTH (4x) since the last
training, or when the sealed lists are imbalanced (faiss' imbalance factor > IMBALANCE_LIMIT) and
the index has grown by half since; geometric growth keeps the total retraining cost O(N log N).
Every quantizer gets a fresh name (segments/quantizer-<hex>.faiss), so the switch is one
generation: the manifest names the quantizer and the segments assigned with it, and an older
generation keeps loading with its own.

Heavy work (sealing, merging, retraining) runs in `maintain`, in the single writer thread but
outside the index's write lock: sealed segments are immutable and only the writer mutates the
index, so the new segments are computed while readers keep searching, then swapped in under the
write lock in one step.

Choosing nlist and nprobe (measured, 1 thread, d=384, 200 queries, recall@10 vs exact search,
vectors from an anisotropic Gaussian with an embedding-like spectrum - harder for IVF than real
embeddings, which cluster):
    20k:  nlist 20 (N/1000): nprobe 10 -> 0.983, 16 -> 0.998;
          nlist 283 (2 sqrt N): nprobe 10 -> 0.71, 48 -> 0.955; nlist 566 (4 sqrt N): 10 -> 0.63
    100k: nlist 100 (N/1000): nprobe 10 -> 0.872, 16 -> 0.937, 24 -> 0.970;
          nlist 632 (2 sqrt N): nprobe 10 -> 0.657, 48 -> 0.917
So lists of ~1,000 vectors (nlist_for) and nprobe 16: a query scans ~16k vectors whatever N is.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import PurePosixPath
from typing import Any

import faiss
import numpy as np

from indexer.merge_policy import DEAD_FRACTION, SegmentStats, plan_merges
from indexer.segments import LiveSegment, SealedSegment
from indexer.vector_codec import make_codec

MIN_POINTS_PER_LIST = 39
# k-means sample per list: faiss' default is 256; 64 trains 1,000 lists on 1M vectors in ~20 s on
# one core instead of minutes, and the lists come out as balanced.
TRAIN_POINTS_PER_LIST = 64
RETRAIN_GROWTH = 4.0
IMBALANCE_LIMIT = 3.0
IMBALANCE_GROWTH = 1.5
# Compact a sealed segment once this fraction of it is deleted: searching dead vectors costs
# time and the tombstone set grows.
COMPACT_DEAD_FRACTION = DEAD_FRACTION
# Rounds of merging per maintain call: merges cascade up the tiers, but a call stays bounded.
MAX_MERGE_ROUNDS = 8

Swap = Callable[[], AbstractContextManager[object]]


def nlist_for(points: int) -> int:
    """One list per ~1,000 vectors (100 lists at 100k), and >= 39 training points per list.

    Measured on SciFact (9.6k MiniLM chunks): sqrt(N) = 92 lists with nprobe 10 lost 0.031
    nDCG@10 against exact search; 8-16 lists lost nothing. See the module docstring for recall
    against exact search at 20k/100k: N/1000 lists beat 2-4 sqrt(N) at every affordable nprobe.
    """
    return max(1, min(points // 1000, points // MIN_POINTS_PER_LIST, 65536))


def planned_nlist(points: int) -> int:
    """nlist when training on `points`: sized for the middle of the growth interval until the
    next retrain ([N, 4N)), so lists hold ~500-2,000 vectors at any time, not up to 4,000."""
    return min(nlist_for(int(points * RETRAIN_GROWTH / 2)), max(1, points // MIN_POINTS_PER_LIST))


def _new_quantizer_name() -> str:
    return f"quantizer-{uuid.uuid4().hex[:12]}"


def _new_segment_name() -> str:
    return f"seg-{uuid.uuid4().hex[:12]}"


class VectorIndex:
    """Search and mutate vectors by chunk id across all segments."""

    def __init__(
        self, dimension: int, *, nprobe: int = 16, seal_chunks: int = 8192, codec: str = "flat"
    ) -> None:
        self.dimension = dimension
        # How sealed segments encode vectors (indexer/vector_codec.py: flat, or pq + re-ranking).
        self.codec = make_codec(codec)
        self.nprobe = nprobe
        self.seal_chunks = seal_chunks
        self.live = LiveSegment(dimension)
        self.sealed: list[SealedSegment] = []
        self.quantizer: faiss.IndexFlatIP | None = None
        self.nlist = 0
        # The quantizer's file stem (segments/<name>.faiss): "quantizer" for indexes written
        # before quantizers were versioned.
        self.quantizer_name = ""
        self.trained_on = 0  # vectors indexed when the quantizer was trained
        self._tombstones: set[int] = set()
        self._selector: faiss.IDSelector | None = None
        self._selector_keepalive: tuple[object, ...] = ()
        self._where: dict[int, SealedSegment] = {}
        self._dead: Counter[str] | None = Counter()  # tombstones per segment; None: recount

    # -- tombstones -----------------------------------------------------------------------
    @property
    def tombstones(self) -> set[int]:
        return self._tombstones

    @tombstones.setter
    def tombstones(self, ids: set[int]) -> None:
        self._tombstones = set(ids)
        self._selector = None
        self._dead = None

    def _dead_counts(self) -> Counter[str]:
        if self._dead is None:
            self._dead = Counter(
                self._where[i].name for i in self._tombstones if i in self._where
            )
        return self._dead

    # -- mutation -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if vectors.shape[1] != self.dimension:
            raise ValueError(
                f"vector dimension {vectors.shape[1]} != index dimension {self.dimension}"
            )
        self.live.add(ids, vectors)

    def remove(self, ids: set[int]) -> None:
        self.live.remove(ids)
        dead = {i for i in ids if i in self._where and i not in self._tombstones}
        if dead:
            self._tombstones |= dead
            self._selector = None
            if self._dead is not None:
                self._dead.update(self._where[i].name for i in dead)

    def maybe_seal(self) -> SealedSegment | None:
        """Seal a full live segment, then merge/retrain as due, all in the caller's thread."""
        sealed = self.maintain()
        return sealed[0] if sealed else None

    def maintain(self, swap: Swap = contextlib.nullcontext) -> list[SealedSegment]:
        """Seal, retrain and merge as due; returns the segments sealed from the live segment.

        Must run in the only thread that mutates this index. The new segments are computed
        without `swap` (the writer's write lock) and installed under it.
        """
        sealed: list[SealedSegment] = []
        if len(self.live) >= self.seal_chunks:
            ids, vectors = self.live.ids.copy(), self.live.vectors.copy()
            quantizer = None
            if self.quantizer is None:
                quantizer = self._train(vectors, len(vectors))
            segment = self._build(ids, vectors, quantizer)
            with swap():
                if quantizer is not None:
                    self._adopt(quantizer, len(vectors))
                self.live = LiveSegment(self.dimension)
                self._attach(segment)
            sealed.append(segment)
            if quantizer is None and self._retrain_due():
                self._retrain(swap)
        for _ in range(MAX_MERGE_ROUNDS):
            if not self._merge_round(swap):
                break
        return sealed

    # -- quantizer ------------------------------------------------------------------------
    def train(self, sample: np.ndarray) -> None:
        """Train the coarse quantizer on `sample` (only while nothing is sealed)."""
        if self.sealed:
            raise ValueError("retraining with sealed segments goes through maintain()")
        self._adopt(self._train(sample, len(sample)), len(sample))

    def _train(self, sample: np.ndarray, points: int) -> tuple[faiss.IndexFlatIP, int, str]:
        nlist = min(planned_nlist(points), max(1, len(sample) // MIN_POINTS_PER_LIST))
        kmeans = faiss.Kmeans(
            self.dimension,
            nlist,
            niter=20 if len(sample) <= 100_000 else 10,
            seed=1234,
            spherical=True,
            max_points_per_centroid=TRAIN_POINTS_PER_LIST,
        )
        kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
        assert kmeans.centroids is not None
        quantizer = faiss.IndexFlatIP(self.dimension)
        quantizer.add(kmeans.centroids)
        self.codec.train(quantizer, sample)  # PQ codebooks belong to this quantizer
        return quantizer, nlist, _new_quantizer_name()

    def _adopt(self, trained: tuple[faiss.IndexFlatIP, int, str], points: int) -> None:
        self.quantizer, self.nlist, self.quantizer_name = trained
        self.trained_on = points

    @property
    def quantizer_file(self) -> str | None:
        """Where the quantizer lives under the index root (None before the first training)."""
        if self.quantizer is None:
            return None
        return f"segments/{self.quantizer_name or 'quantizer'}.faiss"

    def quantizer_entry(self) -> dict[str, Any]:
        """The manifest's record of the quantizer: what a loader needs to adopt it."""
        return {"file": self.quantizer_file, "nlist": self.nlist, "trained_on": self.trained_on}

    def adopt_quantizer(self, quantizer: faiss.IndexFlatIP, entry: dict[str, Any]) -> None:
        """Install a quantizer read from a manifest's entry (the segments come with it).

        An index written before quantizers were versioned has no `trained_on`: 0 makes the next
        seal retrain it if the data now warrants more lists (its nlist was fixed at first seal).
        """
        self.quantizer, self.nlist = quantizer, int(entry["nlist"])
        self.quantizer_name = PurePosixPath(str(entry["file"])).stem
        self.trained_on = int(entry.get("trained_on") or 0)
        self.codec.adopt(quantizer, self.sealed)

    def imbalance(self) -> float:
        """faiss' imbalance factor of the sealed lists taken together (1.0: perfectly even)."""
        if not self.sealed or self.nlist == 0:
            return 1.0
        sizes = np.zeros(self.nlist, dtype=np.float64)
        for segment in self.sealed:
            if segment.index.nlist == self.nlist:
                sizes += segment.list_sizes()
        total = sizes.sum()
        return float(self.nlist * (sizes**2).sum() / total**2) if total else 1.0

    def _retrain_due(self) -> bool:
        count = len(self)
        if planned_nlist(count) <= self.nlist:
            return False  # more data, but not enough for more lists
        if count >= RETRAIN_GROWTH * max(1, self.trained_on):
            return True
        return count >= IMBALANCE_GROWTH * self.trained_on and self.imbalance() > IMBALANCE_LIMIT

    def _retrain(self, swap: Swap) -> None:
        """Train on a sample of the alive sealed vectors; re-assign them all into one segment."""
        sources = list(self.sealed)
        dead = self._dead_array()
        count = sum(len(s) for s in sources) - len(self._tombstones)
        nlist = planned_nlist(count)
        rng = np.random.default_rng(len(sources) * 7919 + count)
        want = min(count, TRAIN_POINTS_PER_LIST * nlist)
        parts = []
        for segment in sources:
            ids, vectors = segment.contents()
            vectors = vectors[~np.isin(ids, dead)] if len(dead) else vectors
            take = min(len(vectors), round(want * len(vectors) / max(1, count)) + 1)
            if take:
                parts.append(vectors[rng.choice(len(vectors), size=take, replace=False)])
        trained = self._train(np.vstack(parts), count)
        quantizer, nlist, _ = trained
        # Re-encoded from full vectors (PQ: from disk), one segment at a time.
        merged = self.codec.reassign(_new_segment_name(), quantizer, nlist, sources, dead)
        with swap():
            self._adopt(trained, count)
            self._replace(sources, [merged])

    # -- merging --------------------------------------------------------------------------
    def _stats(self) -> list[SegmentStats]:
        dead = self._dead_counts()
        return [SegmentStats(s.name, len(s), dead.get(s.name, 0)) for s in self.sealed]

    def _merge_round(self, swap: Swap) -> bool:
        groups = plan_merges(self._stats(), self.seal_chunks)
        if not groups:
            return False
        by_name = {s.name: s for s in self.sealed}
        dead = self._dead_array()
        for names in groups:
            sources = [by_name[n] for n in names]
            merged = self._merge(sources, dead)
            with swap():
                self._replace(sources, [merged] if len(merged) else [])
        return True

    def compact(self) -> list[SealedSegment]:
        """Rewrite sealed segments whose dead fraction is high; returns the new segments."""
        rewritten: list[SealedSegment] = []
        if not self._tombstones:
            return rewritten
        dead_counts = self._dead_counts()
        dead = self._dead_array()
        for segment in list(self.sealed):
            if dead_counts.get(segment.name, 0) < COMPACT_DEAD_FRACTION * len(segment):
                continue
            merged = self._merge([segment], dead)
            self._replace([segment], [merged] if len(merged) else [])
            if len(merged):
                rewritten.append(merged)
        return rewritten

    def _merge(self, sources: list[SealedSegment], dead: np.ndarray) -> SealedSegment:
        # The index's own quantizer object: a loaded segment's embedded one dies with it.
        assert self.quantizer is not None
        return self.codec.merge(_new_segment_name(), self.quantizer, sources, dead)

    def _dead_array(self) -> np.ndarray:
        return np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))

    def _replace(self, old: Iterable[SealedSegment], new: list[SealedSegment]) -> None:
        """Swap segments; tombstones of vectors that did not move to a new segment are dropped.

        New ones are attached first, so a vector that moved keeps its tombstone (deleted after
        the merge was planned) and one that was merged away loses it with its segment.
        """
        for segment in new:
            self._attach(segment)
        for segment in old:
            self.detach(segment)

    def _build(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        trained: tuple[faiss.IndexFlatIP, int, str] | None = None,
    ) -> SealedSegment:
        quantizer, nlist = (trained[0], trained[1]) if trained else (self.quantizer, self.nlist)
        assert quantizer is not None
        return self.codec.build(_new_segment_name(), quantizer, nlist, ids, vectors)

    def _attach(self, segment: SealedSegment) -> None:
        self.sealed.append(segment)
        for chunk_id in segment.ids.tolist():
            self._where[chunk_id] = segment
        if self._dead is not None:
            self._dead = None  # moved tombstones now count for the new segment
        self._selector = None

    def attach(self, segment: SealedSegment) -> None:
        self._attach(segment)

    def detach(self, segment: SealedSegment) -> None:
        self.sealed.remove(segment)
        gone = []
        for chunk_id in segment.ids.tolist():
            if self._where.get(chunk_id) is segment:
                del self._where[chunk_id]
                gone.append(chunk_id)
        if self._tombstones and gone:
            self._tombstones.difference_update(gone)
        self._dead = None
        self._selector = None

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.live) + len(self._where) - len(self._tombstones)

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for chunk_id in ids:
            if self.live.contains(chunk_id):
                found[chunk_id] = self.live.vector(chunk_id)
            elif chunk_id in self._where and chunk_id not in self._tombstones:
                found[chunk_id] = self._where[chunk_id].vectors_of(np.array([chunk_id]))[0]
        return found

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (chunk id, inner product) over all segments, tombstones excluded."""
        queries = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        scores, ids = self.live.search(queries, k)
        all_scores, all_ids = [scores[0]], [ids[0]]
        if self.sealed:
            selector = self._exclusion()
            nprobe = max(1, min(self.nprobe, self.nlist or 1))
            assigned: tuple[np.ndarray, np.ndarray] | None = None
            if self.quantizer is not None:
                coarse_scores, coarse_lists = self.quantizer.search(queries, nprobe)
                assigned = (coarse_lists, coarse_scores)
                params = SealedSegment.assigned_params(nprobe, selector)
            for segment in self.sealed:
                if assigned is not None and segment.index.nlist == self.nlist:
                    s, i = segment.search_assigned(queries, k, assigned, params)
                else:  # a segment from another quantizer (never after a clean load)
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
        if not self._tombstones:
            return None
        if self._selector is None:
            dead = self._dead_array()
            batch = faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead))
            self._selector = faiss.IDSelectorNot(batch)
            self._selector_keepalive = (dead, batch)
        return self._selector
