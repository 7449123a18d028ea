"""Exact top-k BM25 evaluation over segments: seeded MaxScore with block-bounded terms.

Why not the previous evaluation (term-at-a-time MaxScore from an empty top k): queries made only
of common terms ("patients cells increased") gave it no threshold until most postings were
scored; it counted every term's df over all its postings per query; and numpy indexing with the
int32 chunk ids of the segment files is ~10x slower than with intp. Per-posting
document-at-a-time WAND is a Python loop per posting here, so evaluation stays whole-array:

A chunk's postings all live in one segment (or the buffer), so each segment is evaluated on its
own, biggest first, against a top k shared by all (`TopK`; its k-th score, theta, is a lower
bound of the final k-th best and only grows):
1. seed theta (`_seed`): exact scores of the chunks holding the query's rarest terms (and, for
   a common term, only its postings in the blocks with the highest bounds) by binary search in
   every term's run - a few hundred chunks, the likeliest results;
2. MaxScore partition: each term's upper bound is weight (k1 + 1) times its best block bound
   (indexer/lexical_segment.py), scaled to the current avgdl; the lowest-bound terms whose
   bounds sum below theta are *optional*: a chunk holding only those cannot reach the top k;
3. the essential terms' postings are scored into a pooled scratch array (one pass each);
4. candidates whose score plus the remaining optional bounds is below theta are dropped, and
   each optional term (highest bound first) only adds to the survivors: by binary search when
   they are few, else by one gather over its run - its postings are never scored otherwise.
Exact: only chunks that provably cannot reach theta are skipped; ties are broken by chunk id
(`top_k`); the tests check against exhaustive rank-bm25 scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.lexical_segment import BLOCK, K1, Segment

# Segments whose query postings are at most this many are scored exhaustively.
EXHAUSTIVE_POSTINGS = 512
# theta is seeded (`_seed`) in segments whose query postings are at least SEED_POSTINGS:
SEED_CHUNKS = 4  # seed from at least this many times k chunks,
SEED_POSTINGS = 4 * 1024
# Candidates are looked up by binary search when this many times fewer than a run's postings.
LOOKUP_RATIO = 16
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
    ids: np.ndarray
    tfs: np.ndarray
    block_max: np.ndarray  # per BLOCK postings (indexer/lexical_segment.py)
    all_alive: bool


class TopK:
    """The best k (id, score) found so far, over disjoint sets of fully scored chunks."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.ids = np.zeros(0, np.int64)
        self.scores = np.zeros(0, np.float32)
        self.theta = 0.0  # lower bound of the final k-th best score (0 until k are known)

    def offer(self, ids: np.ndarray, scores: np.ndarray) -> None:
        if self.theta > 0.0:
            keep = scores >= self.theta
            ids, scores = ids[keep], scores[keep]
        if not ids.shape[0]:
            return
        ids = np.concatenate([self.ids, ids.astype(np.int64)])
        scores = np.concatenate([self.scores, scores])
        if scores.shape[0] > self.k:
            kth = np.partition(scores, scores.shape[0] - self.k)[scores.shape[0] - self.k]
            keep = scores >= kth  # ties at the k-th are kept: `top_k` breaks them by id
            ids, scores = ids[keep], scores[keep]
            self.theta = float(kth)
        elif scores.shape[0] == self.k:
            self.theta = float(scores.min())
        self.ids, self.scores = ids, scores

    def result(self) -> list[tuple[int, float]]:
        return top_k(self.ids, self.scores, self.k)


def score_chunks(
    terms: Sequence[tuple[float, np.ndarray, np.ndarray]],
    scorer: Scorer,
    alive: np.ndarray,
    scratch: np.ndarray,
    top: TopK,
    filter_dead: bool,
) -> None:
    """Sum every term's postings given (all of each chunk's postings) into `top`.

    `scratch` (float32 by chunk id, all zeros) accumulates and is zeroed again where written.
    Duplicates (a chunk once per term) are removed through the same array viewed as int32:
    each entry writes its position, the entry whose position survived is the chunk's one.
    """
    parts = []
    for weight, run_ids, tfs in terms:
        ids = run_ids.astype(np.intp)  # numpy indexes with intp ~10x faster than with int32
        if filter_dead and ids.shape[0]:
            keep = alive[ids]
            ids, tfs = ids[keep], tfs[keep]
        if ids.shape[0]:
            scratch[ids] += scorer.score(ids, tfs, weight)
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


def _kth(values: np.ndarray, k: int) -> float:
    """The k-th largest value (0.0 when fewer): a lower bound of the final k-th best score."""
    if values.shape[0] < k:
        return 0.0
    return float(np.partition(values, values.shape[0] - k)[values.shape[0] - k])


def _lookup(candidates: np.ndarray, values: np.ndarray, term: Term, scorer: Scorer) -> None:
    """Add `term`'s contributions to `values` of sorted-or-not `candidates` (binary search)."""
    ids = term.ids
    # Probes of the run's own dtype: a mixed-dtype searchsorted would convert the whole run.
    where = np.searchsorted(ids, candidates.astype(ids.dtype))
    np.minimum(where, ids.shape[0] - 1, out=where)
    hit = ids[where] == candidates
    values[hit] += scorer.score(candidates[hit], term.tfs[where[hit]], term.weight)


def _seed(terms: Sequence[Term], scorer: Scorer, alive: np.ndarray, k: int) -> float:
    """theta from the exact scores of the chunks holding the query's rarest terms.

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
        _lookup(candidates, values, term, scorer)
    return _kth(values, k)


def evaluate_segment(
    terms: Sequence[Term],
    seg: Segment,
    scorer: Scorer,
    alive: np.ndarray,
    scratch: np.ndarray,
    top: TopK,
) -> None:
    """Offer every chunk of `seg` that can be in the top k, fully scored (module docstring)."""
    filter_dead = not all(t.all_alive for t in terms)
    postings = sum(int(t.ids.shape[0]) for t in terms)
    if postings <= EXHAUSTIVE_POSTINGS or len(terms) == 1:
        score_chunks(
            [(t.weight, t.ids, t.tfs) for t in terms], scorer, alive, scratch, top, filter_dead
        )
        return
    k = top.k
    theta = top.theta
    if postings >= SEED_POSTINGS and theta == 0.0:  # later segments share the first's theta
        # Slack: the seed sums in another order than the main pass (float32 rounding).
        theta = max(theta, _seed(terms, scorer, alive, k) * (1.0 - 1e-5))
    scale = max(1.0, scorer.avgdl / seg.avgdl_ref) * _MARGIN
    bounds = [t.weight * (K1 + 1.0) * float(t.block_max.max()) * scale for t in terms]
    by_bound = sorted(range(len(terms)), key=lambda i: (bounds[i], i))
    # MaxScore partition: a chunk matching only the lowest-bound terms, whose bounds sum below
    # theta, cannot reach the top k, so only the other (essential) terms' postings are read.
    optional: list[int] = []
    total = 0.0
    for i in by_bound[:-1]:
        if total + bounds[i] >= theta:
            break
        total += bounds[i]
        optional.append(i)
    skip = set(optional)
    # Highest bound first: the later terms' bounds (`after`) shrink, so more of their blocks close.
    essential = sorted((i for i in range(len(terms)) if i not in skip), key=lambda i: -bounds[i])
    after = sum(bounds[i] for i in essential) + total
    parts: list[np.ndarray] = []
    for i in essential:
        term = terms[i]
        after -= bounds[i]
        ids, tfs = term.ids.astype(np.intp), term.tfs
        if theta > 0.0:
            # A block whose bound plus every later term's cannot reach theta starts no
            # candidate: a chunk first met there cannot reach the top k. Its postings only add
            # to the chunks already scored (non-zero in scratch).
            block_bounds = term.block_max * np.float32(term.weight * (K1 + 1.0) * scale)
            open_blocks = block_bounds + np.float32(after) >= np.float32(theta)
            if not open_blocks.all():
                is_open = np.repeat(open_blocks, BLOCK)[: ids.shape[0]]
                closed, closed_tfs = ids[~is_open], tfs[~is_open]
                ids, tfs = ids[is_open], tfs[is_open]
                if parts:
                    hit = scratch[closed] > 0.0
                    found = closed[hit]
                    scratch[found] += scorer.score(found, closed_tfs[hit], term.weight)
        if filter_dead:
            keep = alive[ids]
            ids, tfs = ids[keep], tfs[keep]
        if ids.shape[0]:
            scratch[ids] += scorer.score(ids, tfs, term.weight)
            parts.append(ids)
        if parts and after > 0.0:
            # Lower bound of the k-th best: entries hold a chunk once per term, so the
            # (k * terms)-th largest entry is at most the k-th largest distinct chunk.
            entries = np.concatenate(parts) if len(parts) > 1 else parts[0]
            theta = max(theta, _kth(scratch[entries], k * len(parts)))
    if not parts:
        return
    candidates = np.concatenate(parts) if len(parts) > 1 else parts[0]
    values = scratch[candidates]
    if len(parts) > 1:
        positions = np.arange(candidates.shape[0], dtype=np.int32)
        marks = scratch.view(np.int32)
        marks[candidates] = positions
        first = marks[candidates] == positions
        candidates, values = candidates[first], values[first]
    scratch[candidates] = 0.0
    rest = total
    for i in reversed(optional):  # highest bound first: prunes the most, soonest
        theta = max(theta, _kth(values, k))
        keep = values + np.float32(rest) >= np.float32(theta)
        if not keep.all():
            candidates, values = candidates[keep], values[keep]
        if not candidates.shape[0]:
            return
        term = terms[i]
        rest -= bounds[i]
        if candidates.shape[0] * LOOKUP_RATIO < term.ids.shape[0]:
            _lookup(candidates, values, term, scorer)
        else:
            ids = term.ids.astype(np.intp)
            scratch[candidates] = values
            hit = scratch[ids] > 0.0  # only candidates (alive, scored) are non-zero
            found = ids[hit]
            scratch[found] += scorer.score(found, term.tfs[hit], term.weight)
            values = scratch[candidates]
            scratch[candidates] = 0.0
    top.offer(candidates, values)


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (id, score), ties broken by chunk id, so equal states rank identically."""
    if k < scores.shape[0]:
        threshold = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        selected = scores >= threshold
        ids, scores = ids[selected], scores[selected]
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]
