"""Exact BM25 scores of one segment's candidates, compiled (numba).

Why here and not in the final numpy rescoring (indexer/lexical_query.py `rescore`): that one
binary-searches every candidate in every term's run of every segment, ~40 searchsorted calls a
query of 6 segments, 1.7 ms at 1M chunks. A chunk's postings all live in the segment that found
it, so scoring the kernel's candidates right there, against that segment's runs only, costs
their number times the query's terms (~0.1 ms); the top k then needs no rescoring.

The arithmetic is `Scorer.score`'s, operation by operation in float32, and the terms are added
in the order given (the query's, rarest first): a chunk gets the same float32 score whichever
segment holds it and whichever path (this one, `rescore`) scored it. A test compares the two
bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from indexer.lexical_maxscore import advance


@njit(cache=True, nogil=True)
def exact_scores(
    post_ids: np.ndarray,
    post_tfs: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    term_weights: np.ndarray,
    candidates: np.ndarray,
    length: np.ndarray,
    slope: np.float32,
    floor: np.float32,
) -> np.ndarray:
    """float32 BM25 of each candidate (ascending chunk ids) over the terms' runs
    [starts[t], ends[t]) of one segment; term_weights[t] is count * idf * (k1 + 1) in float32,
    slope k1 b / avgdl, floor k1 (1 - b), both float32."""
    values = np.zeros(candidates.shape[0], np.float32)
    for t in range(starts.shape[0]):
        pos = int(starts[t])
        end = int(ends[t])
        weight = term_weights[t]
        for c in range(candidates.shape[0]):
            chunk = candidates[c]
            pos = advance(post_ids, pos, end, chunk)
            if pos >= end:
                break
            if post_ids[pos] != chunk:
                continue
            tf = np.float32(post_tfs[pos])
            denominator = length[chunk] * slope
            denominator = denominator + floor
            denominator = denominator + tf
            values[c] = values[c] + (tf * weight) / denominator
    return values


def warm_up_exact(post_ids: np.ndarray, post_tfs: np.ndarray, length: np.ndarray) -> None:
    """Compile (or load from the on-disk cache) `exact_scores` for arrays typed like these."""
    one = np.zeros(1, np.int64)
    exact_scores(
        post_ids[:1],
        post_tfs[:1],
        one,
        one,
        np.ones(1, np.float32),
        one,
        length[:1],
        np.float32(1.0),
        np.float32(1.0),
    )
