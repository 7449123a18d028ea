"""BM25 parity with rank-bm25 (the reference implementation) and live add/delete behaviour."""

from __future__ import annotations

import math
import random
import tracemalloc
from typing import Any

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

import indexer.lexical
import indexer.lexical_query
import indexer.lexical_segment
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


def test_rare_term_chunks_reads_segments_and_buffer_up_to_a_limit() -> None:
    index = LexicalIndex()
    filler = indexer.lexical.BUFFER_CHUNKS
    for i in range(filler):  # frozen into a segment at BUFFER_CHUNKS
        index.add(i, f"order ORD-1000{i % 3}-AB note")
    index.add(filler, "order ORD-10001-AB again")  # in the buffer
    assert index.segments and len(index._view[1]) == 1
    expected = {i for i in range(filler) if i % 3 == 1} | {filler}
    found = index.rare_term_chunks("#ord-10001-ab", limit=len(expected))
    assert found is not None and set(found.tolist()) == expected
    assert index.rare_term_chunks("#ord-10001-ab", limit=len(expected) - 1) is None
    index.remove(1)
    assert set(index.rare_term_chunks("#ord-10001-ab", limit=10**6).tolist()) == expected - {1}  # type: ignore[union-attr]
    assert index.rare_term_chunks("#ord-99999-zz", limit=0) is not None
    assert index.rare_term_chunks("#ord-99999-zz", limit=0).shape == (0,)  # type: ignore[union-attr]


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


def _exhaustive_top(
    reference: BM25Okapi, alive: list[int], query: str, k: int
) -> list[tuple[int, float]]:
    scores = reference.get_scores(analyze(query))
    order = sorted(range(len(alive)), key=lambda j: (-scores[j], alive[j]))
    return [(alive[j], float(scores[j])) for j in order if scores[j] > 0][:k]


def _assert_top_equal(
    got: list[tuple[int, float]], want: list[tuple[int, float]], query: str
) -> None:
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4), query
    # ids equal up to float32 near-ties
    last = want[-1][1] if want else 0.0
    wanted = {i for i, _ in want}
    assert all(i in wanted or math.isclose(s, last, rel_tol=1e-4) for i, s in got), query


@pytest.mark.parametrize(
    ("seed_postings", "window", "dense"),
    [
        (0, 4096, 16),  # theta seeded; one window per segment
        (10**9, 4096, 16),  # theta found by the kernel alone
        (0, 128, 10**9),  # many windows, every one with a posting summed densely
        (0, 128, 0),  # many windows, every one kept sparse (slot lists)
    ],
)
def test_pruned_top_k_equals_exhaustive_scoring(
    monkeypatch: pytest.MonkeyPatch, seed_postings: int, window: int, dense: int
) -> None:
    """Seeded MaxScore over several segments (ids added out of order, some removed) plus the
    buffer returns exactly the exhaustive top k, and really skips postings, whether windows
    are summed densely or through slot lists."""
    monkeypatch.setattr(indexer.lexical, "BUFFER_CHUNKS", 300)
    monkeypatch.setattr(indexer.lexical, "INLINE_MERGE_CHUNKS", 600)
    monkeypatch.setattr(indexer.lexical_query, "SEED_POSTINGS", seed_postings)
    monkeypatch.setattr(indexer.lexical_query, "WINDOW_IDS", window)
    monkeypatch.setattr(indexer.lexical_query, "DENSE_WINDOW", dense)
    texts = _corpus(2000, seed=23)
    order = list(range(2000))
    random.Random(5).shuffle(order[:1200])  # unsorted adds: segments sort their runs
    index = LexicalIndex()
    for i in order:
        index.add(i, texts[i])
    assert len(index.segments) >= 2 and len(index._view[1]) > 0  # segments and a buffer
    scored = [0]
    real_maxscore = indexer.lexical_query.maxscore

    def counting(*args: Any) -> tuple[np.ndarray, np.ndarray, int]:
        ids, approximate, postings = real_maxscore(*args)
        scored[0] += postings
        return ids, approximate, postings

    # Postings the segments' kernel scored (the exact rescoring reads only survivors).
    monkeypatch.setattr(indexer.lexical_query, "maxscore", counting)
    rng = random.Random(29)
    common = ["term0", "term1", "term2", "protein"]  # in most chunks: low idf, long postings
    queries = []
    for _ in range(30):
        rare = [f"term{rng.randint(60, 299)}" for _ in range(rng.randint(1, 3))]
        queries.append(" ".join(rare + rng.sample(common, rng.randint(1, 3))))
    queries += ["term0 term1 term2", "term0 protein", "term3 term4 term5 term6"]
    removed: set[int] = set()
    skipped = 0
    for round_ in range(2):
        alive = [i for i in range(2000) if i not in removed]
        reference = LuceneIdfBM25([analyze(texts[i]) for i in alive])
        for query in queries:
            total = sum(index.document_frequency(t) for t in analyze(query))
            for k in (1, 10, 100):
                scored[0] = 0
                got = index.search(query, k)
                _assert_top_equal(got, _exhaustive_top(reference, alive, query, k), query)
                skipped += scored[0] < total
        # Removes after queries: cached document frequencies must follow them.
        removed |= set(range(round_, 2000, 7))
        for i in sorted(removed):
            index.remove(i)
    assert skipped, "no query skipped postings; the test does not exercise the pruning"


def test_block_bounds_hold_after_the_corpus_changes_shape() -> None:
    """Every posting scores at most its block's bound, scaled as the query scales it, also
    after much longer chunks raised avgdl (which raises the old short chunks' scores)."""
    rng = random.Random(41)
    index = LexicalIndex()
    for i in range(600):
        index.add(
            i, " ".join(rng.choices(["alpha", "beta", "gamma", "delta"], k=rng.randint(1, 12)))
        )
    index.checkpoint()  # checkpointed: never merged inline with the long chunks below
    old = index.segments[0]
    for i in range(600, 2600):
        index.add(i, " ".join(rng.choices(["alpha", "omega", "psi"], k=300)))
    index.checkpoint()
    avgdl = index.total_length / len(index)
    assert old.avgdl_ref * 10 < avgdl
    scorer = indexer.lexical_query.Scorer(
        index._length,
        np.float32(indexer.lexical.K1 * indexer.lexical.B / avgdl),
        np.float32(indexer.lexical.K1 * (1.0 - indexer.lexical.B)),
        avgdl,
    )
    scale = max(1.0, avgdl / old.avgdl_ref)
    assert scale > 10
    for term in ("alpha", "beta", "gamma", "delta"):
        row = old.row_of(term)
        assert row is not None
        ids, tfs, block_max = old.run(row)
        scores = scorer.score(ids.astype(np.intp), tfs, 1.0)
        bounds = np.repeat(block_max, indexer.lexical_segment.BLOCK)[: ids.shape[0]]
        assert (scores <= bounds * np.float32((indexer.lexical.K1 + 1.0) * scale)).all()
        assert not (scores <= bounds * np.float32(indexer.lexical.K1 + 1.0)).all()  # scale needed


@pytest.mark.parametrize("seed_postings", [0, 10**9])  # theta seeded / found by the kernel
def test_segments_frozen_at_another_avgdl_give_the_exact_top_k(
    monkeypatch: pytest.MonkeyPatch, seed_postings: int
) -> None:
    """Segments score with weights precomputed at their own avgdl; after the corpus's avgdl
    moved far from it (both ways), the top k and its scores still equal exhaustive rank-bm25
    at today's avgdl: the bracketing bounds keep every possible winner, rescored exactly."""
    monkeypatch.setattr(indexer.lexical_query, "SEED_POSTINGS", seed_postings)
    rng = random.Random(43)
    vocab = [f"term{i}" for i in range(80)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(2, 12))) for _ in range(700)]
    texts += [" ".join(rng.choices(vocab, k=rng.randint(150, 300))) for _ in range(700)]
    texts += [" ".join(rng.choices(vocab, k=rng.randint(2, 40))) for _ in range(300)]
    index = LexicalIndex()
    for i, text in enumerate(texts[:700]):
        index.add(i, text)
    index.checkpoint()  # checkpointed: never merged inline with what follows
    for i in range(700, 1400):
        index.add(i, texts[i])
    index.checkpoint()
    for i in range(1400, 1700):  # partly left in the buffer (exact scores, no weights)
        index.add(i, texts[i])
    short, long_ = index.segments[0], index.segments[-1]
    avgdl = index.total_length / len(index)
    assert short.avgdl_ref * 5 < avgdl < long_.avgdl_ref / 1.5  # r far from 1, both ways
    # The weights alone rank differently from today's scores: rescoring is what is exact.
    row = short.row_of("term1")
    assert row is not None
    ids, tfs, _ = short.run(row)
    scorer = indexer.lexical_query.Scorer(
        index._length,
        np.float32(indexer.lexical.K1 * indexer.lexical.B / avgdl),
        np.float32(indexer.lexical.K1 * (1.0 - indexer.lexical.B)),
        avgdl,
    )
    exact = scorer.score(ids.astype(np.intp), tfs, 1.0)
    assert not np.allclose(exact, short.run_weights(row), rtol=0.1)
    queries = [" ".join(rng.sample(vocab, rng.randint(1, 5))) for _ in range(25)]
    queries += ["term0 term1 term2", "term3"]
    removed: set[int] = set()
    for round_ in range(2):
        alive = [i for i in range(len(texts)) if i not in removed]
        reference = LuceneIdfBM25([analyze(texts[i]) for i in alive])
        for query in queries:
            for k in (1, 10, 100):
                got = index.search(query, k)
                _assert_top_equal(got, _exhaustive_top(reference, alive, query, k), query)
        # Removing most long chunks moves avgdl again, below the long segment's and closer
        # to the short one's.
        removed |= set(range(700 + round_, 1400, 3)) | set(range(round_, 700, 11))
        for i in sorted(removed):
            index.remove(i)
