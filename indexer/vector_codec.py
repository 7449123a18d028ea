"""How sealed segments encode their vectors: `flat` (IVF-flat) or `pq` (IVF-PQ + exact re-ranking).

Why PQ: IVF-flat keeps 1,536 bytes per 384-d chunk in RAM (1.5 GB at 1M chunks). Under `pq` a
sealed segment is a faiss IndexIVFPQ over the SAME shared coarse quantizer (so one query
assignment still serves every segment through `search_preassigned`), coding the residual to
its list centroid in PQ_SUBVECTOR_DIMS-dimensional sub-vectors of 8 bits each (48 bytes at
d = 384). PQ scores are approximate, so each segment re-ranks its RERANK_FACTOR * k best PQ
candidates exactly with a gather from its full float32 vectors, which live on disk beside it
(indexer/full_vectors.py, memory-mapped). Scores returned are therefore exact inner products,
comparable with the live segment's (which stays float32 in RAM: it is small).

Measured (bench.scale's synthetic vectors, d = 384, 100k, nlist 100, nprobe 16, 200 queries,
1 thread, raw faiss, recall@10 against exact search; IVF-flat at the same nprobe: 0.976):
    M = 48 x 8 bits, k' = 10: 0.566; k' = 50: 0.939; k' = 100: 0.971; k' = 200: 0.976
So k' = 10 k (RERANK_FACTOR): the re-ranked PQ leg loses ~0.005 against IVF-flat, and the
gather touches 100 rows (~150 KB) per query and segment.

Through VectorIndex (100k of those vectors, seal 8192, nlist 840, nprobe 16, 3 sealed segments,
segments loaded from disk in a fresh process, load average ~12 on 2 cores): heap (RssAnon) of
the vector leg 232 B/chunk with pq (47 B of codes) against 1,717 B/chunk flat; recall@10 1.0 for
both (and for raw faiss); p50 0.81 ms pq, 0.49 ms flat, 0.23 ms raw IVF-PQ + one re-rank (p99s
are scheduler noise at that load: 8-13 ms for all four). The pq overhead is the per-segment
re-rank (~0.1 ms per segment); re-ranking once over all segments' PQ candidates would remove it
(VectorIndex.search). A sealed file's pages touched by re-ranks show as RssFile (page cache,
reclaimable), not heap.

Codebooks are trained with the coarse quantizer (`train`, where the quantizer is trained) on
residuals to it, and belong to it: a retrain re-encodes every vector from its full vector into
one new segment with new codebooks, swapped in with the new quantizer (one generation). Each
segment file embeds the codebooks it was coded with, so no codebook file exists; a loaded
index takes them from a segment of its quantizer (`adopt`), or trains them on the next vectors
it seals if no such segment is left. Merges of segments that share codebooks copy codes list by
list (no re-encoding, no decoding); anything else - other codebooks, another codec - is
re-encoded from full vectors. Nothing is ever rebuilt from PQ codes.

Switching codec on an existing index (SEMSEARCH_VECTOR_CODEC): segments keep the codec they were
written with and stay searchable (every segment carries its own type); new seals use the new
codec, and each merge, compaction or retrain re-encodes its output with it. A full switch is
therefore gradual; `semsearch build` rebuilds at once.

Known limit: a store built by a seal/merge/retrain stays in RAM until the next snapshot writes
it (then it is memory-mapped), so a retrain at 1M chunks holds 1.5 GB of float32 transiently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from contracts.errors import SnapshotError
from contracts.settings import VECTOR_CODECS
from indexer.full_vectors import FullVectors
from indexer.segments import SealedSegment

log = logging.getLogger(__name__)

CODECS = VECTOR_CODECS  # validated in contracts/settings.py
RERANK_FACTOR = 10
PQ_SUBVECTOR_DIMS = 8
PQ_BITS = 8
# PQ k-means sample: 256 centroids per sub-quantizer need >= 9,984 points (faiss' 39 per
# centroid); 65k (faiss' default cap) took 20 s at d = 384 on one core, 16k takes ~5 s.
PQ_TRAIN_POINTS = 16384
# faiss' PQ training is anomalously slow below ~16k points on one thread (measured, d = 384,
# 48 x 256 codes, 10 iterations: 4,096 points 5.9 s, 8,192 points 10.2 s, 16,384 points 3.0 s,
# the 8,192 repeated twice 2.8 s), so a sample of 2k-16k points is repeated up to 16k: each
# point weighs the same, so k-means sees the same distribution.
PQ_TILE_FROM = 2048


def pq_subquantizers(dimension: int) -> int:
    """The most sub-quantizers with >= PQ_SUBVECTOR_DIMS dimensions each that divide d."""
    for m in range(max(1, dimension // PQ_SUBVECTOR_DIMS), 0, -1):
        if dimension % m == 0:
            return m
    return 1


class PQSegment(SealedSegment):
    """A sealed IVF-PQ segment whose search re-ranks exactly from its full vectors on disk."""

    index: faiss.IndexIVFPQ

    def __init__(self, name: str, index: faiss.IndexIVFPQ, full: FullVectors) -> None:
        if len(full) != int(index.ntotal):
            raise SnapshotError(
                f"segment {name} holds {index.ntotal} codes but {len(full)} full vectors; "
                "rebuild it (start the indexer of this index: `semsearch index`)"
            )
        self.full = full
        super().__init__(name, index)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        return self._ids, self.full.gather(self._ids, scan=True)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        return self.full.gather(ids)

    def search(
        self, queries: np.ndarray, k: int, nprobe: int, exclude: faiss.IDSelector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        _, ids = super().search(queries, RERANK_FACTOR * k, nprobe, exclude)
        return self._rerank(queries, ids, k)

    def search_assigned(
        self,
        queries: np.ndarray,
        k: int,
        assigned: tuple[np.ndarray, np.ndarray],
        params: faiss.SearchParametersIVF,
    ) -> tuple[np.ndarray, np.ndarray]:
        _, ids = super().search_assigned(queries, RERANK_FACTOR * k, assigned, params)
        return self._rerank(queries, ids, k)

    def _rerank(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = queries.shape[0]
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        for row in range(n):
            found = candidates[row][candidates[row] >= 0]
            if not len(found):
                continue
            # faiss' single-threaded scan, not a BLAS GEMV (see LiveSegment.search).
            s, r = faiss.knn(
                np.ascontiguousarray(queries[row : row + 1], dtype=np.float32),
                self.full.gather(found),
                min(k, len(found)),
                metric=faiss.METRIC_INNER_PRODUCT,
            )
            scores[row, : r.shape[1]] = s[0]
            ids[row, : r.shape[1]] = found[r[0]]
        return scores, ids


def alive_vectors(segment: SealedSegment, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full (ids, vectors) of a segment without `dead`: from disk for PQ, never from codes."""
    if isinstance(segment, PQSegment):
        return segment.full.alive(dead)
    ids, vectors = segment.contents()
    keep = ~np.isin(ids, dead) if len(dead) else np.ones(len(ids), dtype=bool)
    return ids[keep], vectors[keep]


class FlatCodec:
    """IVF-flat segments: exactly the engine without a codec choice."""

    name = "flat"

    def train(self, quantizer: faiss.IndexFlatIP, sample: np.ndarray) -> None:
        """Nothing to train beyond the coarse quantizer."""

    def adopt(self, quantizer: faiss.IndexFlatIP, segments: list[SealedSegment]) -> None:
        """Nothing to recover from loaded segments."""

    def build(
        self,
        name: str,
        quantizer: faiss.IndexFlatIP,
        nlist: int,
        ids: np.ndarray,
        vectors: np.ndarray,
    ) -> SealedSegment:
        return SealedSegment.build(name, quantizer, nlist, ids, vectors)

    def merge(
        self,
        name: str,
        quantizer: faiss.IndexFlatIP,
        sources: list[SealedSegment],
        dead: np.ndarray,
    ) -> SealedSegment:
        if all(type(s) is SealedSegment for s in sources):
            return SealedSegment.merge(name, quantizer, sources, dead)
        parts = [alive_vectors(s, dead) for s in sources]  # PQ sources: re-encoded as flat
        return self.build(
            name,
            quantizer,
            sources[0].index.nlist,
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
        )

    def reassign(
        self,
        name: str,
        quantizer: faiss.IndexFlatIP,
        nlist: int,
        sources: list[SealedSegment],
        dead: np.ndarray,
    ) -> SealedSegment:
        ivf = faiss.IndexIVFFlat(quantizer, quantizer.d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.is_trained = True
        for segment in sources:  # one segment's vectors extracted at a time
            ids, vectors = alive_vectors(segment, dead)
            ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        return SealedSegment(name, ivf)


class PQCodec:
    """IVF-PQ segments with codebooks trained beside (and owned by) the coarse quantizer."""

    name = "pq"

    def __init__(self) -> None:
        self._quantizer: faiss.IndexFlatIP | None = None
        # An empty IndexIVFPQ holding the codebooks of `_quantizer` (a ProductQuantizer taken
        # out of an index would dangle once that index is freed).
        self._template: faiss.IndexIVFPQ | None = None
        self._trained_points = 0

    def _empty(self, quantizer: faiss.IndexFlatIP, nlist: int, nbits: int) -> faiss.IndexIVFPQ:
        d = quantizer.d
        return faiss.IndexIVFPQ(
            quantizer, d, nlist, pq_subquantizers(d), nbits, faiss.METRIC_INNER_PRODUCT
        )

    def train(self, quantizer: faiss.IndexFlatIP, sample: np.ndarray) -> None:
        """PQ codebooks on the residuals of `sample` to the (trained) quantizer's centroids."""
        rows = np.ascontiguousarray(sample, dtype=np.float32)
        if len(rows) > PQ_TRAIN_POINTS:  # evenly spaced: a live segment is in arrival order
            rows = rows[np.linspace(0, len(rows) - 1, PQ_TRAIN_POINTS).astype(np.int64)]
        nbits = max(1, min(PQ_BITS, int(np.log2(max(2, len(rows))))))
        if PQ_TILE_FROM <= len(rows) < PQ_TRAIN_POINTS:  # same centroids, 3-4x faster (measured)
            rows = np.resize(rows, (PQ_TRAIN_POINTS, rows.shape[1]))
        template = self._empty(quantizer, int(quantizer.ntotal), nbits)
        template.pq.cp.min_points_per_centroid = 1  # a small first seal trains 256 codes anyway
        template.verbose = False
        template.train(rows)  # the quantizer is trained (ntotal == nlist): only the PQ trains
        self._quantizer, self._template, self._trained_points = quantizer, template, len(rows)

    def adopt(self, quantizer: faiss.IndexFlatIP, segments: list[SealedSegment]) -> None:
        """A loaded quantizer: its codebooks are those of any PQ segment assigned with it."""
        self._quantizer, self._template = quantizer, None
        for segment in segments:
            if isinstance(segment, PQSegment) and segment.index.nlist == quantizer.ntotal:
                template = self._empty(quantizer, int(quantizer.ntotal), segment.index.pq.nbits)
                template.pq = segment.index.pq  # a copy of the codebooks
                template.is_trained = True
                self._template = template
                return

    def _codebooks(self, quantizer: faiss.IndexFlatIP, vectors: np.ndarray) -> faiss.IndexIVFPQ:
        if self._template is None or self._quantizer is not quantizer:
            log.info("training PQ codebooks on %d vectors (none for this quantizer)", len(vectors))
            self.train(quantizer, vectors)
        assert self._template is not None
        return self._template

    def _new_index(self, quantizer: faiss.IndexFlatIP, nlist: int, vectors: np.ndarray) -> faiss.IndexIVFPQ:
        template = self._codebooks(quantizer, vectors)
        ivf = self._empty(quantizer, nlist, int(template.pq.nbits))
        ivf.pq = template.pq
        ivf.is_trained = True
        return ivf

    def build(
        self,
        name: str,
        quantizer: faiss.IndexFlatIP,
        nlist: int,
        ids: np.ndarray,
        vectors: np.ndarray,
    ) -> SealedSegment:
        ivf = self._new_index(quantizer, nlist, vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        ivf.add_with_ids(vectors, ids)
        return PQSegment(name, ivf, FullVectors.from_arrays(ids, vectors))

    def _shares_codebooks(self, segment: SealedSegment) -> bool:
        if not isinstance(segment, PQSegment) or self._template is None:
            return False
        mine, theirs = self._template.pq, segment.index.pq
        return bool(
            mine.M == theirs.M
            and mine.nbits == theirs.nbits
            and np.array_equal(faiss.vector_to_array(mine.centroids), faiss.vector_to_array(theirs.centroids))
        )

    def merge(
        self,
        name: str,
        quantizer: faiss.IndexFlatIP,
        sources: list[SealedSegment],
        dead: np.ndarray,
    ) -> SealedSegment:
        """Codes are copied list by list when every source shares the current codebooks (the
        sources share `quantizer`, so no vector moves list); else re-encoded from full vectors."""
        nlist = sources[0].index.nlist
        if self._quantizer is not quantizer or not all(self._shares_codebooks(s) for s in sources):
            parts = [alive_vectors(s, dead) for s in sources]
            return self.build(
                name,
                quantizer,
                nlist,
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        assert self._template is not None
        ivf = self._empty(quantizer, nlist, int(self._template.pq.nbits))
        ivf.pq = self._template.pq
        ivf.is_trained = True
        _copy_codes(ivf, sources, dead)
        full = FullVectors.empty_for(_alive_ids(sources, dead), quantizer.d)
        for source in sources:  # one source's full vectors in RAM at a time, besides the output
            full.fill(*alive_vectors(source, dead))
        return PQSegment(name, ivf, full)

    def reassign(
        self,
        name: str,
        quantizer: faiss.IndexFlatIP,
        nlist: int,
        sources: list[SealedSegment],
        dead: np.ndarray,
    ) -> SealedSegment:
        """Every alive vector re-encoded from its full vector with the new quantizer's codebooks.

        The quantizer's k-means sample (train) can be as small as 39 points per list - too few
        for 256 codes per sub-quantizer (recall@10 0.81 instead of 0.99 at 12 lists, measured) -
        so the codebooks are retrained here on PQ_TRAIN_POINTS full vectors when they were not."""
        want = min(PQ_TRAIN_POINTS, sum(len(s) for s in sources))
        if self._quantizer is not quantizer or self._trained_points < want:
            sample = _sample(sources, dead, want, quantizer.d)
            if len(sample):
                self.train(quantizer, sample)
        ivf: faiss.IndexIVFPQ | None = None
        full = FullVectors.empty_for(_alive_ids(sources, dead), quantizer.d)
        for segment in sources:  # one segment's full vectors read at a time
            ids, vectors = alive_vectors(segment, dead)
            if ivf is None:
                ivf = self._new_index(quantizer, nlist, vectors)
            ivf.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            full.fill(ids, vectors)
        if ivf is None:
            ivf = self._new_index(quantizer, nlist, np.zeros((0, quantizer.d), dtype=np.float32))
        return PQSegment(name, ivf, full)


VectorCodec = FlatCodec | PQCodec


def make_codec(name: str) -> VectorCodec:
    if name == "flat":
        return FlatCodec()
    if name == "pq":
        return PQCodec()
    raise ValueError(f"unknown vector codec {name!r}; use one of {', '.join(CODECS)}")


def _alive_ids(sources: list[SealedSegment], dead: np.ndarray) -> np.ndarray:
    ids = np.concatenate([s.ids for s in sources]) if sources else np.zeros(0, dtype=np.int64)
    return ids[~np.isin(ids, dead)] if len(dead) else ids


def _sample(sources: list[SealedSegment], dead: np.ndarray, want: int, dimension: int) -> np.ndarray:
    """About `want` alive full vectors drawn evenly from `sources` (PQ: a gather from disk)."""
    total = sum(len(s) for s in sources)
    rng = np.random.default_rng(total)
    parts = []
    for segment in sources:
        take = min(len(segment), round(want * len(segment) / max(1, total)) + 1)
        ids = np.sort(rng.choice(segment.ids, size=take, replace=False)) if take else segment.ids[:0]
        ids = ids[~np.isin(ids, dead)] if len(dead) else ids
        parts.append(segment.vectors_of(ids) if len(ids) else np.zeros((0, dimension), np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, dimension), dtype=np.float32)


def _copy_codes(ivf: faiss.IndexIVFPQ, sources: list[SealedSegment], dead: np.ndarray) -> None:
    invlists = ivf.invlists
    assert invlists is not None
    code_size = int(ivf.code_size)
    total = 0
    for list_no in range(ivf.nlist):
        id_parts, code_parts = [], []
        for source in sources:
            size = int(source.list_sizes()[list_no])
            if not size:
                continue
            theirs = source.index.invlists
            assert theirs is not None
            ids = faiss.rev_swig_ptr(theirs.get_ids(list_no), size).copy()
            codes = faiss.rev_swig_ptr(theirs.get_codes(list_no), size * code_size)
            codes = np.asarray(codes).reshape(size, code_size)
            keep = ~np.isin(ids, dead) if len(dead) else slice(None)
            id_parts.append(ids[keep])
            code_parts.append(codes[keep])
        if not id_parts:
            continue
        list_ids = np.ascontiguousarray(np.concatenate(id_parts), dtype=np.int64)
        if not len(list_ids):
            continue
        codes = np.ascontiguousarray(np.concatenate(code_parts), dtype=np.uint8)
        invlists.add_entries(list_no, len(list_ids), faiss.swig_ptr(list_ids), faiss.swig_ptr(codes))
        total += len(list_ids)
    ivf.ntotal = total


def full_vectors_file(segment_file: str) -> str:
    """Where a PQ segment's full vectors live, beside its faiss file."""
    return str(Path(segment_file).with_suffix(".vectors"))


def load_segment(entry: dict[str, Any], root: Path) -> SealedSegment:
    """A sealed segment named by a manifest entry ({name, file[, vectors]}), of either codec."""
    path = root / entry["file"]
    index = faiss.read_index(str(path))
    if isinstance(index, faiss.IndexIVFPQ):
        rel = entry.get("vectors")
        if not rel:
            raise SnapshotError(
                f"{path} is a PQ segment but the manifest names no full-vectors file for it; "
                "rebuild the index (`semsearch build`)"
            )
        return PQSegment(str(entry["name"]), index, FullVectors.open(root / rel))
    if isinstance(index, faiss.IndexIVFFlat):
        return SealedSegment(str(entry["name"]), index)
    raise SnapshotError(f"{path} is neither an IVF-flat nor an IVF-PQ segment; rebuild the index")
