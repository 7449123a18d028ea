"""Exact top-k BM25 evaluation over segments: seeded, compiled MaxScore over posting weights.

Why weights: scoring a posting with the formula gathers its chunk's length from a corpus-sized
array (a cache miss per posting at 1M chunks). Segments store each posting's length-normalised
weight at the avgdl they were built with (indexer/lexical_segment.py); a posting then costs a
contiguous read times the term's idf. At today's avgdl the exact score of a chunk of a segment
is its weights' score times a factor in [lo, hi] (`Bounds`, 1 when the avgdl has not moved), so
the kernel prunes on thresholds widened by that band and its few survivors are scored exactly.

A chunk's postings all live in one segment (or the buffer), so each segment is evaluated on its
own, biggest first, against candidates shared by all (`TopK`; theta, the k-th best exact score
so far, is a lower bound of the final k-th best and only grows); within a segment thresholds
are on the weights' scale (theta / hi; a k-th best t proves t * lo):
1. seed theta (`_seed`): scores of the chunks holding the query's rarest terms (and, for
   a common term, only its postings in the blocks with the highest bounds) by binary search in
   every term's run - a few hundred chunks, the likeliest results - so that the first segment
   starts pruning at once;
2. document-at-a-time block-max MaxScore (indexer/lexical_maxscore.py, compiled): only the
   essential terms' postings are walked, the others looked up while a chunk can still make it;
3. its candidates (k plus the few inside the band) scored exactly at today's avgdl against
   that segment's runs (indexer/lexical_exact.py), summed rarest term first, so scores do not
   depend on how the corpus is split into segments; ties are broken by chunk id (`top_k`).
The buffer (chunks not yet frozen, a few thousand) is scored exhaustively (`score_chunks`); a
filter that lets few chunks through scores them all (`rescore`, the same float32 sums).
Exact: only chunks that provably cannot reach theta are skipped; the tests check against
exhaustive rank-bm25 scoring, also with segments built at a very different avgdl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.lexical_exact import exact_scores
from indexer.lexical_maxscore import maxscore
from indexer.lexical_segment import BLOCK, K1, Segment

# theta is seeded (`_seed`) in segments whose query postings are at least SEED_POSTINGS:
SEED_CHUNKS = 4  # seed from at least this many times k chunks,
SEED_POSTINGS = 4 * 1024
# MaxScore re-partitions its terms by their local block bounds every this many chunk ids.
WINDOW_IDS = 4096
# A window is summed densely (no branch per posting) when its essential postings are at least
# 1/DENSE_WINDOW of its ids (indexer/lexical_maxscore.py): below that, scanning it costs more.
DENSE_WINDOW = 16
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
    """Candidates for the top k with their exact scores, shared by all segments.

    theta, the k-th best score so far, is a lower bound of the final k-th best and only grows;
    a chunk scoring below it cannot be in the top k (nor tie with it). Segments find their
    candidates with approximate weights (`Bounds`) and score them exactly before offering
    (indexer/lexical_exact.py), so the result needs no rescoring; ties are broken by chunk id.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.ids = np.zeros(0, np.int64)
        self.scores = np.zeros(0, np.float32)
        self.theta = 0.0  # lower bound of the final k-th best score (0 until k are known)

    def offer(self, ids: np.ndarray, scores: np.ndarray) -> None:
        """`scores`: exact float32 BM25 of `ids`."""
        if self.theta > 0.0:
            keep = scores >= self.theta
            ids, scores = ids[keep], scores[keep]
        if not ids.shape[0]:
            return
        ids = np.concatenate([self.ids, ids.astype(np.int64)])
        scores = np.concatenate([self.scores, scores.astype(np.float32)])
        kth = _kth(scores, self.k)
        if kth > self.theta:
            self.theta = kth
            keep = scores >= kth
            ids, scores = ids[keep], scores[keep]
        self.ids, self.scores = ids, scores

    def result(self) -> list[tuple[int, float]]:
        """The top k (id, score), ties broken by chunk id."""
        return top_k(self.ids, self.scores, self.k)


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


def score_chunks(
    terms: Sequence[tuple[np.ndarray, np.ndarray]], scratch: np.ndarray, top: TopK
) -> None:
    """Sum every term's (chunk ids, exact contributions) into `top` (all of each chunk's
    postings; for the buffer, whose chunks have no precomputed weights).

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
    top.offer(all_ids, values)


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
    terms: Sequence[Term],
    seg: Segment,
    bounds: Bounds,
    alive: np.ndarray,
    top: TopK,
    scorer: Scorer,
) -> None:
    """Offer, with exact scores, every chunk of `seg` that can be in the top k: found by the
    compiled MaxScore over approximate weights (indexer/lexical_maxscore.py), then scored
    exactly against this segment's runs (indexer/lexical_exact.py).

    Thresholds in the kernel are on the weights' scale: a chunk whose approximate upper bound
    is below top.theta / bounds.hi cannot reach the exact top k, and k approximate scores of at
    least t prove an exact k-th best of at least t * bounds.lo. `terms` are in the query's
    order (rarest first), which fixes the float32 sum."""
    k = top.k
    shrink = bounds.lo / bounds.hi
    theta = top.theta / bounds.hi
    postings = sum(int(t.ids.shape[0]) for t in terms)
    if postings >= SEED_POSTINGS and top.theta == 0.0:  # later segments share the first's theta
        # Slack: the seed sums in another order than the kernel (float32 rounding).
        theta = max(theta, _seed(terms, alive, k) * shrink * (1.0 - 1e-5))
    rows = np.asarray([t.row for t in terms], dtype=np.int64)
    starts = seg.offsets[rows]
    ends = seg.offsets[rows + 1]
    ids, _, _ = maxscore(
        seg.post_ids,
        seg.weights,
        seg.block_max,
        starts,
        ends,
        seg.block_offsets[rows],
        np.asarray([t.weight for t in terms], dtype=np.float64),
        alive,
        not all(t.all_alive for t in terms),
        k,
        theta,
        shrink,
        (K1 + 1.0) * _MARGIN,
        WINDOW_IDS,
        DENSE_WINDOW,
    )
    if ids.shape[0]:
        # The weight as Scorer.score rounds it: float32 of idf * count * (k1 + 1).
        weights = np.asarray([np.float32(t.weight * (K1 + 1.0)) for t in terms], np.float32)
        exact = exact_scores(
            seg.post_ids,
            seg.post_tfs,
            starts,
            ends,
            weights,
            ids,
            scorer.length,
            scorer.slope,
            scorer.floor,
        )
        top.offer(ids, exact)


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (id, score), ties broken by chunk id, so equal states rank identically."""
    if k < scores.shape[0]:
        threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        selected = scores >= threshold
        ids, scores = ids[selected], scores[selected]
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]
