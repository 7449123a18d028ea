from __future__ import annotations

import pytest

from indexer.fusion import FusionWeights, promote, reciprocal_rank_fusion


def test_rrf_scores_and_weights() -> None:
    fused = dict(reciprocal_rank_fusion([(["a", "b"], 1.0), (["b", "c"], 1.0)], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    weighted = reciprocal_rank_fusion([(["a"], 2.0), (["c"], 1.0)], k=60)
    assert [d for d, _ in weighted] == ["a", "c"]


def test_promote_puts_exact_matches_first() -> None:
    fused = [("x", 0.03), ("y", 0.02), ("id", 0.01)]
    assert [d for d, _ in promote(fused, ["id"])] == ["id", "x", "y"]
    assert promote(fused, []) == fused


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        FusionWeights(vector=0, lexical=0)
    with pytest.raises(ValueError):
        FusionWeights(k=0)
