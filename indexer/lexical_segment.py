"""Immutable BM25 postings segments: how they are built (freeze, merge) and what they precompute.

A segment holds, as numpy arrays (no Python object per posting): a vocabulary (term -> row), CSR
postings (offsets, chunk ids, term frequencies), the ids and lengths of the chunks it holds and
the ids *removed* from older segments since the segment before it (so that persisting a
generation is O(change): indexer/lexical_store.py writes each segment once).

Two invariants the query evaluation (indexer/lexical_query.py) relies on, established here once,
at freeze/merge time, so that no query pays for them:
- within a term's run, postings are sorted by chunk id (a chunk id range maps to one slice,
  found by binary search);
- every BLOCK consecutive postings of a run have a *block bound*: the maximum over the block of
  tf / (tf + k1 (1 - b) + k1 b len / avgdl_ref), with avgdl_ref the segment's mean chunk length
  when it was built. A posting's BM25 score is weight (k1 + 1) times that quantity at the
  current avgdl, which is at most the block bound times max(1, avgdl / avgdl_ref) (the
  denominator shrinks by at most avgdl_ref / avgdl): a valid upper bound whatever the corpus
  has become since, so bounds never need recomputing. They cost 4 bytes per BLOCK postings;
- every posting has its *weight*, tf (k1 + 1) / (tf + k1 (1 - b) + k1 b len / avgdl_ref)
  (float32, 4 bytes per posting): a query's cost per posting is a contiguous read times the
  term's idf, no length gather. At the current avgdl a chunk's exact score is within a factor
  [min(1, 1/r), max(1, 1/r)] of the weights' sum, r = avgdl_ref / avgdl (each denominator
  changes by at most that factor), which the query uses to decide what it must rescore.
  float32, not float16: numpy has no fast float16 arithmetic, and 11 bits would widen the
  rescoring band for little RAM.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence

import numpy as np

K1 = 1.5
B = 0.75
MAX_TF = 65535
TF = np.uint16
BLOCK = 64
# Bounds are rounded up by this much so that float32 scoring never exceeds them.
_BOUND_SLACK = 1.0 + 1e-6
_BATCH_POSTINGS = 1 << 22


def new_name() -> str:
    return f"lex-{uuid.uuid4().hex[:12]}"


def ids_dtype(max_id: int) -> type[np.signedinteger]:
    return np.int32 if max_id < 2**31 else np.int64


def block_offsets(offsets: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """First block of each term's run (CSR over blocks): ceil(run length / block) per term."""
    counts = np.diff(np.asarray(offsets, dtype=np.int64))
    out = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(-(-counts // block), out=out[1:])
    return out


def posting_weights(
    post_ids: np.ndarray,
    post_tfs: np.ndarray,
    chunk_ids: np.ndarray,
    lengths: np.ndarray,
    avgdl_ref: float,
) -> np.ndarray:
    """Per posting, tf (k1 + 1) / (tf + k1 (1 - b) + k1 b len / avgdl_ref) as float32.

    A query then reads one contiguous float per posting and multiplies in the term's idf,
    instead of gathering the chunk's length from a corpus-sized array (a cache miss per
    posting at 1M chunks) and evaluating the formula. Exact at avgdl == avgdl_ref; at another
    avgdl the factor is bounded (indexer/lexical_query.py rescores what it cannot decide).
    O(postings), in batches of a few million so that a 1M-chunk merge does not hold a float64
    per posting at once; lengths are looked up through a dense map over the id span.
    """
    total = int(post_ids.shape[0])
    out = np.empty(total, dtype=np.float32)
    if not total:
        return out
    chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
    low = int(chunk_ids.min())
    length_of = np.zeros(int(chunk_ids.max()) - low + 1, dtype=np.float32)
    length_of[chunk_ids - low] = lengths
    floor = np.float32(K1 * (1.0 - B))
    slope = np.float32(K1 * B / max(avgdl_ref, 1e-9))
    for begin in range(0, total, _BATCH_POSTINGS):
        end = min(begin + _BATCH_POSTINGS, total)
        tf = np.asarray(post_tfs[begin:end]).astype(np.float32)
        denominator = length_of[np.asarray(post_ids[begin:end], dtype=np.int64) - low]
        denominator *= slope
        denominator += floor
        denominator += tf
        tf *= np.float32(K1 + 1.0)
        tf /= denominator
        out[begin:end] = tf
    return out


def block_bounds(offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per block of BLOCK postings, the max of its weights / (k1 + 1), rounded up (O(postings))."""
    offsets = np.asarray(offsets, dtype=np.int64)
    boff = block_offsets(offsets)
    total_blocks = int(boff[-1])
    if not total_blocks:
        return np.zeros(0, dtype=np.float32)
    counts = np.diff(boff)
    starts = np.repeat(offsets[:-1], counts) + BLOCK * (
        np.arange(total_blocks) - np.repeat(boff[:-1], counts)
    )
    out = np.maximum.reduceat(weights, starts)
    out *= np.float32(_BOUND_SLACK / (K1 + 1.0))
    return out


def sort_runs(
    offsets: np.ndarray, post_ids: np.ndarray, post_tfs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Postings with every term's run sorted by chunk id (a no-op copy-free check when they are).

    Builders emit runs in insertion order, which is id order as long as chunk ids only grow
    (Index.next_chunk_id); merges of segments whose id ranges interleave are the exception.
    """
    n = int(post_ids.shape[0])
    if n < 2:
        return post_ids, post_tfs
    descending = post_ids[1:] < post_ids[:-1]  # no int64 copy of a 1M-chunk segment's ids
    boundaries = np.asarray(offsets[1:-1], dtype=np.int64) - 1
    descending[boundaries[(boundaries >= 0) & (boundaries < n - 1)]] = False
    if not descending.any():
        return post_ids, post_tfs
    rows = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
    order = np.lexsort((post_ids, rows))
    return np.asarray(post_ids)[order], np.asarray(post_tfs)[order]


class Segment:
    """Immutable postings of a set of chunks, plus the ids removed from older segments."""

    __slots__ = (
        "avgdl_ref",
        "block_max",
        "block_offsets",
        "checkpointed",
        "chunk_ids",
        "file",
        "lengths",
        "lookup",
        "max_id",
        "min_id",
        "name",
        "offsets",
        "post_ids",
        "post_tfs",
        "removed",
        "terms",
        "weights",
    )

    def __init__(
        self,
        name: str,
        terms: list[str],
        offsets: np.ndarray,
        post_ids: np.ndarray,
        post_tfs: np.ndarray,
        chunk_ids: np.ndarray,
        lengths: np.ndarray,
        removed: np.ndarray,
        file: str | None = None,
        *,
        block_max: np.ndarray | None = None,
        avgdl_ref: float | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.terms = terms
        self.lookup = dict(zip(terms, range(len(terms)), strict=True))
        self.offsets = offsets
        self.chunk_ids = chunk_ids
        self.lengths = lengths
        self.removed = removed
        self.file = file  # set by lexical_store once written
        # Part of a checkpoint (or loaded): its chunks belong to a generation being written, so
        # it may only be merged by that writer, never inline with newer segments.
        self.checkpointed = file is not None
        self.min_id = int(chunk_ids.min()) if chunk_ids.shape[0] else 0
        self.max_id = int(chunk_ids.max()) if chunk_ids.shape[0] else 0
        self.block_offsets = block_offsets(offsets)
        if block_max is None or avgdl_ref is None:
            # Built here, or read from a file written before bounds existed (format 1): sort and
            # bound now (O(postings), once per segment; the next merge persists them).
            post_ids, post_tfs = sort_runs(offsets, post_ids, post_tfs)
            avgdl_ref = float(np.mean(lengths, dtype=np.float64)) if lengths.shape[0] else 1.0
            block_max = None
        avgdl_ref = max(float(avgdl_ref), 1e-9)
        if weights is None:
            # Built here, or read from a file written before weights existed (formats 1-2).
            weights = posting_weights(post_ids, post_tfs, chunk_ids, lengths, avgdl_ref)
        if block_max is None:
            block_max = block_bounds(offsets, weights)
        self.post_ids = post_ids
        self.post_tfs = post_tfs
        self.weights = weights
        self.block_max = block_max
        self.avgdl_ref = avgdl_ref

    @property
    def chunks(self) -> int:
        return int(self.chunk_ids.shape[0])

    @property
    def postings(self) -> int:
        return int(self.post_ids.shape[0])

    @property
    def weight(self) -> int:
        """Size for the merge policy: chunks held plus removals carried."""
        return max(self.chunks + int(self.removed.shape[0]), 1)

    @property
    def nbytes(self) -> int:
        arrays = (
            self.offsets,
            self.post_ids,
            self.post_tfs,
            self.chunk_ids,
            self.lengths,
            self.removed,
            self.block_max,
            self.block_offsets,
            self.weights,
        )
        return sum(int(a.nbytes) for a in arrays)

    def row_of(self, term: str) -> int | None:
        return self.lookup.get(term)

    def postings_of(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        row = self.lookup.get(term)
        if row is None:
            return None
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.post_ids[start:end], self.post_tfs[start:end]

    def run(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk ids, tfs, block bounds) of one term's run."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        first, last = int(self.block_offsets[row]), int(self.block_offsets[row + 1])
        return self.post_ids[start:end], self.post_tfs[start:end], self.block_max[first:last]

    def run_weights(self, row: int) -> np.ndarray:
        """The precomputed weights (`posting_weights`) of one term's run."""
        return self.weights[int(self.offsets[row]) : int(self.offsets[row + 1])]


def _group(first_rows: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stable order grouping postings by term, dense term row of each posting).

    `rows` are counter values (sparse); `first_rows` the value each term got, increasing. A
    gather through a table (O(n)) makes them dense; uint16 rows sort by radix (O(n)).
    """
    table = np.zeros(int(first_rows[-1]) + 1 if first_rows.size else 1, dtype=np.int64)
    table[first_rows] = np.arange(first_rows.shape[0])
    dense = table[rows]
    small = dense.astype(np.uint16) if first_rows.shape[0] <= 65536 else dense
    return np.argsort(small, kind="stable"), dense


def freeze(
    terms: list[str],
    first_rows: np.ndarray,
    rows: np.ndarray,
    ids: np.ndarray,
    tfs: np.ndarray,
    chunk_ids: np.ndarray,
    lengths: np.ndarray,
    alive: np.ndarray,
    removed: np.ndarray,
) -> Segment:
    """A segment from flat (term counter row, chunk id, tf) postings, minus removed chunks.

    `first_rows` are the counter values each term got at its first occurrence (increasing).
    """
    keep = alive[ids]
    if not keep.all():
        rows, ids, tfs = rows[keep], ids[keep], tfs[keep]
        live_chunks = alive[chunk_ids]
        chunk_ids, lengths = chunk_ids[live_chunks], lengths[live_chunks]
    order, dense = _group(first_rows, rows)
    counts = np.bincount(dense, minlength=len(terms))
    present = counts > 0
    if not present.all():
        terms = [t for t, p in zip(terms, present.tolist(), strict=True) if p]
        counts = counts[present]
    offsets = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    top = int(chunk_ids.max()) if chunk_ids.size else 0
    return Segment(
        new_name(),
        terms,
        offsets,
        ids[order].astype(ids_dtype(top)),
        tfs[order],
        chunk_ids,
        lengths,
        np.asarray(removed, dtype=np.int64),
    )


def merge_segments(
    segments: Sequence[Segment], alive: np.ndarray, *, last: bool = False
) -> Segment:
    """One segment with the alive postings of `segments` (adjacent, oldest first).

    O(postings) numpy work plus one pass over the vocabularies; touches no shared state, so the
    writer runs it outside any lock. `alive` is read as given (pass a snapshot for a consistent
    result). The removals the inputs carried for older segments are kept, minus those of chunks
    the inputs held themselves (they are gone now); `last` (no older segment exists) drops all.
    """
    alive_len = alive.shape[0]

    def alive_of(ids: np.ndarray) -> np.ndarray:
        inside = ids < alive_len
        return (
            np.where(inside, alive[np.minimum(ids, alive_len - 1)], False) if alive_len else inside
        )

    # Union vocabulary in first-seen order, mapped with C-level setdefault.
    row_of: dict[str, int] = {}
    counter = itertools.count()
    sparse = [
        np.fromiter(
            map(row_of.setdefault, seg.terms, counter), dtype=np.int64, count=len(seg.terms)
        )
        for seg in segments
    ]
    vocabulary = list(row_of)
    first_rows = np.fromiter(row_of.values(), dtype=np.int64, count=len(vocabulary))
    mapped = [np.searchsorted(first_rows, rows) for rows in sparse]
    parts = []
    counts = np.zeros(len(vocabulary), dtype=np.int64)
    for seg, rows in zip(segments, mapped, strict=True):
        if not seg.postings:
            continue
        seg_counts = np.diff(seg.offsets)
        keep = alive_of(np.asarray(seg.post_ids))
        kept_counts = np.bincount(
            np.repeat(np.arange(len(seg.terms)), seg_counts)[keep], minlength=len(seg.terms)
        )
        parts.append(
            (rows, kept_counts, np.asarray(seg.post_ids)[keep], np.asarray(seg.post_tfs)[keep])
        )
        counts[rows] += kept_counts
    offsets = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    chunk_ids = np.concatenate(
        [np.asarray(s.chunk_ids) for s in segments] + [np.zeros(0, np.int64)]
    )
    top = int(chunk_ids.max()) if chunk_ids.size else 0
    out_ids = np.empty(total, dtype=ids_dtype(top))
    out_tfs = np.empty(total, dtype=TF)
    cursor = offsets[:-1].copy()
    for rows, kept_counts, ids, tfs in parts:
        # Segment order is kept inside each term: destination = the term's cursor + the rank of
        # the posting within its (contiguous) run in this segment.
        starts = cursor[rows]
        run_starts = np.cumsum(kept_counts) - kept_counts
        within = np.arange(ids.shape[0]) - np.repeat(run_starts, kept_counts)
        destination = np.repeat(starts, kept_counts) + within
        out_ids[destination] = ids
        out_tfs[destination] = tfs
        cursor[rows] += kept_counts
    present = counts > 0
    if not present.all():
        vocabulary = [t for t, p in zip(vocabulary, present.tolist(), strict=True) if p]
        offsets = np.concatenate([[0], np.cumsum(counts[present])]).astype(np.int64)
    lengths = np.concatenate([np.asarray(s.lengths) for s in segments] + [np.zeros(0, np.float32)])
    live = alive_of(chunk_ids)
    if last:
        removed = np.zeros(0, np.int64)
    else:
        carried = np.unique(np.concatenate([np.asarray(s.removed) for s in segments]))
        removed = np.setdiff1d(carried, chunk_ids).astype(np.int64)
    return Segment(
        new_name(),
        vocabulary,
        offsets,
        out_ids,
        out_tfs,
        chunk_ids[live].astype(np.int64),
        lengths[live].astype(np.float32),
        removed,
    )
