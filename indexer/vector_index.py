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

Choosing nlist and nprobe. On an anisotropic Gaussian (no clusters) lists of ~1,000 vectors won
(100k: nlist 100, nprobe 16 -> recall@10 0.937; 632 lists, nprobe 48 -> 0.917), but real
embeddings cluster, and there a query scanning ~16k vectors cost 7.7 ms at 100k (p99 25.6 ms)
against 0.2 ms for raw faiss IVF with 4 sqrt(N) lists and nprobe 8 at recall 0.9975 (bench.scale's
vectors: real MiniLM embeddings plus noise). So nlist follows 4 sqrt(N) from SMALL_INDEX on, and
stays ~N/1000 below it, where nprobe 16 then scans most of the index (SciFact's 9.6k chunks: 16
lists, recall@10 1.0 against exact search). Measured with bench.scale's vectors, 1 thread, 1 %
of the sealed vectors deleted, the live segment partly full, on 2 cores shared with load 5-7
(so p99 is the machine's, for raw faiss too):
    100k: leg (840 lists, trained at 32k) nprobe 16 p50 0.51 ms, recall 0.997;
          raw faiss (1,259 lists) nprobe 8 p50 0.18 ms, recall 0.995; nprobe 16 0.32 ms, 0.999
    1M:   leg (4,096 lists, 8 sealed segments) nprobe 16 p50 2.2 ms, recall 1.000;
          raw faiss (3,980 lists) nprobe 8 p50 0.85 ms, recall 0.996; nprobe 16 1.28 ms, 1.000
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from indexer.merge_policy import DEAD_FRACTION, SegmentStats, plan_merges
from indexer.segments import LiveSegment, SealedSegment
from indexer.vector_codec import make_codec

if TYPE_CHECKING:
    from indexer.vector_maintenance import BackgroundMaintenance

MIN_POINTS_PER_LIST = 39
SMALL_INDEX = 65_536
# k-means sample per list: faiss' default is 256; 64 keeps lists as balanced at a quarter of the
# cost. k-means costs sample x nlist per iteration, so past TRAIN_SAMPLE_CAP points the sample
# shrinks towards faiss' minimum of 39 per list (3,900 lists: 152k points, not 250k).
TRAIN_POINTS_PER_LIST = 64
TRAIN_SAMPLE_CAP = 131_072
RETRAIN_GROWTH = 4.0
IMBALANCE_LIMIT = 3.0
IMBALANCE_GROWTH = 1.5
# Compact a sealed segment once this fraction of it is deleted: searching dead vectors costs
# time and the tombstone set grows.
COMPACT_DEAD_FRACTION = DEAD_FRACTION
# Rounds of merging per maintain call: merges cascade up the tiers, but a call stays bounded.
MAX_MERGE_ROUNDS = 8
# Filtered search (`search(..., allowed=ids)`): up to this many allowed vectors are gathered and
# scored exactly (no IVF at all); above it the IVF probe runs with the allowed ids as a faiss
# selector, and if the probed lists hold fewer than k allowed vectors the search is redone over
# every list (still only the allowed ids are scored: exact over them). Measured on 200k random
# 384-d vectors, 1 thread, min of 7: gathering + scoring m vectors took 0.02 ms (m=100),
# 0.24 ms (1,000), 2.9 ms (3,000), 70 ms (10,000; random reads stop fitting the caches);
# every-list selector search 1.7-2.7 ms at 200k (~N x 10 ns: ~10 ms at 1M); nprobe 16 with the
# selector ~0.1 ms but it finds only m x 16 / nlist allowed vectors. Hence the switch at ~2k:
# below it the gather beats even the probe's fallback, above it the gather's cost explodes.
# bench/scale.py --filters measures recall and latency at 50 % ... 0.1 % selectivity.
EXACT_FILTER_IDS = 2048

Swap = Callable[[], AbstractContextManager[object]]


@dataclass
class Retrain:
    """A retrained quantizer and the sealed segments re-assigned to it, not yet installed."""

    sources: list[SealedSegment]
    trained: tuple[faiss.IndexFlatIP, int, str]
    merged: SealedSegment
    count: int


def nlist_for(points: int) -> int:
    """Lists of ~1,000 vectors below SMALL_INDEX, ~4 sqrt(N) lists above; >= 39 points per list.

    4 sqrt(N) (faiss' guideline, and what raw IVF is measured with) balances the two costs of a
    query: the quantizer scans nlist centroids, each probed list holds N / nlist vectors. Below
    SMALL_INDEX lists stay few, so nprobe 16 scans most of the index: cheap at that size, and what
    real embeddings need there (SciFact, 9.6k MiniLM chunks: sqrt(N) = 92 lists with nprobe 10
    lost 0.031 nDCG@10 against exact search; 8-16 lists lost nothing).
    """
    wanted = points // 1000 if points < SMALL_INDEX else round(4 * math.sqrt(points))
    return max(1, min(wanted, points // MIN_POINTS_PER_LIST, 65536))


def planned_nlist(points: int) -> int:
    """nlist when training on `points`: sized for the middle of the growth interval until the
    next retrain ([N, 4N)), so lists are never more than 2x off their planned size."""
    return min(nlist_for(int(points * RETRAIN_GROWTH / 2)), max(1, points // MIN_POINTS_PER_LIST))


def train_points_per_list(nlist: int) -> int:
    """k-means sample per list (see TRAIN_SAMPLE_CAP)."""
    capped = TRAIN_SAMPLE_CAP // max(1, nlist)
    return max(MIN_POINTS_PER_LIST, min(TRAIN_POINTS_PER_LIST, capped))


def _ids_of(segments: list[SealedSegment]) -> np.ndarray:
    return np.concatenate([s.ids for s in segments]) if segments else np.zeros(0, dtype=np.int64)


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
        self._live = LiveSegment(dimension)
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
        # SearchParametersIVF by (nprobe, id(selector)); cleared when a selector is replaced.
        self._params_cache: dict[tuple[int, int], faiss.SearchParametersIVF] = {}
        # Which sealed segment holds a chunk id: a slot per segment in an int32 array indexed by
        # chunk id (-1: none), 4 B per id instead of a ~100 B dict entry; tombstones mirrored
        # in a bitmap (1 bit per id) that a faiss selector reads in place, so a delete costs
        # O(1), not a rebuilt id set.
        self._owner = np.full(0, -1, dtype=np.int32)
        self._owned = 0  # ids with an owner
        self._dead_bits = np.zeros(0, dtype=np.uint8)
        self._slots: dict[int, SealedSegment] = {}
        self._slot_of: dict[str, int] = {}
        self._next_slot = 0
        self._dead: Counter[str] | None = Counter()  # tombstones per segment; None: recount
        # Seals and merges computed in a worker thread (None: in `maintain`'s caller).
        self.background: BackgroundMaintenance | None = None

    # -- tombstones -----------------------------------------------------------------------
    @property
    def tombstones(self) -> set[int]:
        return self._tombstones

    @tombstones.setter
    def tombstones(self, ids: set[int]) -> None:
        self._tombstones = set(ids)
        self._dead_bits[:] = 0
        self._mark_dead(self._dead_array(), True)
        self._selector = None
        self._dead = None

    @property
    def live(self) -> LiveSegment:
        return self._live

    @live.setter
    def live(self, segment: LiveSegment) -> None:
        """Install a live segment; once a quantizer exists it is indexed in the shared lists
        (unless the loader did that already, outside the lock: LiveSegment.assign)."""
        if self.quantizer is not None and (
            segment.quantizer is not self.quantizer or segment.nlist != self.nlist
        ):
            segment.assign(self.quantizer, self.nlist)
        self._live = segment

    def _owners(self, ids: np.ndarray) -> np.ndarray:
        """Slot of the segment holding each id (-1: in no sealed segment)."""
        inside = (ids >= 0) & (ids < len(self._owner))
        slots = np.full(len(ids), -1, dtype=np.int32)
        slots[inside] = self._owner[ids[inside]]
        return slots

    def _mark_dead(self, ids: np.ndarray, dead: bool) -> None:
        ids = ids[(ids >= 0) & (ids < 8 * len(self._dead_bits))]
        if not len(ids):
            return
        bits = np.left_shift(1, ids & 7).astype(np.uint8)
        if dead:
            np.bitwise_or.at(self._dead_bits, ids >> 3, bits)
        else:
            np.bitwise_and.at(self._dead_bits, ids >> 3, ~bits)

    def _dead_counts(self) -> Counter[str]:
        if self._dead is None:
            self._dead = Counter()
            self._count_dead(self._dead_array())
        return self._dead

    def _count_dead(self, ids: np.ndarray) -> None:
        assert self._dead is not None
        slots, counts = np.unique(self._owners(ids), return_counts=True)
        for slot, count in zip(slots.tolist(), counts.tolist(), strict=True):
            if slot >= 0:
                self._dead[self._slots[slot].name] += count

    # -- mutation -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if vectors.shape[1] != self.dimension:
            raise ValueError(
                f"vector dimension {vectors.shape[1]} != index dimension {self.dimension}"
            )
        self.live.add(ids, vectors)

    def remove(self, ids: set[int]) -> None:
        self.live.remove(ids)
        asked = np.fromiter(ids, dtype=np.int64, count=len(ids))
        self._tombstone(asked[self._owners(asked) >= 0])

    def maybe_seal(self) -> SealedSegment | None:
        """Seal a full live segment, then merge/retrain as due, all in the caller's thread."""
        sealed = self.maintain()
        return sealed[0] if sealed else None

    def maintain(self, swap: Swap = contextlib.nullcontext) -> list[SealedSegment]:
        """Seal, retrain and merge as due; returns the segments sealed from the live segment.

        Must run in the only thread that mutates this index. The new segments are computed
        without `swap` (the writer's write lock) and installed under it. With `background`
        set (indexer/vector_maintenance.py) they are computed in its worker thread and
        installed by a later call, so the writer never waits for a seal or a merge.
        """
        if self.background is not None:
            return self.background.step(swap)
        return self.maintain_now(swap)

    def maintain_now(self, swap: Swap = contextlib.nullcontext) -> list[SealedSegment]:
        """`maintain` in the caller's thread: everything due, before returning."""
        if self.background is not None:
            self.background.finish(swap)
        sealed: list[SealedSegment] = []
        if len(self.live) >= self.seal_chunks:
            ids, vectors = self.seal_rows()
            quantizer = None
            if self.quantizer is None:
                quantizer = self._train(vectors, len(vectors))
            segment = self._build(ids, vectors, quantizer)
            with swap():
                if quantizer is not None:
                    self.live = LiveSegment(self.dimension)  # first: _adopt indexes the live rows
                    self._adopt(quantizer, len(vectors))
                    self._attach(segment)
                else:
                    self.install_seal(segment)
            sealed.append(segment)
            if quantizer is None and self._retrain_due():
                self.install_retrain(self.compute_retrain(*self.plan_retrain()), swap)
        for _ in range(MAX_MERGE_ROUNDS):
            groups = self.plan_merges()
            if not groups:
                break
            for sources in groups:
                self.install_merge(sources, self.compute_merge(sources, self._dead_array()), swap)
        return sealed

    def seal_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the live rows a seal turns into a segment (the writer may go on changing
        the live segment while a worker builds it)."""
        return self.live.ids.copy(), self.live.vectors.copy()

    def build_seal(self, ids: np.ndarray, vectors: np.ndarray) -> SealedSegment:
        """The sealed segment of `seal_rows` under the current quantizer (any thread)."""
        return self._build(ids, vectors)

    def install_seal(self, segment: SealedSegment) -> None:
        """Under the write lock: `segment` replaces its rows in the live segment. Rows deleted
        while it was built are tombstoned in it; rows added meanwhile stay live."""
        self._attach(segment)
        ids = segment.ids
        present = [i for i in ids.tolist() if self._live.contains(i)]
        if len(present) == len(self._live):
            self.live = LiveSegment(self.dimension)  # all sealed: a fresh one, assigned empty
        else:
            self._live.remove(set(present))
        if len(present) != len(ids):
            gone = np.setdiff1d(ids, np.asarray(present, dtype=np.int64), assume_unique=True)
            self._tombstone(gone)

    def _tombstone(self, ids: np.ndarray) -> None:
        fresh = set(ids.tolist()) - self._tombstones
        if fresh:
            dead = np.fromiter(fresh, dtype=np.int64, count=len(fresh))
            self._tombstones |= fresh
            self._mark_dead(dead, True)  # an existing selector reads the bitmap in place
            if self._dead is not None:
                self._count_dead(dead)

    def plan_merges(self) -> list[list[SealedSegment]]:
        """Groups of sealed segments the merge policy wants rewritten as one, now."""
        by_name = {s.name: s for s in self.sealed}
        return [[by_name[n] for n in names] for names in plan_merges(self._stats(), self.seal_chunks)]

    def compute_merge(self, sources: list[SealedSegment], dead: np.ndarray) -> SealedSegment:
        """The alive vectors of `sources` as one segment (any thread: sources are immutable)."""
        return self._merge(sources, dead)

    def install_merge(
        self, sources: list[SealedSegment], merged: SealedSegment, swap: Swap = contextlib.nullcontext
    ) -> None:
        """Swap `merged` in for `sources`; ids deleted since `dead` was taken keep their
        tombstones (`_replace` attaches first)."""
        with swap():
            self._replace(sources, [merged] if len(merged) else [])

    def retrain_due(self) -> bool:
        return self.quantizer is not None and bool(self.sealed) and self._retrain_due()

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
            max_points_per_centroid=train_points_per_list(nlist),
        )
        kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
        assert kmeans.centroids is not None
        quantizer = faiss.IndexFlatIP(self.dimension)
        quantizer.add(kmeans.centroids)
        self.codec.train(quantizer, sample)  # PQ codebooks belong to this quantizer
        return quantizer, nlist, _new_quantizer_name()

    def _adopt(
        self,
        trained: tuple[faiss.IndexFlatIP, int, str],
        points: int,
        live_lists: faiss.IndexIVFFlat | None = None,
    ) -> None:
        """Switch to a quantizer; `live_lists`: the live segment already assigned to it."""
        self.quantizer, self.nlist, self.quantizer_name = trained
        self.trained_on = points
        self._params_cache.clear()
        if live_lists is None:
            live_lists = self._live.lists_for(self.quantizer, self.nlist)
        self._live.use_lists(live_lists, self.quantizer)

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
        self._params_cache.clear()
        # The live segment is searched flat until one assigned to this quantizer is installed
        # (`live`): a loader installs it next, assigned before it took the lock.

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

    def plan_retrain(self) -> tuple[list[SealedSegment], np.ndarray]:
        """What a retrain reads, taken in the writer's thread: the sealed segments and the
        tombstones as of now (the writer goes on deleting while a worker retrains)."""
        return list(self.sealed), self._dead_array()

    def compute_retrain(self, sources: list[SealedSegment], dead: np.ndarray) -> Retrain:
        """A new quantizer trained on a sample of the alive vectors of `sources`, and all of
        them re-assigned to it as one segment (any thread: reads only its arguments)."""
        count = sum(len(s) for s in sources) - int(np.count_nonzero(np.isin(_ids_of(sources), dead)))
        nlist = planned_nlist(count)
        rng = np.random.default_rng(len(sources) * 7919 + count)
        want = min(count, train_points_per_list(nlist) * nlist)
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
        return Retrain(sources, trained, merged, count)

    def install_retrain(self, retrain: Retrain, swap: Swap = contextlib.nullcontext) -> None:
        """Switch to the retrained quantizer (the writer's thread: it assigns the live rows)."""
        quantizer, nlist, _ = retrain.trained
        live_lists = self._live.lists_for(quantizer, nlist)  # the writer alone changes the live
        with swap():
            self._adopt(retrain.trained, retrain.count, live_lists)
            self._replace(retrain.sources, [retrain.merged])

    # -- merging --------------------------------------------------------------------------
    def _stats(self) -> list[SegmentStats]:
        dead = self._dead_counts()
        return [SegmentStats(s.name, len(s), dead.get(s.name, 0)) for s in self.sealed]

    def compact(self) -> list[SealedSegment]:
        """Rewrite sealed segments whose dead fraction is high; returns the new segments."""
        if self.background is not None:
            self.background.finish()
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
        ids = segment.ids
        if len(ids):
            self._reserve(int(ids.max()) + 1)
        slot = self._next_slot
        self._next_slot += 1
        self._slots[slot] = segment
        self._slot_of[segment.name] = slot
        self._owned += int(np.count_nonzero(self._owner[ids] < 0))
        self._owner[ids] = slot
        if self._dead is not None:
            self._dead = None  # moved tombstones now count for the new segment

    def _reserve(self, size: int) -> None:
        """Grow the id-indexed arrays geometrically (ids come from a counter, so size ~ ids)."""
        if size <= len(self._owner):
            return
        size = max(size, len(self._owner) + len(self._owner) // 2, 1024)
        owner = np.full(size, -1, dtype=np.int32)
        owner[: len(self._owner)] = self._owner
        bits = np.zeros((size + 7) // 8, dtype=np.uint8)
        bits[: len(self._dead_bits)] = self._dead_bits
        self._owner, self._dead_bits = owner, bits
        self._selector = None  # it pointed at the old bitmap

    def attach(self, segment: SealedSegment) -> None:
        self._attach(segment)

    def detach(self, segment: SealedSegment) -> None:
        self.sealed.remove(segment)
        slot = self._slot_of.pop(segment.name)
        del self._slots[slot]
        ids = segment.ids
        gone = ids[self._owner[ids] == slot] if len(ids) else ids
        self._owner[gone] = -1
        self._owned -= len(gone)
        if self._tombstones and len(gone):
            self._tombstones.difference_update(gone.tolist())
            self._mark_dead(gone, False)
        self._dead = None

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.live) + self._owned - len(self._tombstones)

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Vectors of the live ids among `ids`: one owner gather and one read per sealed segment
        for all of them (a hybrid query asks for the chunks of several documents at once; per
        id, the numpy calls cost 14 us a chunk)."""
        found: dict[int, np.ndarray] = {}
        sealed: list[int] = []
        for chunk_id in ids:
            if self.live.contains(chunk_id):
                found[chunk_id] = self.live.vector(chunk_id)
            elif chunk_id not in self._tombstones:
                sealed.append(chunk_id)
        if sealed:
            wanted = np.asarray(sealed, dtype=np.int64)
            slots = self._owners(wanted)
            for slot in np.unique(slots[slots >= 0]).tolist():
                mine = wanted[slots == slot]
                vectors = self._slots[slot].vectors_of(mine)
                found.update(zip(mine.tolist(), vectors, strict=True))
        return found

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (chunk id, inner product) over all segments, tombstones excluded; `allowed`
        (sorted chunk ids) restricts the search to those ids (see EXACT_FILTER_IDS).

        One quantizer assignment serves every segment, the live one included (it is indexed in
        the shared lists once a quantizer exists), so a query costs one IVF search over the
        index plus a `search_preassigned` call per segment.
        """
        if allowed is not None:
            return self._search_allowed(query, k, allowed)
        queries = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        all_scores: list[np.ndarray] = []
        all_ids: list[np.ndarray] = []
        assigned: tuple[np.ndarray, np.ndarray] | None = None
        if self.quantizer is not None:
            nprobe = max(1, min(self.nprobe, self.nlist))
            coarse_scores, coarse_lists = self.quantizer.search(queries, nprobe)
            assigned = (coarse_lists, coarse_scores)
        if assigned is not None and self.live.quantizer is self.quantizer:
            scores, ids = self.live.search_assigned(queries, k, assigned, self._search_params(False))
        else:
            scores, ids = self.live.search(queries, k)
        all_scores.append(scores[0])
        all_ids.append(ids[0])
        if self.sealed:
            params = self._search_params(True)
            for segment in self.sealed:
                if assigned is not None and segment.index.nlist == self.nlist:
                    s, i = segment.search_assigned(queries, k, assigned, params)
                else:  # a segment from another quantizer (never after a clean load)
                    s, i = segment.search(queries, k, self.nprobe, self._exclusion())
                all_scores.append(s[0])
                all_ids.append(i[0])
        merged_scores = np.concatenate(all_scores)
        merged_ids = np.concatenate(all_ids)
        valid = merged_ids >= 0
        merged_scores, merged_ids = merged_scores[valid], merged_ids[valid]
        order = np.argsort(-merged_scores, kind="stable")[:k]
        return [(int(merged_ids[i]), float(merged_scores[i])) for i in order]

    # -- filtered search ------------------------------------------------------------------
    def _search_allowed(
        self, query: np.ndarray, k: int, allowed: np.ndarray
    ) -> list[tuple[int, float]]:
        if k <= 0 or not allowed.shape[0]:
            return []
        if allowed.shape[0] <= EXACT_FILTER_IDS or self.quantizer is None:
            return self.exact(query, k, allowed)
        found = self._probe_allowed(query, k, allowed, self.nprobe)
        if len(found) < min(k, allowed.shape[0]) and self.nprobe < self.nlist:
            found = self._probe_allowed(query, k, allowed, self.nlist)
        return found

    def exact(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[tuple[int, float]]:
        """Exact top-k over the vectors of `ids` (those still live), gathered per segment."""
        found_ids, vectors = self._gather(np.asarray(ids, dtype=np.int64))
        if not found_ids.shape[0]:
            return []
        scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        if k < scores.shape[0]:
            top = np.argpartition(-scores, k - 1)[:k]
            found_ids, scores = found_ids[top], scores[top]
        order = np.lexsort((found_ids, -scores))
        return [(int(found_ids[i]), float(scores[i])) for i in order]

    def _gather(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        live = self.live
        in_live = np.fromiter((live.contains(i) for i in ids.tolist()), dtype=bool, count=len(ids))
        out_ids: list[np.ndarray] = []
        out_vectors: list[np.ndarray] = []
        if in_live.any():
            mine = ids[in_live]
            out_ids.append(mine)
            out_vectors.append(live.rows_of(mine))
        rest = ids[~in_live]
        if rest.shape[0] and self._tombstones:
            inside = rest < 8 * len(self._dead_bits)
            dead = np.zeros(rest.shape[0], dtype=bool)
            probe = rest[inside]
            dead[inside] = ((self._dead_bits[probe >> 3] >> (probe & 7)) & 1).astype(bool)
            rest = rest[~dead]
        slots = self._owners(rest)
        for slot in np.unique(slots[slots >= 0]).tolist():
            mine = rest[slots == slot]
            out_ids.append(mine)
            out_vectors.append(np.asarray(self._slots[slot].vectors_of(mine), dtype=np.float32))
        if not out_ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32)
        return np.concatenate(out_ids), np.vstack(out_vectors)

    def _probe_allowed(
        self, query: np.ndarray, k: int, allowed: np.ndarray, nprobe: int
    ) -> list[tuple[int, float]]:
        """The IVF search with `allowed` as a faiss bitmap selector. Allowed ids belong to live
        documents, so no tombstone is among them: the selector alone excludes the dead."""
        assert self.quantizer is not None
        queries = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        mask = np.zeros(int(allowed[-1]) + 1, dtype=bool)
        mask[allowed] = True
        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        nprobe = max(1, min(nprobe, self.nlist))
        coarse_scores, coarse_lists = self.quantizer.search(queries, nprobe)
        assigned = (coarse_lists, coarse_scores)
        params = SealedSegment.assigned_params(nprobe, selector)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        if self.live.quantizer is self.quantizer:
            parts.append(self.live.search_assigned(queries, k, assigned, params))
        elif len(self.live):
            in_live = allowed[np.isin(allowed, self.live.ids)]
            exact = self.exact(query, k, in_live)
            parts.append(
                (
                    np.asarray([[s for _, s in exact]], dtype=np.float32),
                    np.asarray([[i for i, _ in exact]], dtype=np.int64),
                )
            )
        for segment in self.sealed:
            if segment.index.nlist == self.nlist:
                parts.append(segment.search_assigned(queries, k, assigned, params))
            else:
                parts.append(segment.search(queries, k, nprobe, selector))
        scores = np.concatenate([p[0][0] for p in parts])
        ids = np.concatenate([p[1][0] for p in parts])
        valid = ids >= 0
        scores, ids = scores[valid], ids[valid]
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]

    def _search_params(self, sealed: bool) -> faiss.SearchParametersIVF:
        """Cached per (nprobe, selector): building them costs more than a small list scan."""
        nprobe = max(1, min(self.nprobe, self.nlist or 1))
        selector = self._exclusion() if sealed else None
        key = (nprobe, id(selector) if selector is not None else 0)
        cached = self._params_cache.get(key)
        if cached is None:
            cached = SealedSegment.assigned_params(nprobe, selector)
            if len(self._params_cache) > 8:
                self._params_cache.clear()
            self._params_cache[key] = cached
        return cached

    def _exclusion(self) -> faiss.IDSelector | None:
        if not self._tombstones:
            return None
        if self._selector is None:
            bits = self._dead_bits
            dead = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
            self._selector = faiss.IDSelectorNot(dead)
            self._selector_keepalive = (bits, dead)
            self._params_cache.clear()
        return self._selector
