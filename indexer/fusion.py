"""Weighted reciprocal rank fusion of the vector and lexical rankings.

RRF uses ranks, not scores, because cosine similarities and BM25 scores live on unrelated
scales; `k` (60, from Cormack et al.) damps the head so that one leg alone cannot dominate.
An exact identifier match is the exception: the vector leg cannot see an order id, so a document
that contains every identifier of the query is put first, ahead of fused results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# What a search ranks by: one leg alone, or both fused (the API and the CLI offer exactly these).
MODES = ("vector", "bm25", "hybrid")

RRF_K = 60


@dataclass(frozen=True)
class FusionWeights:
    vector: float = 1.0
    lexical: float = 1.0
    k: int = RRF_K

    def __post_init__(self) -> None:
        if self.vector < 0 or self.lexical < 0 or self.vector + self.lexical == 0:
            raise ValueError("fusion weights must be >= 0 and not both 0")
        if self.k < 1:
            raise ValueError("the RRF constant k must be >= 1")


def reciprocal_rank_fusion(
    rankings: Sequence[tuple[Sequence[str], float]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse (ranked doc ids, weight) lists; ties broken by first appearance, then id."""
    scores: dict[str, float] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for leg, (ranking, weight) in enumerate(rankings):
        for rank, doc_id in enumerate(ranking, start=1):
            held = scores.get(doc_id)
            if held is None:
                scores[doc_id] = 0.0 + weight / (k + rank)
                first_seen[doc_id] = (rank, leg)
            else:
                scores[doc_id] = held + weight / (k + rank)
    # Sorting (-score, first appearance, id) tuples is the order asked for, without a key
    # function call and its dict look-up per document (a query fuses ~200 documents).
    ordered = sorted((-score, first_seen[doc_id], doc_id) for doc_id, score in scores.items())
    return [(doc_id, -negated) for negated, _, doc_id in ordered]


def promote(fused: list[tuple[str, float]], exact: Sequence[str]) -> list[tuple[str, float]]:
    """Put exact-identifier matches (in their given order) ahead of everything else."""
    if not exact:
        return fused
    top = fused[0][1] if fused else 0.0
    exact_set = set(exact)
    promoted = [(doc_id, top + float(len(exact) - i)) for i, doc_id in enumerate(exact)]
    return promoted + [item for item in fused if item[0] not in exact_set]
