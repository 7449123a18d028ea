"""BM25 parity with rank-bm25 (the reference implementation) and live add/delete behaviour."""

from __future__ import annotations

import math
import random
import tracemalloc

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

import indexer.lexical
from indexer.analyzer import analyze, identifiers
from indexer.lexical import LexicalIndex


class LuceneIdfBM25(BM25Okapi):
    """rank-bm25's Okapi scoring with the always-positive IDF our index uses."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log1p((self.corpus_size - freq + 0.5) / (freq + 0.5))


def _corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"term{i}" for i in range(300)] + ["protein", "cell", "cancer", "gene", "virus"]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(5, 60))) for _ in range(n)]


def test_rankings_match_rank_bm25() -> None:
    texts = _corpus(400)
    ours = LexicalIndex()
    for i, text in enumerate(texts):
        ours.add(i, text)
    reference = LuceneIdfBM25([analyze(t) for t in texts])
    rng = random.Random(1)
    for _ in range(25):
        query = " ".join(rng.choice(texts).split()[:4])
        expected = reference.get_scores(analyze(query))
        got = ours.search(query, 10)
        assert got, query
        for chunk_id, score in got:
            assert math.isclose(score, expected[chunk_id], rel_tol=1e-4)
        top_expected = np.sort(expected)[::-1][:10]
        assert np.allclose([s for _, s in got], top_expected[: len(got)], rtol=1e-4)


def test_deletes_equal_a_rebuild() -> None:
    texts = _corpus(200, seed=3)
    live = LexicalIndex()
    for i, text in enumerate(texts):
        live.add(i, text)
    removed = set(range(0, 200, 3))
    for i in removed:
        live.remove(i, texts[i])
    rebuilt = LexicalIndex()
    for i, text in enumerate(texts):
        if i not in removed:
            rebuilt.add(i, text)
    assert len(live) == len(rebuilt) == 200 - len(removed)
    for query in ("term1 term2", "cancer gene", "term17 virus cell"):
        a, b = live.search(query, 20), rebuilt.search(query, 20)
        assert [i for i, _ in a] == [i for i, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-5)
        assert not removed & {i for i, _ in a}


def test_compaction_keeps_results() -> None:
    texts = _corpus(100, seed=5)
    index = LexicalIndex()
    for i, text in enumerate(texts):
        index.add(i, text)
    for i in range(50):
        index.remove(i, texts[i])
    before = index.search("term3 term4", 10)
    index.compact()
    assert index.search("term3 term4", 10) == before


def test_identifiers_are_exact_terms() -> None:
    terms = analyze("Invoice INV-2024-00917 is overdue")
    assert "#inv-2024-00917" in terms and "invoic" in terms and "2024" in terms
    assert identifiers("INV-2024-00917") == ["#inv-2024-00917"]
    assert identifiers("vitamin d deficiency") == []
    index = LexicalIndex()
    index.add(1, "Invoice INV-2024-00917 overdue")
    index.add(2, "Invoice INV-2024-00918 paid")
    assert index.chunks_with("#inv-2024-00917") == {1}
    assert index.search("INV-2024-00917", 5)[0][0] == 1


def test_empty_and_unknown_queries() -> None:
    index = LexicalIndex()
    assert index.search("anything", 5) == []
    index.add(0, "some text")
    assert index.search("the of and", 5) == []  # only stopwords
    assert index.search("zzzz", 5) == []
    assert index.search("text", 0) == []


def test_query_work_does_not_scale_with_the_largest_chunk_id() -> None:
    index = LexicalIndex()
    texts = _corpus(200, seed=17)
    for i, text in enumerate(texts):
        index.add(i if i < 100 else 4_000_000 + i, text)  # ids issued over a long history
    query = "term1 term2 cancer gene"
    first = index.search(query, 10)  # warms the pooled scratch array
    tracemalloc.start()
    try:
        assert index.search(query, 10) == first
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000, peak  # a per-query array over 4M ids would be 16 MB


def test_removes_are_constant_time_flags() -> None:
    index = LexicalIndex()
    texts = _corpus(300, seed=19)
    for i, text in enumerate(texts):
        index.add(i, text)
    index.compact()
    segments = index.segments
    for i in range(0, 300, 2):
        index.remove(i)  # no text needed, nothing rewritten (the old automatic compaction stalled)
    assert index.segments is segments
    rebuilt = LexicalIndex()
    for i in range(1, 300, 2):
        rebuilt.add(i, texts[i])
    for query in ("term1 term2", "cancer gene virus"):
        a, b = index.search(query, 20), rebuilt.search(query, 20)
        assert [i for i, _ in a] == [i for i, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-5)
    with pytest.raises(ValueError, match="never reused"):
        index.add(0, "reused id")


def test_pruned_top_k_equals_exhaustive_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _corpus(600, seed=23)
    index = LexicalIndex()
    for i, text in enumerate(texts):
        index.add(i, text)
    for i in range(0, 600, 5):
        index.remove(i)
    alive = [i for i in range(600) if i % 5]
    reference = LuceneIdfBM25([analyze(texts[i]) for i in alive])
    pruned: list[bool] = []
    real = indexer.lexical._can_prune

    def spy(*args: object, **kwargs: object) -> bool:
        pruned.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return pruned[-1]

    monkeypatch.setattr(indexer.lexical, "_can_prune", spy)
    rng = random.Random(29)
    common = ["term0", "term1", "term2", "protein"]  # in most chunks: low idf, long postings
    for _ in range(60):
        rare = [f"term{rng.randint(100, 299)}" for _ in range(rng.randint(1, 3))]
        query = " ".join(rare + rng.sample(common, rng.randint(1, 3)))
        scores = reference.get_scores(analyze(query))
        for k in (1, 3, 10):
            got = index.search(query, k)
            order = sorted(range(len(alive)), key=lambda j: (-scores[j], alive[j]))
            want = [(alive[j], scores[j]) for j in order if scores[j] > 0][:k]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4), query
            assert {i for i, _ in got} <= {alive[j] for j in range(len(alive)) if scores[j] > 0}
            # ids equal up to float32 near-ties
            top = {alive[j] for j in order[:k]}
            assert all(i in top or math.isclose(s, want[-1][1], rel_tol=1e-4) for i, s in got)
    assert any(pruned), "no query was pruned; the test does not exercise MaxScore"
