from __future__ import annotations

import math

import pytest

from indexer.evaluation import evaluate, mrr_at, ndcg_at, recall_at


def test_metrics_by_hand() -> None:
    relevant = {"a": 1, "b": 1}
    ranked = ["x", "a", "y", "b"]
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, relevant, 10) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / idcg
    )
    assert recall_at(ranked, relevant, 2) == 0.5
    assert mrr_at(ranked, relevant, 10) == 0.5
    assert ndcg_at(["a", "b"], relevant, 10) == pytest.approx(1.0)


def test_evaluate_skips_unjudged_queries() -> None:
    quality = evaluate(lambda q, k: ["a"], {"q1": "x", "q2": "y"}, {"q1": {"a": 1}})
    assert quality.queries == 1 and quality.ndcg_at_10 == 1.0
    with pytest.raises(ValueError):
        evaluate(lambda q, k: [], {"q": "x"}, {})
