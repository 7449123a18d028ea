"""The lexical leg: an incremental BM25 inverted index over the same chunks as the vector leg.

rank-bm25 (the design card's choice) rebuilds its statistics from the whole corpus on every
change and scores every document for every query term; a live index needs add/delete per event,
millisecond queries at 1M chunks, and a restart that does not re-analyze every chunk's text.

Layout (log-structured, like Lucene's segments, but keyed by our chunk ids):
- immutable `Segment`s: a vocabulary (term -> row), CSR postings (offsets, chunk ids, term
  frequencies) and the ids and lengths of the chunks they hold, as numpy arrays (no Python object
  per posting). A segment also carries the ids of chunks *removed* from older segments since the
  segment before it, so that persisting a generation is O(change): indexer/lexical_store.py
  writes each new segment once and the manifest lists them (base, then deltas);
- a small mutable buffer of the chunks added since the last freeze (frozen every
  BUFFER_CHUNKS chunks and at every `checkpoint`);
- per chunk id: alive, ever-used and length (dense arrays, 6 bytes per id).
Deletes only flip `alive` (O(1), nothing is rewritten under the write lock); the postings of
removed chunks disappear when segments are merged (`merge_segments`), which the snapshot writer
does outside any lock (lexical_store.LexicalStore.persist) and swaps in with one assignment.

BM25 statistics stay exact after deletions: N and the total length are maintained per add and
remove, and a term's df is counted at query time as its alive postings - which the query reads
anyway - so rankings equal rank-bm25's over the live chunks (tests/indexer/test_lexical.py).
A query costs O(postings of its terms): terms are scored rarest first into a pooled scratch
array (4 bytes per chunk id, one per concurrent search, zeroed again only where touched: never
allocated or scanned per query), and exact MaxScore pruning lets common terms, once no unseen
chunk can reach the top k, only update chunks already scored. Measured at 1M synthetic chunks
(2 shared cores): p50 2-3 ms, p99 10-15 ms; the slow tail is queries made only of common terms,
where nothing can be pruned (block-max WAND over id-sorted postings would be the next step).

Scoring is Okapi BM25 (k1=1.5, b=0.75, rank-bm25's defaults) with the always-positive Lucene
IDF, log(1 + (N - df + 0.5) / (df + 0.5)), so that very common terms never score negatively.
Chunk ids are never reused (Index.next_chunk_id only grows): `add` refuses an id that was
removed, because the segments' removed-id lists are global.
"""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from indexer import analyzer

K1 = 1.5
B = 0.75
# A full merge runs when the deltas hold more than this fraction of the base's chunks, or removed
# chunks are more than this fraction of all (kept for bench/lexical.py's churn phase).
COMPACT_DEAD_FRACTION = 0.25
BUFFER_CHUNKS = 1024
# Merges of not-yet-persisted segments happen inside `add` (under the index's write lock) only up
# to this size; bigger ones are the snapshot writer's, outside the lock.
INLINE_MERGE_CHUNKS = 2048
MAX_TF = 65535
_TF = np.uint16


def _new_name() -> str:
    return f"lex-{uuid.uuid4().hex[:12]}"


def _ids_dtype(max_id: int) -> type[np.signedinteger]:
    return np.int32 if max_id < 2**31 else np.int64


class Segment:
    """Immutable postings of a set of chunks, plus the ids removed from older segments."""

    __slots__ = (
        "checkpointed",
        "chunk_ids",
        "file",
        "lengths",
        "lookup",
        "name",
        "offsets",
        "post_ids",
        "post_tfs",
        "removed",
        "terms",
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
    ) -> None:
        self.name = name
        self.terms = terms
        self.lookup = dict(zip(terms, range(len(terms)), strict=True))
        self.offsets = offsets
        self.post_ids = post_ids
        self.post_tfs = post_tfs
        self.chunk_ids = chunk_ids
        self.lengths = lengths
        self.removed = removed
        self.file = file  # set by lexical_store once written
        # Part of a checkpoint (or loaded): its chunks belong to a generation being written, so
        # it may only be merged by that writer, never inline with newer segments.
        self.checkpointed = file is not None

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
        )
        return sum(int(a.nbytes) for a in arrays)

    def postings_of(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        row = self.lookup.get(term)
        if row is None:
            return None
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.post_ids[start:end], self.post_tfs[start:end]


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


def _freeze(buffer: _Buffer, alive: np.ndarray, removed: np.ndarray) -> Segment:
    """The buffer as a segment, without the chunks that were removed while buffered."""
    terms = list(buffer.vocabulary)
    first_rows = np.fromiter(buffer.vocabulary.values(), dtype=np.int64, count=len(terms))
    rows = np.frombuffer(buffer.rows, dtype=np.int64)
    ids = np.frombuffer(buffer.ids, dtype=np.int64)
    tfs = np.frombuffer(buffer.tfs, dtype=_TF)
    chunk_ids = np.frombuffer(buffer.chunk_ids, dtype=np.int64).copy()
    lengths = np.frombuffer(buffer.lengths, dtype=np.float32).copy()
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
        _new_name(),
        terms,
        offsets,
        ids[order].astype(_ids_dtype(top)),
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

    # Union vocabulary in first-seen order, mapped with C-level setdefault (see add_terms).
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
    out_ids = np.empty(total, dtype=_ids_dtype(top))
    out_tfs = np.empty(total, dtype=_TF)
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
        _new_name(),
        vocabulary,
        offsets,
        out_ids,
        out_tfs,
        chunk_ids[live].astype(np.int64),
        lengths[live].astype(np.float32),
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

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_terms(analyzer.analyze(query), k)

    def search_terms(self, query_terms: list[str], k: int) -> list[tuple[int, float]]:
        if self._live_count == 0 or k <= 0:
            return []
        segments, buffer = self._view
        alive = self._alive
        n = float(self._live_count)
        avgdl = max(self._total_length / n, 1e-9)
        terms: list[_QueryTerm] = []
        for term, weight in Counter(query_terms).items():
            found = self._postings(term, segments, buffer)
            if found is None:
                continue
            ids, tfs = found
            keep = alive[ids]
            df = int(np.count_nonzero(keep))
            if df == 0:
                continue
            idf = math.log1p((n - df + 0.5) / (df + 0.5))
            terms.append(_QueryTerm(ids, tfs, None if df == ids.shape[0] else keep, weight * idf))
        if not terms:
            return []
        scorer = _Scorer(self._length, np.float32(K1 * B / avgdl), np.float32(K1 * (1.0 - B)))
        if len(terms) == 1:
            ids, tfs = terms[0].alive_postings()
            return _top_k(ids, scorer.score(ids, tfs, terms[0].weight), k)
        candidates, scores = self._accumulate(terms, scorer, k)
        return _top_k(candidates, scores, k)

    def _accumulate(
        self, terms: list[_QueryTerm], scorer: _Scorer, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k candidates and their summed scores, in O(postings of the query terms).

        Term-at-a-time, rarest term first, into a pooled scratch array indexed by chunk id
        (one per concurrent search, zeroed again only where written). MaxScore pruning: once
        the best possible score of a chunk matching none of the terms processed so far (the
        sum of the remaining terms' upper bounds, weight * idf * (k1 + 1)) is below a lower
        bound of the current k-th best, the remaining - common, low-idf - terms only update
        the chunks already scored, so their long postings are read once and never scored.
        """
        terms.sort(key=lambda t: t.ids.shape[0])
        bounds = [t.weight * (K1 + 1.0) for t in terms]
        remaining = [sum(bounds[j:]) for j in range(len(terms))]
        size = scorer.length.shape[0]
        try:
            scratch = self._scratch.pop()
        except IndexError:
            scratch = np.zeros(size, np.float32)
        if scratch.shape[0] < size:
            scratch = np.zeros(size, np.float32)
        touched: list[np.ndarray] = []
        try:
            essential = 0
            for j, term in enumerate(terms):
                # No chunk scores above the bounds processed so far: pruning needs
                # remaining < k-th best <= that sum, so the partition is skipped until then.
                if (
                    touched
                    and remaining[j] < remaining[0] - remaining[j]
                    and _can_prune(scratch, touched, k, remaining[j])
                ):
                    break
                ids, tfs = term.alive_postings()
                if touched:
                    scratch[ids] += scorer.score(ids, tfs, term.weight)
                else:
                    scratch[ids] = scorer.score(ids, tfs, term.weight)  # scratch is all zeros
                touched.append(ids)
                essential = j + 1
            for term in terms[essential:]:
                seen = scratch[term.ids] > 0.0  # dead chunks were never scored: they stay 0
                if seen.any():
                    ids = term.ids[seen]
                    scratch[ids] += scorer.score(ids, term.tfs[seen], term.weight)
            all_ids = np.concatenate(touched)
            values = scratch[all_ids]
            scratch[all_ids] = 0.0
        except BaseException:
            scratch.fill(0.0)
            self._scratch.append(scratch)
            raise
        self._scratch.append(scratch)
        # A chunk appears once per essential term it matches: the top (k * terms) entries hold
        # at least k distinct chunks, so only entries at or above that value are deduplicated.
        wanted = k * len(touched)
        if wanted < values.shape[0]:
            threshold = np.partition(values, values.shape[0] - wanted)[values.shape[0] - wanted]
            selected = values >= threshold
            all_ids, values = all_ids[selected], values[selected]
        unique, first = np.unique(all_ids, return_index=True)
        return unique, values[first]


@dataclass(frozen=True)
class _QueryTerm:
    ids: np.ndarray
    tfs: np.ndarray
    keep: np.ndarray | None  # alive mask, None when every posting is alive
    weight: float  # query-term count * idf

    def alive_postings(self) -> tuple[np.ndarray, np.ndarray]:
        if self.keep is None:
            return self.ids, self.tfs
        return self.ids[self.keep], self.tfs[self.keep]


@dataclass(frozen=True)
class _Scorer:
    length: np.ndarray
    slope: np.float32  # k1 * b / avgdl
    floor: np.float32  # k1 * (1 - b)

    def score(self, ids: np.ndarray, tfs: np.ndarray, weight: float) -> np.ndarray:
        """BM25 contributions (float32, in place where possible: few temporaries)."""
        tf = tfs.astype(np.float32)
        denominator = self.length[ids]
        denominator *= self.slope
        denominator += self.floor
        denominator += tf
        tf *= np.float32(weight * (K1 + 1.0))
        tf /= denominator
        return tf


def _can_prune(scratch: np.ndarray, touched: list[np.ndarray], k: int, remaining: float) -> bool:
    """Whether no unseen chunk can reach the top k: `remaining` < a lower bound of the k-th best.

    Scores so far are lower bounds of the final ones; of the touched entries (a chunk once per
    term) the (k * terms)-th largest is <= the k-th largest distinct score.
    """
    entries = sum(t.shape[0] for t in touched)
    wanted = k * len(touched)
    if entries < wanted:
        return False
    values = scratch[np.concatenate(touched)] if len(touched) > 1 else scratch[touched[0]]
    kth = float(np.partition(values, entries - wanted)[entries - wanted])
    return remaining < kth


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (id, score), ties broken by chunk id, so equal states rank identically."""
    if k < scores.shape[0]:
        threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        selected = scores >= threshold
        ids, scores = ids[selected], scores[selected]
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]
