"""Exact top-k BM25 evaluation over segments: seeded, compiled MaxScore over posting weights.

Why weights: scoring a posting with the formula gathers its chunk's length from a corpus-sized
array (a cache miss per posting at 1M chunks). Segments store each posting's length-normalised
weight at the avgdl they were built with (indexer/lexical_segment.py); a posting then costs a
contiguous read times the term's idf. At today's avgdl the exact score of a chunk of a segment
is its weights' score times a factor in [lo, hi] (`Bounds`, 1 when the avgdl has not moved), so
the search keeps an interval per candidate and rescores the survivors exactly at the end.

A chunk's postings all live in one segment (or the buffer), so each segment is evaluated on its
own, biggest first, against candidates shared by all (`TopK`; theta, the k-th best lower end of
their intervals, is a lower bound of the final k-th best exact score and only grows); within a
segment thresholds are on the weights' scale (theta / hi; a k-th best t proves t * lo):
1. seed theta (`_seed`): scores of the chunks holding the query's rarest terms (and, for
   a common term, only its postings in the blocks with the highest bounds) by binary search in
   every term's run - a few hundred chunks, the likeliest results - so that the first segment
   starts pruning at once;
2. document-at-a-time block-max MaxScore (indexer/lexical_maxscore.py, compiled): only the
   essential terms' postings are walked, the others looked up while a chunk can still make it;
3. `rescore`: the candidates whose upper end reaches theta (k plus the few inside the band)
   get their exact scores at today's avgdl, summed rarest term first, so scores do not depend
   on how the corpus is split into segments; ties are broken by chunk id (`top_k`).
The buffer (chunks not yet frozen, a few thousand) is scored exhaustively (`score_chunks`).
Exact: only chunks that provably cannot reach theta are skipped; the tests check against
exhaustive rank-bm25 scoring, also with segments built at a very different avgdl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.lexical_maxscore import maxscore
from indexer.lexical_segment import BLOCK, K1, Segment

# theta is seeded (`_seed`) in segments whose query postings are at least SEED_POSTINGS:
SEED_CHUNKS = 4  # seed from at least this many times k chunks,
SEED_POSTINGS = 4 * 1024
# MaxScore re-partitions its terms by their local block bounds every this many chunk ids.
WINDOW_IDS = 4096
_MARGIN = 1.0 + 1e-4  # bounds are inflated by this against float32 rounding


@dataclass(frozen=True)
class Scorer:
    length: np.ndarray  # chunk id -> length
    slope: np.float32  # k1 * b / avgdl
    floor: np.float32  # k1 * (1 - b)
    avgdl: float

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


@dataclass(frozen=True)
class Term:
    """One query term in one segment: its run, and whether dead postings must be filtered."""

    weight: float  # query-term count * idf
    row: int  # the term's row in the segment
    ids: np.ndarray
    tfs: np.ndarray
    block_max: np.ndarray  # per BLOCK postings (indexer/lexical_segment.py)
    all_alive: bool
    ws: np.ndarray  # per posting weights at the segment's avgdl_ref (lexical_segment.py)


def contributions(ws: np.ndarray, weight: float) -> np.ndarray:
    """Approximate BM25 contributions: precomputed weights times the term's idf (float32)."""
    return ws * np.float32(weight)


class TopK:
    """Candidates for the top k, each with an interval [lo, hi] holding its exact score.

    Segments score with weights precomputed at their own avgdl (lexical_segment.py); at the
    current avgdl a chunk's exact score lies within known factors of that (`Bounds`). theta,
    the k-th largest lo, is a lower bound of the final k-th best exact score and only grows;
    a chunk whose hi is below it cannot be in the top k (nor tie with it). `result` rescores
    the survivors exactly (few: k plus those within the band) and breaks ties by chunk id.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.ids = np.zeros(0, np.int64)
        self.lo = np.zeros(0, np.float64)
        self.hi = np.zeros(0, np.float64)
        self.theta = 0.0  # lower bound of the final k-th best score (0 until k are known)

    def offer(self, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        if self.theta > 0.0:
            keep = hi >= self.theta
            ids, lo, hi = ids[keep], lo[keep], hi[keep]
        if not ids.shape[0]:
            return
        ids = np.concatenate([self.ids, ids.astype(np.int64)])
        lo = np.concatenate([self.lo, lo])
        hi = np.concatenate([self.hi, hi])
        if lo.shape[0] >= self.k:
            kth = float(np.partition(lo, lo.shape[0] - self.k)[lo.shape[0] - self.k])
            if kth > self.theta:
                self.theta = kth
                keep = hi >= kth
                ids, lo, hi = ids[keep], lo[keep], hi[keep]
        self.ids, self.lo, self.hi = ids, lo, hi

    def offer_approximate(self, ids: np.ndarray, values: np.ndarray, bounds: Bounds) -> None:
        approx = values.astype(np.float64)
        self.offer(ids, approx * bounds.lo, approx * bounds.hi)

    def result(self, exact: np.ndarray) -> list[tuple[int, float]]:
        """The top k given the exact scores (float32) of `self.ids`, ties broken by chunk id."""
        return top_k(self.ids, exact, self.k)


@dataclass(frozen=True)
class Bounds:
    """Factors bracketing a segment's exact scores by its approximate (weights') scores.

    r = avgdl_ref / avgdl: each term's denominator at the current avgdl is the stored one times
    a factor in [min(1, r), max(1, r)], so exact / approximate lies in
    [1 / max(1, r), 1 / min(1, r)]; widened by _MARGIN against float32 rounding.
    """

    lo: float
    hi: float

    @classmethod
    def of(cls, avgdl_ref: float, avgdl: float) -> Bounds:
        r = avgdl_ref / avgdl
        return cls(1.0 / (max(1.0, r) * _MARGIN), _MARGIN / min(1.0, r))


EXACT = Bounds(1.0, 1.0)


def score_chunks(
    terms: Sequence[tuple[np.ndarray, np.ndarray]],
    scratch: np.ndarray,
    top: TopK,
    bounds: Bounds,
) -> None:
    """Sum every term's (chunk ids, contributions) into `top` (all of each chunk's postings).

    `scratch` (float32 by chunk id, all zeros) accumulates and is zeroed again where written.
    Duplicates (a chunk once per term) are removed through the same array viewed as int32:
    each entry writes its position, the entry whose position survived is the chunk's one.
    """
    parts = []
    for ids, values in terms:
        if ids.shape[0]:
            scratch[ids] += values
            parts.append(ids)
    if not parts:
        return
    all_ids = np.concatenate(parts) if len(parts) > 1 else parts[0]
    values = scratch[all_ids]
    if len(parts) > 1:
        positions = np.arange(all_ids.shape[0], dtype=np.int32)
        marks = scratch.view(np.int32)
        marks[all_ids] = positions
        first = marks[all_ids] == positions
        all_ids, values = all_ids[first], values[first]
    scratch[all_ids] = 0.0
    top.offer_approximate(all_ids, values, bounds)


def rescore(
    candidates: np.ndarray,
    runs: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    weights: Sequence[float],
    scorer: Scorer,
) -> np.ndarray:
    """Exact float32 scores of `candidates`: per term (in the given order), every run's
    (sorted chunk ids, tfs) searched for them (a chunk's postings are all in one run)."""
    values = np.zeros(candidates.shape[0], np.float32)
    if not candidates.shape[0]:
        return values
    for term_runs, weight in zip(runs, weights, strict=True):
        for ids, tfs in term_runs:
            if not ids.shape[0]:
                continue
            where = np.searchsorted(ids, candidates.astype(ids.dtype))
            np.minimum(where, ids.shape[0] - 1, out=where)
            hit = ids[where] == candidates
            found = candidates[hit]
            if found.shape[0]:
                values[hit] += scorer.score(found, tfs[where[hit]], weight)
    return values


def _kth(values: np.ndarray, k: int) -> float:
    """The k-th largest value (0.0 when fewer): a lower bound of the final k-th best score."""
    if values.shape[0] < k:
        return 0.0
    return float(np.partition(values, values.shape[0] - k)[values.shape[0] - k])


def _lookup(candidates: np.ndarray, values: np.ndarray, term: Term) -> None:
    """Add `term`'s approximate contributions to `values` of `candidates` (binary search)."""
    ids = term.ids
    # Probes of the run's own dtype: a mixed-dtype searchsorted would convert the whole run.
    where = np.searchsorted(ids, candidates.astype(ids.dtype))
    np.minimum(where, ids.shape[0] - 1, out=where)
    hit = ids[where] == candidates
    values[hit] += contributions(term.ws[where[hit]], term.weight)


def _seed(terms: Sequence[Term], alive: np.ndarray, k: int) -> float:
    """theta (approximate) from the scores of the chunks holding the query's rarest terms.

    Those chunks are the likeliest results, and few: each is looked up in every term's run by
    binary search. They are not offered (the main pass scores them again, in its own order):
    only their k-th best score is kept, a valid lower bound of the final k-th best.
    """
    by_rarity = sorted(terms, key=lambda t: t.ids.shape[0])
    need = SEED_CHUNKS * k
    picked: list[np.ndarray] = []
    count = 0
    for term in by_rarity:
        if count >= need:
            break
        ids = term.ids
        if count + ids.shape[0] <= need:
            picked.append(ids)
            count += ids.shape[0]
            continue
        # A common term: only its postings in the blocks with the highest bounds.
        blocks = min(-(-(need - count) // BLOCK), term.block_max.shape[0])
        best = np.argpartition(-term.block_max, blocks - 1)[:blocks]
        starts = best.astype(np.intp) * BLOCK
        ends = np.minimum(starts + BLOCK, ids.shape[0])
        sizes = ends - starts
        where = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))
        picked.append(ids[where])
        count += where.shape[0]
    candidates = np.unique(np.concatenate(picked)) if len(picked) > 1 else picked[0]
    candidates = candidates.astype(np.intp)
    candidates = candidates[alive[candidates]]
    if candidates.shape[0] < k:
        return 0.0
    values = np.zeros(candidates.shape[0], np.float32)
    for term in terms:
        _lookup(candidates, values, term)
    return _kth(values, k)


def evaluate_segment(
    terms: Sequence[Term], seg: Segment, bounds: Bounds, alive: np.ndarray, top: TopK
) -> None:
    """Offer every chunk of `seg` that can be in the top k, with approximate scores bracketed by
    `bounds` (module docstring), found by the compiled MaxScore (indexer/lexical_maxscore.py).

    Thresholds there are on the weights' scale: a chunk whose approximate upper bound is below
    top.theta / bounds.hi cannot reach the exact top k, and k approximate scores of at least t
    prove an exact k-th best of at least t * bounds.lo."""
    k = top.k
    shrink = bounds.lo / bounds.hi
    theta = top.theta / bounds.hi
    postings = sum(int(t.ids.shape[0]) for t in terms)
    if postings >= SEED_POSTINGS and top.theta == 0.0:  # later segments share the first's theta
        # Slack: the seed sums in another order than the kernel (float32 rounding).
        theta = max(theta, _seed(terms, alive, k) * shrink * (1.0 - 1e-5))
    rows = np.asarray([t.row for t in terms], dtype=np.int64)
    offsets = np.asarray(seg.offsets, dtype=np.int64)
    ids, approximate, _ = maxscore(
        seg.post_ids,
        seg.weights,
        seg.block_max,
        offsets[rows],
        offsets[rows + 1],
        np.asarray(seg.block_offsets, dtype=np.int64)[rows],
        np.asarray([t.weight for t in terms], dtype=np.float64),
        alive,
        not all(t.all_alive for t in terms),
        k,
        theta,
        shrink,
        (K1 + 1.0) * _MARGIN,
        WINDOW_IDS,
    )
    if ids.shape[0]:
        top.offer(ids, approximate * bounds.lo, approximate * bounds.hi)


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (id, score), ties broken by chunk id, so equal states rank identically."""
    if k < scores.shape[0]:
        threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        selected = scores >= threshold
        ids, scores = ids[selected], scores[selected]
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]
