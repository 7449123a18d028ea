"""The compiled per-segment exact scoring gives `rescore`'s float32 scores bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.lexical_exact import exact_scores
from indexer.lexical_query import Scorer, rescore
from indexer.lexical_segment import K1, B


@pytest.mark.parametrize("avgdl", [3.0, 57.3, 1234.5])
def test_exact_scores_equal_rescore_bit_for_bit(avgdl: float) -> None:
    rng = np.random.default_rng(11)
    chunks = 5000
    length = rng.integers(1, 400, chunks).astype(np.float32)
    scorer = Scorer(length, np.float32(K1 * B / avgdl), np.float32(K1 * (1.0 - B)), avgdl)
    runs = []
    for density in (0.6, 0.05, 0.002):  # common, middling and rare terms
        ids = np.flatnonzero(rng.random(chunks) < density).astype(np.int32)
        tfs = rng.integers(1, 30, ids.shape[0]).astype(np.uint16)
        runs.append((ids, tfs))
    weights = [0.37, 2.9, 7.61]  # count * idf, as the query computes them
    offsets = np.cumsum([0] + [r[0].shape[0] for r in runs]).astype(np.int64)
    post_ids = np.concatenate([r[0] for r in runs])
    post_tfs = np.concatenate([r[1] for r in runs])
    candidates = np.unique(rng.integers(0, chunks, 700)).astype(np.int64)

    want = rescore(candidates, [[r] for r in runs], weights, scorer)
    got = exact_scores(
        post_ids,
        post_tfs,
        offsets[:-1],
        offsets[1:],
        np.asarray([np.float32(w * (K1 + 1.0)) for w in weights], np.float32),
        candidates,
        length,
        scorer.slope,
        scorer.floor,
    )
    assert got.dtype == np.float32
    assert np.count_nonzero(want) > 100  # the candidates hold terms
    np.testing.assert_array_equal(got, want)  # bit for bit, not approximately
