"""Retrieval quality on labelled queries: nDCG@10, recall@10/100, MRR@10 (BEIR definitions).

Used by `semsearch eval`, the migration gate and the recall monitor (query_api/monitor.py), so
a shadow index, the live index and the index behind the API are measured by exactly the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# A search function: (query, k) -> ranked doc ids.
Searcher = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class Quality:
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "ndcg@10": round(self.ndcg_at_10, 5),
            "recall@10": round(self.recall_at_10, 5),
            "recall@100": round(self.recall_at_100, 5),
            "mrr@10": round(self.mrr_at_10, 5),
            "queries": self.queries,
        }


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(
        (2 ** relevant.get(doc_id, 0) - 1) / math.log2(rank + 2)
        for rank, doc_id in enumerate(ranked[:k])
    )
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for rank, doc_id in enumerate(ranked[:k], start=1):
        if relevant.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def judged_queries(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The query ids that have at least one relevant document: the ones BEIR averages over."""
    judged = [qid for qid in queries if any(g > 0 for g in qrels.get(qid, {}).values())]
    if not judged:
        raise ValueError("no query has a relevance judgement; check that queries and qrels match")
    return judged


def evaluate(
    search: Searcher,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    progress: Callable[[int], None] | None = None,
) -> Quality:
    """Average metrics over the queries that have judgements (BEIR skips the rest)."""
    judged = judged_queries(queries, qrels)
    totals = [0.0, 0.0, 0.0, 0.0]
    for qid in judged:
        ranked = list(search(queries[qid], 100))
        relevant = qrels[qid]
        totals[0] += ndcg_at(ranked, relevant, 10)
        totals[1] += recall_at(ranked, relevant, 10)
        totals[2] += recall_at(ranked, relevant, 100)
        totals[3] += mrr_at(ranked, relevant, 10)
        if progress:
            progress(1)
    n = len(judged)
    return Quality(totals[0] / n, totals[1] / n, totals[2] / n, totals[3] / n, n)
