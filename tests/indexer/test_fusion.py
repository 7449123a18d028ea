from __future__ import annotations

import pytest

from contracts.settings import Settings
from indexer.fusion import MAX_RRF_K, FusionWeights, promote, reciprocal_rank_fusion


def test_rrf_scores_and_weights() -> None:
    fused = dict(reciprocal_rank_fusion([(["a", "b"], 1.0), (["b", "c"], 1.0)], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    weighted = reciprocal_rank_fusion([(["a"], 2.0), (["c"], 1.0)], k=60)
    assert [d for d, _ in weighted] == ["a", "c"]


def test_promote_puts_exact_matches_first() -> None:
    fused = [("x", 0.03), ("y", 0.02), ("id", 0.01)]
    assert [d for d, _ in promote(fused, {"id": 1})] == ["id", "x", "y"]
    assert promote(fused, {}) == fused


def test_promote_orders_by_identifiers_held_then_fused_order() -> None:
    fused = [("a", 0.05), ("b", 0.04), ("c", 0.03), ("d", 0.02), ("e", 0.01)]
    # d holds both ids; b and e one each; z and y hold one but neither leg retrieved them.
    promoted = promote(fused, {"d": 2, "e": 1, "b": 1, "z": 1, "y": 1})
    assert [doc for doc, _ in promoted] == ["d", "b", "e", "y", "z", "a", "c"]
    scores = [score for _, score in promoted]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert scores[4] > 0.05  # every match above the best fused score
    assert promoted[5:] == [("a", 0.05), ("c", 0.03)]  # the rest keep their fused scores
    assert [doc for doc, _ in promote([], {"q": 1})] == ["q"]


def test_bad_weights_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="both 0"):
        FusionWeights(vector=0, lexical=0)
    with pytest.raises(ValueError, match=r"weights\.vector"):
        FusionWeights(vector=-1)
    with pytest.raises(ValueError, match=r"weights\.lexical"):
        FusionWeights(lexical=float("nan"))
    with pytest.raises(ValueError, match=r"weights\.lexical"):
        FusionWeights(lexical=float("inf"))
    for k in (0, -3, MAX_RRF_K + 1):
        with pytest.raises(ValueError, match="rrf_k"):
            FusionWeights(k=k)
    assert FusionWeights(vector=0).lexical == 1.0 and FusionWeights(k=MAX_RRF_K).k == MAX_RRF_K


def test_defaults_come_from_settings_and_requests_override_parts() -> None:
    assert FusionWeights.of(Settings()) == FusionWeights()
    tuned = Settings(fusion_lexical_weight=2.0, fusion_rrf_k=20)
    weights = FusionWeights.of(tuned)
    assert weights == FusionWeights(1.0, 2.0, 20)
    assert weights.with_overrides(vector=0.5) == FusionWeights(0.5, 2.0, 20)
    assert weights.with_overrides(k=5).to_json() == {
        "weights": {"vector": 1.0, "lexical": 2.0},
        "rrf_k": 5,
    }


def test_settings_refuse_what_fusion_refuses() -> None:
    """contracts/ cannot import the fusion's bounds; Settings repeats them and must agree."""
    Settings(fusion_rrf_k=MAX_RRF_K)
    for bad in (
        {"fusion_rrf_k": MAX_RRF_K + 1},
        {"fusion_rrf_k": 0},
        {"fusion_vector_weight": -0.5},
        {"fusion_vector_weight": 0.0, "fusion_lexical_weight": 0.0},
    ):
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]
