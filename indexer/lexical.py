"""The lexical leg: an incremental BM25 inverted index over the same chunks as the vector leg.

rank-bm25 (the design card's choice) rebuilds its statistics from the whole corpus on every
change and scores every document for every query term; a live index needs add/delete per event,
millisecond queries at 1M chunks, and a restart that does not re-analyze every chunk's text.

Layout (log-structured, like Lucene's segments, but keyed by our chunk ids):
- immutable segments (indexer/lexical_segment.py: CSR postings sorted by chunk id within each
  term, with per-block score bounds and per-posting weights; built by freezing the buffer and
  by merges), persisted by indexer/lexical_store.py, each written once;
- a small mutable buffer of the chunks added since the last freeze (frozen every
  BUFFER_CHUNKS chunks and at every `checkpoint`);
- per chunk id: alive, ever-used and length (dense arrays, 6 bytes per id).
Deletes only flip `alive` (O(1), nothing is rewritten under the write lock); the postings of
removed chunks disappear when segments are merged (`merge_segments`), which the snapshot writer
does outside any lock (lexical_store.LexicalStore.persist) and swaps in with one assignment.

BM25 statistics stay exact after deletions: N and the total length are maintained per add and
remove, and a term's df is its alive postings, counted per segment and cached until the next
remove, so rankings equal rank-bm25's over the live chunks (tests/indexer/test_lexical.py).
Query evaluation is exact top-k with range-level pruning (indexer/lexical_query.py).

Scoring is Okapi BM25 (k1=1.5, b=0.75, rank-bm25's defaults) with the always-positive Lucene
IDF, log(1 + (N - df + 0.5) / (df + 0.5)), so that very common terms never score negatively.
Chunk ids are never reused (Index.next_chunk_id only grows): `add` refuses an id that was
removed, because the segments' removed-id lists are global.
"""

from __future__ import annotations

import itertools
import math
import threading
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from indexer import analyzer
from indexer.lexical_exact import warm_up_exact
from indexer.lexical_maxscore import warm_up
from indexer.lexical_query import (
    Bounds,
    Scorer,
    Term,
    TopK,
    evaluate_segment,
    rescore,
    score_chunks,
    top_k,
)
from indexer.lexical_segment import K1, MAX_TF, TF, B, Segment, freeze, merge_segments

__all__ = [
    "BUFFER_CHUNKS",
    "COMPACT_DEAD_FRACTION",
    "INLINE_MERGE_CHUNKS",
    "K1",
    "MAX_TF",
    "B",
    "Checkpoint",
    "LexicalIndex",
    "Segment",
    "merge_segments",
]

# A full merge runs when the deltas hold more than this fraction of the base's chunks, or removed
# chunks are more than this fraction of all (kept for bench/lexical.py's churn phase).
COMPACT_DEAD_FRACTION = 0.25
BUFFER_CHUNKS = 1024
# Merges of not-yet-persisted segments happen inside `add` (under the index's write lock) only up
# to this size; bigger ones are the snapshot writer's, outside the lock.
INLINE_MERGE_CHUNKS = 2048
# Cached per-(segment, term) alive counts; cleared when it grows past this.
_DF_CACHE_ENTRIES = 1 << 16
# A filtered search (`allowed` chunk ids) with at most this many allowed chunks scores them
# directly (a binary search per term run per chunk: ~1 us a chunk for a 3-term query) instead of
# running MaxScore over the terms' postings, whose cost does not shrink with the filter.
FILTER_EXACT_CHUNKS = 4096
_TF = TF


class _Buffer:
    """Postings of the chunks added since the last freeze, as flat growable typed arrays.

    One (term row, chunk id, tf) triple per posting, appended per chunk in bulk: no per-term
    arrays to allocate, and freezing is one stable argsort. A query scans the buffer per term
    (O(buffer), at most BUFFER_CHUNKS chunks).
    """

    __slots__ = ("chunk_ids", "counter", "ids", "lengths", "rows", "tfs", "vocabulary")

    def __init__(self) -> None:
        self.vocabulary: dict[str, int] = {}
        self.counter = itertools.count()
        self.rows: array[int] = array("q")
        self.ids: array[int] = array("q")
        self.tfs: array[int] = array("H")
        self.chunk_ids: array[int] = array("q")
        self.lengths: array[float] = array("f")

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def postings_of(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        row = self.vocabulary.get(term)
        if row is None:
            return None
        where = np.flatnonzero(np.frombuffer(self.rows, dtype=np.int64) == row)
        return np.frombuffer(self.ids, dtype=np.int64)[where], np.frombuffer(self.tfs, dtype=_TF)[
            where
        ]


def _freeze(buffer: _Buffer, alive: np.ndarray, removed: np.ndarray) -> Segment:
    """The buffer as a segment, without the chunks that were removed while buffered."""
    terms = list(buffer.vocabulary)
    return freeze(
        terms,
        np.fromiter(buffer.vocabulary.values(), dtype=np.int64, count=len(terms)),
        np.frombuffer(buffer.rows, dtype=np.int64),
        np.frombuffer(buffer.ids, dtype=np.int64),
        np.frombuffer(buffer.tfs, dtype=_TF),
        np.frombuffer(buffer.chunk_ids, dtype=np.int64).copy(),
        np.frombuffer(buffer.lengths, dtype=np.float32).copy(),
        alive,
        removed,
    )


@dataclass(frozen=True)
class Checkpoint:
    """What one generation's lexical state is: its segments (oldest first) and who was alive."""

    segments: tuple[Segment, ...]
    alive: np.ndarray
    live_count: int


class LexicalIndex:
    """BM25 over chunk ids; `add`/`remove` per chunk, `search` returns top-k (id, score).

    Thread model: `add`/`remove`/`compact` are called under the index's write lock, searches
    under its read lock, `checkpoint` under its read lock (it excludes add/remove only); the
    segment list is swapped by single assignments under an internal lock, so a merge done by
    the snapshot writer outside the index lock (`replace`) never stalls a query.
    """

    def __init__(self) -> None:
        # (segments, buffer) as one tuple: a search reads both with one attribute load.
        self._view: tuple[tuple[Segment, ...], _Buffer] = ((), _Buffer())
        self._swap = threading.Lock()
        self._length = np.zeros(1024, dtype=np.float32)
        self._alive = np.zeros(1024, dtype=bool)
        self._used = np.zeros(1024, dtype=bool)
        self._live_count = 0
        self._total_length = 0.0
        self._removed_since_checkpoint: array[int] = array("q")
        self._scratch: list[np.ndarray] = []
        self._removals = 0  # bumped per remove: invalidates cached df counts
        self._df_cache: dict[tuple[str, str], tuple[int, int]] = {}

    @classmethod
    def from_segments(cls, segments: Sequence[Segment]) -> LexicalIndex:
        """The index a persisted segment list describes; no text is analyzed."""
        index = cls()
        tops = [int(s.chunk_ids.max()) for s in segments if s.chunks]
        tops += [int(s.removed.max()) for s in segments if s.removed.size]
        index._ensure_capacity(max(tops, default=0))
        total_chunks = 0
        for seg in segments:
            ids = np.asarray(seg.chunk_ids)
            index._used[ids] = True
            index._alive[ids] = True
            index._length[ids] = seg.lengths
            total_chunks += seg.chunks
        if int(np.count_nonzero(index._used)) != total_chunks:
            raise ValueError("lexical segments hold the same chunk id more than once")
        for seg in segments:
            if seg.removed.size:
                index._alive[np.asarray(seg.removed)] = False
        index._live_count = int(np.count_nonzero(index._alive))
        index._total_length = float(index._length[index._alive].sum(dtype=np.float64))
        index._view = (tuple(segments), _Buffer())
        compiled: set[tuple[str, bool]] = set()
        for seg in segments:
            variant = (seg.post_ids.dtype.str, bool(seg.post_ids.flags.writeable))
            if seg.postings and variant not in compiled:
                compiled.add(variant)
                warm_up(seg.post_ids, seg.weights, seg.block_max)
                warm_up_exact(seg.post_ids, seg.post_tfs, index._length)
        return index

    def __len__(self) -> int:
        return self._live_count

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._view[0]

    @property
    def total_length(self) -> float:
        return self._total_length

    def nbytes(self) -> int:
        """RAM held by postings and per-chunk arrays (vocabulary dicts not counted)."""
        segments, buffer = self._view
        buffered = len(buffer.rows) * 14
        dense = self._length.nbytes + self._alive.nbytes + self._used.nbytes
        return sum(s.nbytes for s in segments) + buffered + dense

    def _ensure_capacity(self, chunk_id: int) -> None:
        size = self._length.shape[0]
        if chunk_id >= size:
            size = max(chunk_id + 1, size * 2)
            grow = size - self._length.shape[0]
            self._length = np.concatenate([self._length, np.zeros(grow, np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, bool)])
            self._used = np.concatenate([self._used, np.zeros(grow, bool)])

    # -- writing --------------------------------------------------------------------------
    def add(self, chunk_id: int, text: str) -> None:
        self.add_terms(chunk_id, analyzer.analyze(text))

    def add_terms(self, chunk_id: int, terms: Iterable[str]) -> None:
        if chunk_id < 0:
            raise ValueError(f"chunk id {chunk_id} is negative")
        counts = Counter(terms)
        self._ensure_capacity(chunk_id)
        if self._used[chunk_id]:
            state = "already in" if self._alive[chunk_id] else "was removed from"
            raise ValueError(
                f"chunk {chunk_id} {state} the lexical index; chunk ids are never reused"
            )
        length = float(sum(counts.values()))
        self._length[chunk_id] = length
        self._alive[chunk_id] = True
        self._used[chunk_id] = True
        self._live_count += 1
        self._total_length += length
        buffer = self._view[1]
        # C-level setdefault with a running counter: a term's row is the counter value at its
        # first occurrence (rows are increasing in vocabulary order, not dense; _freeze ranks).
        buffer.rows.extend(map(buffer.vocabulary.setdefault, counts, buffer.counter))
        buffer.ids.extend([chunk_id] * len(counts))
        if length > MAX_TF:
            buffer.tfs.extend([min(tf, MAX_TF) for tf in counts.values()])
        else:
            buffer.tfs.extend(counts.values())
        buffer.chunk_ids.append(chunk_id)
        buffer.lengths.append(length)
        if len(buffer) >= BUFFER_CHUNKS:
            self._freeze_buffer(np.zeros(0, np.int64))
            self._merge_small()

    def remove(self, chunk_id: int, text: str | None = None) -> None:
        """Remove a chunk (O(1): its postings go at the next merge). `text` is not needed."""
        if chunk_id < 0 or chunk_id >= self._alive.shape[0] or not self._alive[chunk_id]:
            return
        self._alive[chunk_id] = False
        self._live_count -= 1
        self._total_length -= float(self._length[chunk_id])
        self._removed_since_checkpoint.append(chunk_id)
        self._removals += 1

    def _freeze_buffer(self, removed: np.ndarray) -> Segment | None:
        with self._swap:
            segments, buffer = self._view
            if not len(buffer) and not removed.size:
                return None
            segment = _freeze(buffer, self._alive, removed)
            self._view = ((*segments, segment), _Buffer())
            return segment

    def _merge_small(self) -> None:
        """Binary-counter merging of the trailing unpersisted segments, kept small (inline)."""
        while True:
            segments = self._view[0]
            if len(segments) < 2:
                return
            a, b = segments[-2], segments[-1]
            if a.checkpointed or b.checkpointed or a.weight > 2 * b.weight:
                return
            if a.chunks + b.chunks > INLINE_MERGE_CHUNKS:
                return
            self.replace((a, b), merge_segments((a, b), self._alive))

    def replace(self, old: Sequence[Segment], merged: Segment) -> None:
        """Swap adjacent segments for the one merged from them (one assignment, no stall)."""
        with self._swap:
            segments, buffer = self._view
            names = [s.name for s in segments]
            first = names.index(old[0].name)
            if names[first : first + len(old)] != [s.name for s in old]:
                raise ValueError("merged segments must be adjacent and still present")
            self._view = ((*segments[:first], merged, *segments[first + len(old) :]), buffer)

    def checkpoint(self) -> Checkpoint:
        """Freeze what changed since the last checkpoint into one segment (with its removals).

        Call with add/remove excluded (the snapshot writer holds the index's read lock);
        O(chunks added since the last checkpoint) plus an O(ids) copy of the alive flags (a
        memcpy of 1 byte per chunk id). Searches go on meanwhile.
        """
        removed = np.frombuffer(self._removed_since_checkpoint, dtype=np.int64).copy()
        self._removed_since_checkpoint = array("q")
        self._freeze_buffer(removed)
        for segment in self._view[0]:
            segment.checkpointed = True
        return Checkpoint(self._view[0], self._alive.copy(), self._live_count)

    def compact(self) -> None:
        """Merge everything into one segment without the removed chunks (call under write lock)."""
        self._freeze_buffer(np.zeros(0, np.int64))
        segments = self._view[0]
        if (
            len(segments) > 1
            or (segments and segments[0].removed.size)
            or any(s.postings and not self._alive[np.asarray(s.chunk_ids)].all() for s in segments)
        ):
            self.replace(segments, merge_segments(segments, self._alive, last=True))

    # -- reading --------------------------------------------------------------------------
    def _postings(
        self, term: str, segments: tuple[Segment, ...], buffer: _Buffer
    ) -> tuple[np.ndarray, np.ndarray] | None:
        ids_parts: list[np.ndarray] = []
        tf_parts: list[np.ndarray] = []
        sources: list[Segment | _Buffer] = [*segments, buffer]
        for source in sources:
            found = source.postings_of(term)
            if found is not None and found[0].shape[0]:
                ids_parts.append(found[0])
                tf_parts.append(found[1])
        if not ids_parts:
            return None
        if len(ids_parts) == 1:
            return ids_parts[0], tf_parts[0]
        return np.concatenate(ids_parts), np.concatenate(tf_parts)

    def document_frequency(self, term: str) -> int:
        segments, buffer = self._view
        found = self._postings(term, segments, buffer)
        return int(np.count_nonzero(self._alive[found[0]])) if found is not None else 0

    def chunks_with(self, term: str) -> set[int]:
        segments, buffer = self._view
        found = self._postings(term, segments, buffer)
        if found is None:
            return set()
        ids = found[0]
        return {int(i) for i in ids[self._alive[ids]]}

    def rare_term_chunks(self, term: str, limit: int) -> np.ndarray | None:
        """Live chunk ids holding `term`, or None when it has more than `limit` postings.

        For identifier promotion: an order id is in a handful of chunks, so reading its postings
        is O(those postings) plus a dictionary look-up per segment, never O(corpus). A term over
        `limit` postings (dead ones counted: the check reads run lengths only) is not read.
        """
        segments, buffer = self._view
        runs: list[np.ndarray] = []
        total = 0
        for seg in segments:
            row = seg.row_of(term)
            if row is None:
                continue
            start, end = int(seg.offsets[row]), int(seg.offsets[row + 1])
            total += end - start
            if total > limit:
                return None
            runs.append(seg.post_ids[start:end])
        buffered = buffer.postings_of(term)
        if buffered is not None:
            runs.append(buffered[0])
            total += int(buffered[0].shape[0])
            if total > limit:
                return None
        if not runs:
            return np.zeros(0, np.int64)
        ids = np.concatenate(runs).astype(np.int64, copy=False)
        return ids[self._alive[ids]]

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (chunk id, BM25); `allowed`: sorted chunk ids a filter lets through (the
        statistics stay the whole corpus', so a filtered hit scores as it would unfiltered)."""
        return self.search_terms(analyzer.analyze(query), k, allowed)

    def _allowed_mask(self, allowed: np.ndarray) -> np.ndarray:
        """`alive` restricted to `allowed`: O(len(allowed)) writes into a calloc'd array."""
        mask = np.zeros(self._alive.shape[0], dtype=bool)
        inside = allowed[allowed < mask.shape[0]]
        mask[inside] = self._alive[inside]
        return mask

    def _alive_in(self, seg: Segment, term: str, ids: np.ndarray, none_dead: bool) -> int:
        """Alive postings of one run: O(run) once, then O(1) until the next remove."""
        if none_dead:
            return int(ids.shape[0])
        key = (seg.name, term)
        cached = self._df_cache.get(key)
        if cached is not None and cached[0] == self._removals:
            return cached[1]
        count = int(np.count_nonzero(self._alive[ids.astype(np.intp)]))  # intp: ~10x faster
        if len(self._df_cache) >= _DF_CACHE_ENTRIES:
            self._df_cache.clear()
        self._df_cache[key] = (self._removals, count)
        return count

    def search_terms(
        self, query_terms: list[str], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if self._live_count == 0 or k <= 0 or (allowed is not None and not allowed.shape[0]):
            return []
        segments, buffer = self._view
        alive = self._alive
        # Who may be returned: the alive chunks, ANDed with the filter's when there is one
        # (the kernel then checks every posting: Term.all_alive is False).
        eligible = alive if allowed is None else self._allowed_mask(allowed)
        n = float(self._live_count)
        avgdl = max(self._total_length / n, 1e-9)
        # Every chunk held is alive (no remove since the last full merge): df = run lengths.
        none_dead = sum(s.chunks for s in segments) + len(buffer) == self._live_count
        # Per term: (df, weight, runs per segment, buffer postings)
        found: list[tuple[int, str, int, list[tuple[Segment, int, bool]], tuple | None]] = []
        for term, count in Counter(query_terms).items():
            df = 0
            runs = []
            for seg in segments:
                row = seg.row_of(term)
                if row is None:
                    continue
                ids = seg.post_ids[int(seg.offsets[row]) : int(seg.offsets[row + 1])]
                alive_here = self._alive_in(seg, term, ids, none_dead)
                if alive_here:
                    df += alive_here
                    runs.append((seg, row, alive_here == ids.shape[0]))
            buffered = buffer.postings_of(term)
            if buffered is not None:
                keep = alive[buffered[0]]
                df += int(np.count_nonzero(keep))
                buffered = (buffered[0][keep], buffered[1][keep])
            if df:
                found.append((df, term, count, runs, buffered))
        if not found:
            return []
        # Rarest first, ties by term: the float32 summation order depends only on the live
        # corpus, never on how it is split into segments.
        found.sort(key=lambda f: (f[0], f[1]))
        scorer = Scorer(self._length, np.float32(K1 * B / avgdl), np.float32(K1 * (1.0 - B)), avgdl)
        weights = {t: c * math.log1p((n - df + 0.5) / (df + 0.5)) for df, t, c, _, _ in found}
        if allowed is not None and allowed.shape[0] <= FILTER_EXACT_CHUNKS:
            inside = allowed[allowed < eligible.shape[0]]
            return self._score_allowed(found, weights, scorer, inside[eligible[inside]], k)
        filtered = allowed is not None
        per_segment: dict[str, list[Term]] = {}
        for _, term, _, runs, _ in found:
            for seg, row, all_alive in runs:
                ids, tfs, block_max = seg.run(row)
                per_segment.setdefault(seg.name, []).append(
                    Term(
                        weights[term],
                        row,
                        ids,
                        tfs,
                        block_max,
                        all_alive and not filtered,
                        seg.run_weights(row),
                    )
                )
        top = TopK(k)
        scratch = self._take_scratch()
        try:
            buffered_terms = [
                (b[0], scorer.score(b[0], b[1], weights[t]))
                for _, t, _, _, b in found
                if b is not None
            ]
            if filtered:
                buffered_terms = [(i[eligible[i]], v[eligible[i]]) for i, v in buffered_terms]
            if buffered_terms:
                score_chunks(buffered_terms, scratch, top)
            # Biggest segments first: they set theta that prunes the others.
            for seg in sorted(segments, key=lambda s: -s.chunks):
                terms = per_segment.get(seg.name)
                if terms:
                    bounds = Bounds.of(seg.avgdl_ref, avgdl)
                    evaluate_segment(terms, seg, bounds, eligible, top, scorer)
        except BaseException:
            scratch.fill(0.0)
            raise
        finally:
            self._scratch.append(scratch)
        # Every offer was scored exactly, rarest term first: the same float32 sum whatever the
        # segmentation (indexer/lexical_exact.py).
        return top.result()

    @staticmethod
    def _score_allowed(
        found: list[tuple[int, str, int, list[tuple[Segment, int, bool]], tuple | None]],
        weights: dict[str, float],
        scorer: Scorer,
        candidates: np.ndarray,
        k: int,
    ) -> list[tuple[int, float]]:
        """Exact top-k over a few allowed chunks: `rescore` of them all (the same float32 sums
        as the pruned path's final rescoring, so both paths rank alike); a chunk holding no
        query term scores 0 and is not a hit."""
        candidates = candidates.astype(np.int64)
        exact = rescore(candidates, _term_runs(found), [weights[f[1]] for f in found], scorer)
        hit = exact > 0.0
        return top_k(candidates[hit], exact[hit], k) if hit.any() else []

    def _take_scratch(self) -> np.ndarray:
        """A float32 array by chunk id, all zeros (one per concurrent search, pooled)."""
        size = self._length.shape[0]
        try:
            scratch = self._scratch.pop()
        except IndexError:
            scratch = np.zeros(size, np.float32)
        if scratch.shape[0] < size:
            scratch = np.zeros(size, np.float32)
        return scratch


def precompile_kernels() -> None:
    """Every compiled kernel variant a process can meet (ids int32/int64, arrays built or
    read-only memory maps), for images whose package directory is read-only at run time: the
    Dockerfile runs this at build time, where numba's cache next to the modules can be written."""
    length = np.zeros(1, np.float32)
    for ids_dtype in (np.int32, np.int64):
        for writeable in (True, False):
            arrays = [
                np.zeros(1, ids_dtype),
                np.zeros(1, np.float32),
                np.zeros(1, np.float32),
                np.zeros(1, TF),
            ]
            for made in arrays:
                made.flags.writeable = writeable
            post_ids, weights, block_max, post_tfs = arrays
            warm_up(post_ids, weights, block_max)
            warm_up_exact(post_ids, post_tfs, length)


def _term_runs(
    found: list[tuple[int, str, int, list[tuple[Segment, int, bool]], tuple | None]],
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per query term (rarest first): its (sorted chunk ids, tfs) runs, the buffer's included."""
    term_runs = []
    for _, _, _, runs, buffered in found:
        pairs = [seg.run(row)[:2] for seg, row, _ in runs]
        if buffered is not None and buffered[0].shape[0]:
            order = np.argsort(buffered[0], kind="stable")
            pairs.append((buffered[0][order], buffered[1][order]))
        term_runs.append(pairs)
    return term_runs
