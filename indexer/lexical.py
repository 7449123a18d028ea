"""The lexical leg: an incremental BM25 inverted index over the same chunks as the vector leg.

rank-bm25 (the design card's choice) rebuilds its statistics from the whole corpus on every
change and scores every document for every query term; a live index needs add/delete per event
and millisecond queries at 100k+ chunks. So postings are kept per term in growable typed arrays,
scored with numpy over only the chunks that contain a query term, and deletions are tombstones
that update the statistics at once and are compacted away later. rank-bm25 stays as the
reference implementation the parity tests compare rankings against.

Scoring is Okapi BM25 (k1=1.5, b=0.75, rank-bm25's defaults) with the always-positive Lucene
IDF, log(1 + (N - df + 0.5) / (df + 0.5)), so that very common terms never score negatively.
"""

from __future__ import annotations

from array import array
from collections import Counter

import numpy as np

from indexer.analyzer import analyze

K1 = 1.5
B = 0.75
COMPACT_DEAD_FRACTION = 0.25


class _Postings:
    __slots__ = ("df", "ids", "tfs")

    def __init__(self) -> None:
        self.ids = array("q")
        self.tfs = array("f")
        self.df = 0


class LexicalIndex:
    """BM25 over chunk ids; `add`/`remove` per chunk, `search` returns top-k (id, score)."""

    def __init__(self) -> None:
        self._postings: dict[str, _Postings] = {}
        self._length = np.zeros(1024, dtype=np.float32)
        self._alive = np.zeros(1024, dtype=bool)
        self._live_count = 0
        self._total_length = 0.0
        self._dead_postings = 0
        self._all_postings = 0

    def __len__(self) -> int:
        return self._live_count

    def _ensure_capacity(self, chunk_id: int) -> None:
        if chunk_id >= self._length.shape[0]:
            size = max(chunk_id + 1, self._length.shape[0] * 2)
            self._length = np.concatenate(
                [self._length, np.zeros(size - self._length.shape[0], np.float32)]
            )
            self._alive = np.concatenate([self._alive, np.zeros(size - self._alive.shape[0], bool)])

    def add(self, chunk_id: int, text: str) -> None:
        terms = Counter(analyze(text))
        self._ensure_capacity(chunk_id)
        if self._alive[chunk_id]:
            raise ValueError(f"chunk {chunk_id} is already in the lexical index")
        length = float(sum(terms.values()))
        self._length[chunk_id] = length
        self._alive[chunk_id] = True
        self._live_count += 1
        self._total_length += length
        for term, tf in terms.items():
            postings = self._postings.get(term)
            if postings is None:
                postings = self._postings[term] = _Postings()
            postings.ids.append(chunk_id)
            postings.tfs.append(float(tf))
            postings.df += 1
        self._all_postings += len(terms)

    def remove(self, chunk_id: int, text: str) -> None:
        """Remove a chunk; `text` is the text it was added with (its terms are recomputed)."""
        if chunk_id >= self._alive.shape[0] or not self._alive[chunk_id]:
            return
        self._alive[chunk_id] = False
        self._live_count -= 1
        self._total_length -= float(self._length[chunk_id])
        terms = set(analyze(text))
        for term in terms:
            postings = self._postings.get(term)
            if postings is not None:
                postings.df -= 1
        self._dead_postings += len(terms)
        if self._dead_postings > COMPACT_DEAD_FRACTION * max(self._all_postings, 1):
            self.compact()

    def compact(self) -> None:
        """Drop deleted chunks from the postings so queries stop skipping over them."""
        alive = self._alive
        for term in list(self._postings):
            postings = self._postings[term]
            ids = np.frombuffer(postings.ids, dtype=np.int64)
            keep = alive[ids]
            if keep.all():
                continue
            if not keep.any():
                del self._postings[term]
                continue
            fresh = _Postings()
            fresh.ids = array("q", ids[keep].tobytes())
            fresh.tfs = array("f", np.frombuffer(postings.tfs, dtype=np.float32)[keep].tobytes())
            fresh.df = postings.df
            self._postings[term] = fresh
        self._all_postings -= self._dead_postings
        self._dead_postings = 0

    def document_frequency(self, term: str) -> int:
        postings = self._postings.get(term)
        return postings.df if postings else 0

    def chunks_with(self, term: str) -> set[int]:
        postings = self._postings.get(term)
        if postings is None:
            return set()
        ids = np.frombuffer(postings.ids, dtype=np.int64)
        return {int(i) for i in ids[self._alive[ids]]}

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_terms(analyze(query), k)

    def search_terms(self, query_terms: list[str], k: int) -> list[tuple[int, float]]:
        if self._live_count == 0 or k <= 0:
            return []
        n = float(self._live_count)
        avgdl = self._total_length / n if n else 1.0
        scores = np.zeros(self._length.shape[0], dtype=np.float32)
        touched = []
        for term, weight in Counter(query_terms).items():
            postings = self._postings.get(term)
            if postings is None or postings.df <= 0:
                continue
            ids = np.frombuffer(postings.ids, dtype=np.int64)
            tfs = np.frombuffer(postings.tfs, dtype=np.float32)
            idf = np.log1p((n - postings.df + 0.5) / (postings.df + 0.5))
            norm = K1 * (1.0 - B + B * self._length[ids] / max(avgdl, 1e-9))
            scores[ids] += (weight * idf) * tfs * (K1 + 1.0) / (tfs + norm)
            touched.append(ids)
        if not touched:
            return []
        # Every touched chunk scores > 0 (idf and tf are positive): nonzero after masking the
        # deleted ones is the candidate set, without sorting the concatenated postings.
        scores[~self._alive] = 0.0
        candidates = np.flatnonzero(scores)
        if candidates.size == 0:
            return []
        candidate_scores = scores[candidates]
        k = min(k, candidates.size)
        top = np.argpartition(-candidate_scores, k - 1)[:k]
        top = top[np.lexsort((candidates[top], -candidate_scores[top]))]
        return [(int(candidates[i]), float(candidate_scores[i])) for i in top]
