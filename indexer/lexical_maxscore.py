"""Document-at-a-time block-max MaxScore over one segment, compiled (numba).

Why compiled: the whole-array evaluation this replaces (numpy, term at a time) pays for every
posting of every essential term and for the temporaries between passes, so at 1M chunks a query
of common words cost ~30 ms at p99. Document-at-a-time pruning needs a loop per posting, which in
Python is ~100x slower than the arrays; numba compiles that loop (cached on disk next to this
module, so a process pays the compile once per machine, not per start). We keep our own postings
(indexer/lexical_segment.py) rather than tantivy for the reasons in docs/SCALING.md: scores that
are exactly rank-bm25's (parity tests), one generation commit for text, vectors and postings.

The algorithm (Turtle & Flood's MaxScore with block bounds, as Lucene and PISA run it):
- terms sorted by upper bound (idf (k1 + 1) times their best block bound); the longest prefix of
  the lowest-bound terms whose bounds sum below the threshold is *non-essential*: a chunk that
  holds none of the other (essential) terms cannot reach the top k, so only the essential terms'
  postings are walked;
- each chunk met there is scored on the essential terms, then the non-essential ones are looked
  up, highest bound first, stopping as soon as the score plus what remains cannot reach the
  threshold; before the lookup, the bound of the term's block that holds the chunk (found by a
  shallow move over block ends) replaces the term's global bound;
- the threshold is the k-th best approximate score so far times `shrink` (a segment's weights
  bracket exact scores by a factor, see indexer/lexical_query.py `Bounds`), or the caller's
  theta if higher; when it rises, more terms become non-essential.
Every chunk whose approximate score reached the threshold at the time is returned (a superset of
the segment's top k and of the band the caller must rescore): the caller keeps the exact part.

Why dense windows: on text where every query term is common (a third of the chunks hold each),
pruning skips little and the cost is per posting and per chunk met. Listing the slots a window
meets and testing each one is a data-dependent branch per posting; mispredicted half the time it
cost ~40 ns a posting at 1M chunks, 10x a plain sum. A window whose essential postings cover at
least 1/dense_ratio of its ids (lexical_query.DENSE_WINDOW) is therefore summed without
branches and scanned whole, its candidates compacted branch-free (p99 of such queries 25 -> 10
ms at 1M chunks, docs/SCALING.md); a sparse window keeps the slot list, whose cost follows its
postings.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from indexer.lexical_segment import BLOCK

_END = np.iinfo(np.int64).max
# A non-essential term is gathered over the window when it has at most this many postings there
# per candidate that needs it (a gather is a few ns a posting, a lookup a few tens).
GATHER = 8


@njit(cache=True, nogil=True)
def _sift_down(heap: np.ndarray, size: int) -> None:
    i = 0
    value = heap[0]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value


@njit(cache=True, nogil=True)
def _sift_up(heap: np.ndarray, i: int) -> None:
    value = heap[i]
    while i > 0:
        parent = (i - 1) // 2
        if heap[parent] <= value:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = value


@njit(cache=True, nogil=True)
def advance(post_ids: np.ndarray, pos: int, end: int, target: int) -> int:
    """The first position of [pos, end) whose id is >= target: galloping from pos (the next
    posting is usually near: O(log gap)), then a binary search (positions never move back)."""
    if pos >= end or post_ids[pos] >= target:
        return pos
    step = 1
    lo = pos  # post_ids[lo] < target
    while pos + step < end and post_ids[pos + step] < target:
        lo = pos + step
        step *= 2
    hi = min(pos + step, end)  # post_ids[hi] >= target, or hi == end
    lo += 1
    while lo < hi:
        mid = (lo + hi) // 2
        if post_ids[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _local_bounds(
    post_ids: np.ndarray,
    block_max: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    first_block: np.ndarray,
    pos: np.ndarray,
    current: np.ndarray,
    idfs: np.ndarray,
    scale: float,
    high: int,
    local: np.ndarray,
) -> float:
    """Each term's bound over the window ending at `high` (the best of its blocks overlapping
    it, 0 when it has no posting there) into `local`; returns their sum."""
    everything = 0.0
    for t in range(start.shape[0]):
        local[t] = 0.0
        if current[t] >= high:
            continue
        best = 0.0
        b = (pos[t] - start[t]) // BLOCK
        first = start[t] + b * BLOCK
        while first < end[t] and post_ids[first] < high:
            best = max(best, block_max[first_block[t] + b])
            b += 1
            first += BLOCK
        local[t] = idfs[t] * scale * best
        everything += local[t]
    return everything


@njit(cache=True, nogil=True)
def _split(local: np.ndarray, order: np.ndarray, below: np.ndarray, threshold: float) -> int:
    """Terms by local bound ascending into `order`, prefix sums into `below`; returns how many
    of the lowest are non-essential (their bounds together stay below the threshold)."""
    n = local.shape[0]
    for i in range(n):  # insertion sort: a query has a handful of terms
        t = i
        j = i - 1
        while j >= 0 and local[order[j]] > local[t]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = t
    total = 0.0
    for i in range(n):
        total += local[order[i]]
        below[i] = total
    essential = 0
    while essential < n and below[essential] < threshold:
        essential += 1
    return essential


@njit(cache=True, nogil=True)
def _add(
    post_ids: np.ndarray,
    weights: np.ndarray,
    first: int,
    stop: int,
    idf: float,
    low: int,
    sums: np.ndarray,
    only_met: bool,
) -> None:
    """Postings [first, stop) into the window's sums; `only_met`: to slots already met only."""
    for p in range(first, stop):
        slot = post_ids[p] - low
        value = sums[slot]
        if not only_met or value != 0.0:
            sums[slot] = value + idf * weights[p]


@njit(cache=True, nogil=True)
def _add_sparse(
    post_ids: np.ndarray,
    weights: np.ndarray,
    first: int,
    stop: int,
    idf: float,
    low: int,
    sums: np.ndarray,
    slots: np.ndarray,
    touched: int,
) -> int:
    """Like _add, also listing the slots met for the first time; returns their count."""
    for p in range(first, stop):
        slot = post_ids[p] - low
        if sums[slot] == 0.0:
            slots[touched] = slot
            touched += 1
        sums[slot] += idf * weights[p]
    return touched


@njit(cache=True, nogil=True)
def maxscore(
    post_ids: np.ndarray,
    weights: np.ndarray,
    block_max: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    block_starts: np.ndarray,
    idfs: np.ndarray,
    alive: np.ndarray,
    check_alive: bool,
    k: int,
    theta: float,
    shrink: float,
    scale: float,
    window: int,
    dense_ratio: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(chunk ids, approximate scores) of the segment's chunks that can reach the top k, and
    how many postings were scored (what pruning saved is the rest: tests and benches read it).

    post_ids / weights / block_max are the segment's arrays; term t's run is
    [starts[t], ends[t]) and its blocks start at block_starts[t]; idfs[t] is its query weight;
    scale is (k1 + 1) times the float32 margin. theta is the caller's threshold (approximate
    scale), shrink what turns this segment's k-th best approximate score into one. The chunk
    ids are cut into windows of `window` ids; in each, a term's bound is the best bound of its
    blocks there, so the essential / non-essential split (and skipping a window) uses local
    bounds, as Lucene's MaxScoreBulkScorer does. A window is dense when its essential postings
    times dense_ratio reach its size.
    """
    n = starts.shape[0]
    start = starts.astype(np.int64)
    end = ends.astype(np.int64)
    first_block = block_starts.astype(np.int64)
    pos = start.copy()
    current = np.empty(n, np.int64)  # id at pos (_END when the run is exhausted)
    stop = np.empty(n, np.int64)  # first position at or after the window's end
    local = np.empty(n, np.float64)
    order = np.empty(n, np.int64)
    below = np.empty(n, np.float64)
    lookup = np.empty(n, np.int64)  # the window's non-essential terms looked up per candidate
    lookup_below = np.empty(n, np.float64)
    sums = np.zeros(window, np.float64)  # window slot -> sum so far (0: not met)
    slots = np.empty(window + 1, np.int64)
    candidate_sums = np.empty(window + 1, np.float64)
    heap = np.empty(max(k, 1), np.float64)
    size = 0
    out_ids = np.empty(256, np.int64)
    out_scores = np.empty(256, np.float64)
    found = 0
    scored = 0
    threshold = theta
    low = _END
    for t in range(n):
        current[t] = post_ids[pos[t]] if pos[t] < end[t] else _END
        low = min(low, current[t])
    while low != _END:
        high = low + window
        everything = _local_bounds(
            post_ids, block_max, start, end, first_block, pos, current, idfs, scale, high, local
        )
        if everything >= threshold:  # else no chunk of the window can make it: skipped
            essential = _split(local, order, below, threshold)
            window_postings = 0
            for i in range(essential, n):
                t = order[i]
                stop[t] = advance(post_ids, pos[t], end[t], high)
                window_postings += stop[t] - pos[t]
            # A dense window is summed without a branch per posting and scanned whole; a sparse
            # one lists the slots it meets (scanning all would cost more than its postings).
            dense = window_postings * dense_ratio >= window
            touched = 0
            for i in range(essential, n):
                t = order[i]
                if dense:
                    _add(post_ids, weights, pos[t], stop[t], idfs[t], low, sums, False)
                else:
                    touched = _add_sparse(
                        post_ids, weights, pos[t], stop[t], idfs[t], low, sums, slots, touched
                    )
                scored += stop[t] - pos[t]
                pos[t] = stop[t]
                current[t] = post_ids[pos[t]] if pos[t] < end[t] else _END
            if not dense:
                slots[:touched].sort()  # lookups below move forward only
            viable = 0  # chunks that the non-essential terms could still lift to the threshold
            if essential > 0:
                rest_all = below[essential - 1]
                if dense:
                    for slot in range(window):
                        viable += sums[slot] + rest_all >= threshold
                else:
                    for c in range(touched):
                        viable += sums[slots[c]] + rest_all >= threshold
            # A non-essential term with few window postings per viable chunk is added by one
            # pass over them; the others are looked up per candidate, which stops as soon as
            # the candidate cannot make it. In a dense window the pass adds to every slot: a
            # chunk holding no essential term stays below the threshold on the others alone.
            lookups = 0
            rest_bound = 0.0
            for i in range(essential):
                t = order[i]
                if local[t] == 0.0:
                    continue
                q = advance(post_ids, pos[t], end[t], high)
                if q - pos[t] <= GATHER * viable:
                    if dense:
                        _add(post_ids, weights, pos[t], q, idfs[t], low, sums, False)
                    else:
                        _add(post_ids, weights, pos[t], q, idfs[t], low, sums, True)
                    scored += q - pos[t]
                    pos[t] = q
                    current[t] = post_ids[q] if q < end[t] else _END
                else:
                    lookup[lookups] = t
                    rest_bound += local[t]
                    lookup_below[lookups] = rest_bound
                    lookups += 1
            # Candidates compacted in slot order (ascending chunk ids), the sums zeroed for the
            # next window; no branch per slot (a mispredicted one costs more than the slot).
            candidates = 0
            if dense:
                for slot in range(window):
                    value = sums[slot]
                    sums[slot] = 0.0
                    slots[candidates] = slot
                    candidate_sums[candidates] = value
                    candidates += (value > 0.0) & (value + rest_bound >= threshold)
            else:
                for c in range(touched):
                    slot = slots[c]
                    value = sums[slot]
                    sums[slot] = 0.0
                    slots[candidates] = slot
                    candidate_sums[candidates] = value
                    candidates += value + rest_bound >= threshold
            for c in range(candidates):
                score = candidate_sums[c]
                if score + rest_bound < threshold:  # the threshold rose since the compaction
                    continue
                chunk = low + slots[c]
                if check_alive and not alive[chunk]:
                    continue
                possible = True
                for i in range(lookups - 1, -1, -1):
                    if score + lookup_below[i] < threshold:
                        possible = False
                        break
                    t = lookup[i]
                    if current[t] > chunk:
                        continue
                    p = advance(post_ids, pos[t], end[t], chunk)
                    pos[t] = p
                    current[t] = post_ids[p] if p < end[t] else _END
                    if current[t] != chunk:
                        continue
                    block_bound = (
                        idfs[t] * scale * block_max[first_block[t] + (p - start[t]) // BLOCK]
                    )
                    rest = lookup_below[i - 1] if i > 0 else 0.0
                    if score + block_bound + rest < threshold:
                        possible = False
                        break
                    score += idfs[t] * weights[p]
                    scored += 1
                if not possible or score < threshold:
                    continue
                if found == out_ids.shape[0]:
                    grown_ids = np.empty(2 * found, np.int64)
                    grown_ids[:found] = out_ids
                    out_ids = grown_ids
                    grown_scores = np.empty(2 * found, np.float64)
                    grown_scores[:found] = out_scores
                    out_scores = grown_scores
                out_ids[found] = chunk
                out_scores[found] = score
                found += 1
                if size < k:
                    heap[size] = score
                    size += 1
                    _sift_up(heap, size - 1)
                elif score > heap[0]:
                    heap[0] = score
                    _sift_down(heap, size)
                if size == k and heap[0] * shrink > threshold:
                    threshold = heap[0] * shrink
        # The next window starts at the first posting at or after this one's end.
        low = _END
        for t in range(n):
            if current[t] < high:
                pos[t] = advance(post_ids, pos[t], end[t], high)
                current[t] = post_ids[pos[t]] if pos[t] < end[t] else _END
            low = min(low, current[t])
    return out_ids[:found], out_scores[:found], scored


def warm_up(post_ids: np.ndarray, weights: np.ndarray, block_max: np.ndarray) -> None:
    """Compile (or load from the on-disk cache) the kernel for arrays typed like these.

    numba compiles per argument type (id width, read-only memory maps vs built arrays); doing it
    when an index is opened keeps the seconds of a first compile off the first query.
    """
    one = np.zeros(1, np.int64)
    maxscore(
        post_ids[:1],
        weights[:1],
        block_max[:1],
        one,
        one,
        one,
        np.ones(1, np.float64),
        np.ones(1, dtype=bool),
        False,
        1,
        0.0,
        1.0,
        1.0,
        BLOCK,
        1,
    )
