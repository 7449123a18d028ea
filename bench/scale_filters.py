"""`bench.scale --filters`: filtered search at N chunks against exact filtered brute force.

Every synthetic document gets metadata from its number i (`metadata_of`): p = i % 2, c = i % 100,
m = i % 1000. Four selectivities, FILTERS_PER_LEVEL random filters each, covering equality,
a numeric range and $in:
    50 %   {"p": r}                       10 %   {"c": {"$gte": r, "$lt": r + 10}}
    1 %    {"c": r}                       0.1 %  {"m": {"$in": [r]}}
Each filter is paired with one query (a vector and a text drawn like the unfiltered queries).

Truth (document level, top 10): vector - exact cosine over every chunk of the matching documents
(max per document), from the bench's own vectors and metadata, not the index's filter path;
BM25 - the index's exact direct scoring of every allowed chunk (lexical.FILTER_EXACT_CHUNKS
lifted: a rescore of all of them, no pruning); hybrid - RRF (the index's weights) of those two
exact rankings cut at the legs' depth. Latency: the index's internal search with a precomputed
query vector under the read lock, filter evaluation included, against the same queries
unfiltered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench._stats import summary
from indexer import lexical
from indexer.filters import parse
from indexer.fusion import reciprocal_rank_fusion
from indexer.index import CANDIDATE_DEPTH, Index

FILTERS_PER_LEVEL = 20
TOP_K = 10
LEVELS = ("50%", "10%", "1%", "0.1%")


def metadata_of(doc_id: str) -> dict[str, Any]:
    i = int(doc_id.rsplit("-", 1)[-1])
    return {"p": i % 2, "c": i % 100, "m": i % 1000}


def _filter(level: str, rng: np.random.Generator) -> tuple[dict[str, Any], Callable[[int], bool]]:
    if level == "50%":
        r = int(rng.integers(0, 2))
        return {"p": r}, lambda i: i % 2 == r
    if level == "10%":
        r = int(rng.integers(0, 91))
        return {"c": {"$gte": r, "$lt": r + 10}}, lambda i: r <= i % 100 < r + 10
    if level == "1%":
        r = int(rng.integers(0, 100))
        return {"c": r}, lambda i: i % 100 == r
    r = int(rng.integers(0, 1000))
    return {"m": {"$in": [r]}}, lambda i: i % 1000 == r


def _recall(found: list[str], truth: list[str]) -> float:
    if not truth:
        return 1.0 if not found else 0.0
    return len(set(found[:TOP_K]) & set(truth[:TOP_K])) / min(TOP_K, len(truth))


def filters_phase(
    index: Index,
    ids: np.ndarray,
    vectors: np.ndarray,
    qvecs: np.ndarray,
    texts: list[str],
    seed: int,
) -> dict[str, Any]:
    """Recall@10 per mode and latency per level (see the module docstring)."""
    rng = np.random.default_rng(seed + 11)
    owners = index.documents.owner_ids(ids)
    doc_of_chunk = np.asarray([int(o.rsplit("-", 1)[-1]) if o else -1 for o in owners])
    unique_docs, doc_slot = np.unique(doc_of_chunk, return_inverse=True)
    depth = max(CANDIDATE_DEPTH, 3 * TOP_K)

    def run(text: str, qvec: np.ndarray, mode: str, where: dict[str, Any] | None) -> list[str]:
        node = parse(where) if where else None
        with index.lock.reading():
            allowed = index.documents.allowed(node) if node is not None else None
            if allowed is not None and not allowed:
                return []
            hits = index._search(
                text, qvec if mode != "bm25" else None, TOP_K, mode, None, allowed=allowed
            )
        return [h.doc_id for h in hits]

    def timed_run(
        text: str, qvec: np.ndarray, mode: str, where: dict[str, Any] | None
    ) -> tuple[list[str], float]:
        started = time.perf_counter()
        found = run(text, qvec, mode, where)
        return found, (time.perf_counter() - started) * 1000.0

    levels: dict[str, Any] = {}
    for q in range(min(10, len(texts))):  # warm-up
        run(texts[q], qvecs[q], "hybrid", {"c": q})
    for level in LEVELS:
        recalls: dict[str, list[float]] = {"vector": [], "bm25": [], "hybrid": []}
        latency: dict[str, list[float]] = {f"{m}{s}": [] for m in recalls for s in ("", "_unfiltered")}
        matched: list[int] = []
        for j in range(FILTERS_PER_LEVEL):
            where, passes = _filter(level, rng)
            q = (LEVELS.index(level) * FILTERS_PER_LEVEL + j) % len(texts)
            text, qvec = texts[q], qvecs[q]
            doc_pass = np.asarray([passes(int(d)) if d >= 0 else False for d in unique_docs])
            chunk_pass = doc_pass[doc_slot]
            matched.append(int(doc_pass.sum()))
            # exact vector truth: max cosine per matching document
            scores = vectors[chunk_pass] @ qvec
            best = np.full(unique_docs.shape[0], -np.inf)
            np.maximum.at(best, doc_slot[chunk_pass], scores)
            order = np.argsort(-best)[: max(depth, TOP_K)]
            vector_truth = [f"doc-{int(unique_docs[i]):07d}" for i in order if np.isfinite(best[i])]
            saved = lexical.FILTER_EXACT_CHUNKS
            lexical.FILTER_EXACT_CHUNKS = 1 << 62
            try:
                node = parse(where)
                assert node is not None
                with index.lock.reading():
                    allowed = index.documents.allowed(node)
                    bm25_hits = index._search(text, None, depth, "bm25", None, allowed=allowed)
            finally:
                lexical.FILTER_EXACT_CHUNKS = saved
            bm25_truth = [h.doc_id for h in bm25_hits]
            fused = reciprocal_rank_fusion(
                [(vector_truth[:depth], index.fusion.vector), (bm25_truth, index.fusion.lexical)],
                k=index.fusion.k,
            )
            truth = {"vector": vector_truth, "bm25": bm25_truth, "hybrid": [d for d, _ in fused]}
            for mode in recalls:
                found, took = timed_run(text, qvec, mode, where)
                recalls[mode].append(_recall(found, truth[mode]))
                latency[mode].append(took)
                latency[f"{mode}_unfiltered"].append(timed_run(text, qvec, mode, None)[1])
        levels[level] = {
            "filters": FILTERS_PER_LEVEL,
            "matched_documents_mean": float(np.mean(matched)),
            "recall_at_10": {m: float(np.mean(v)) for m, v in recalls.items()},
            "latency": {name: summary(samples) for name, samples in latency.items()},
        }
    return levels


def table_rows(levels: dict[str, Any]) -> list[list[str]]:
    rows = []
    for level, row in levels.items():
        lat = row["latency"]
        rows.append(
            [
                level,
                f"{row['matched_documents_mean']:.0f}",
                *(f"{row['recall_at_10'][m]:.3f}" for m in ("vector", "bm25", "hybrid")),
                *(
                    f"{lat[m]['p50_ms']:.2f} / {lat[m + '_unfiltered']['p50_ms']:.2f}"
                    for m in ("vector", "bm25", "hybrid")
                ),
            ]
        )
    return rows


TABLE_HEADER = [
    "selectivity",
    "docs matched",
    "recall vec",
    "recall bm25",
    "recall hyb",
    "vec p50 ms filt/unfilt",
    "bm25 p50 ms filt/unfilt",
    "hyb p50 ms filt/unfilt",
]
