"""Weighted reciprocal rank fusion of the vector and lexical rankings, and identifier promotion.

RRF uses ranks, not scores, because cosine similarities and BM25 scores live on unrelated
scales; `k` (60, from Cormack et al.) damps the head so that one leg alone cannot dominate.
Weights and k are per request (`FusionWeights`); the defaults are Settings' (SEMSEARCH_FUSION_*).

An exact identifier match is the exception to averaging: the vector leg cannot tell
`ORD-85461-WR` from `ORD-85462-WR`, so averaging its ranks with BM25's throws away a perfect
lexical answer. Documents holding identifiers of the query therefore come first, wherever the
identifier stands in the query (`promote`); fusion only orders documents that hold equally many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# What a search ranks by: one leg alone, or both fused (the API and the CLI offer exactly these).
MODES = ("vector", "bm25", "hybrid")

RRF_K = 60
# Beyond this, 1/(k + rank) hardly differs between ranks: fusion would degenerate into counting
# the legs a document is in. Settings' bound on SEMSEARCH_FUSION_RRF_K is the same number.
MAX_RRF_K = 10_000


class FusionSettings(Protocol):
    """Where the defaults come from (`contracts.settings.Settings` has these, structurally)."""

    @property
    def fusion_vector_weight(self) -> float: ...
    @property
    def fusion_lexical_weight(self) -> float: ...
    @property
    def fusion_rrf_k(self) -> int: ...


@dataclass(frozen=True)
class FusionWeights:
    """How a hybrid search fuses its legs; invalid values raise ValueError naming the field."""

    vector: float = 1.0
    lexical: float = 1.0
    k: int = RRF_K

    def __post_init__(self) -> None:
        for name, value in (("vector", self.vector), ("lexical", self.lexical)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"weights.{name} must be a number (got {value!r})")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"weights.{name} must be a finite number >= 0 (got {value!r})")
        if self.vector == 0 and self.lexical == 0:
            raise ValueError(
                "weights.vector and weights.lexical are both 0: at least one leg must count "
                "(use mode=vector or mode=bm25 for one leg alone)"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_RRF_K:
            raise ValueError(f"rrf_k must be an integer from 1 to {MAX_RRF_K} (got {self.k!r})")

    @classmethod
    def of(cls, settings: FusionSettings) -> FusionWeights:
        return cls(settings.fusion_vector_weight, settings.fusion_lexical_weight, settings.fusion_rrf_k)

    def with_overrides(
        self, vector: float | None = None, lexical: float | None = None, k: int | None = None
    ) -> FusionWeights:
        """These weights with the given parts replaced (a request names only what it changes)."""
        return FusionWeights(
            self.vector if vector is None else vector,
            self.lexical if lexical is None else lexical,
            self.k if k is None else k,
        )

    def to_json(self) -> dict[str, object]:
        return {"weights": {"vector": self.vector, "lexical": self.lexical}, "rrf_k": self.k}


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


def promote(
    fused: list[tuple[str, float]], matches: Mapping[str, int]
) -> list[tuple[str, float]]:
    """Documents holding identifiers of the query ahead of all others, more identifiers first.

    `matches` maps a document to how many of the query's distinct identifiers it holds. Within
    one count the fused order decides; matches neither leg retrieved follow their tier's fused
    ones, by id. So a document holding an identifier is never below one lacking it, and one
    holding both ids of a two-id query is above one holding either. The cost is O(fused +
    matches); promoted scores rise above the best fused score in rank order.
    """
    if not matches:
        return fused
    tiers: dict[int, list[str]] = {}
    rest: list[tuple[str, float]] = []
    for item in fused:
        held = matches.get(item[0])
        if held is None:
            rest.append(item)
        else:
            tiers.setdefault(held, []).append(item[0])
    if len(fused) - len(rest) < len(matches):
        in_fused = {doc_id for doc_id, _ in fused}
        for doc_id in sorted(d for d in matches if d not in in_fused):
            tiers.setdefault(matches[doc_id], []).append(doc_id)
    ordered = [doc_id for held in sorted(tiers, reverse=True) for doc_id in tiers[held]]
    top = fused[0][1] if fused else 0.0
    return [(doc_id, top + float(len(ordered) - i)) for i, doc_id in enumerate(ordered)] + rest
