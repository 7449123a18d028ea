"""Filtered search returns exactly the brute-force filtered top-k, in every mode and path."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contracts.documents import Deletion, Document
from contracts.errors import InvalidQueryError
from contracts.settings import Settings
from indexer import lexical, vector_index
from indexer.embedding_cache import EmbeddingCache
from indexer.filters import Filter, matches, parse
from indexer.fusion import reciprocal_rank_fusion
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore

TOPICS = ["kidney", "heart", "liver", "lung", "brain", "bone"]
LANGS = ["en", "de", "fr"]


def _corpus(n: int = 48) -> list[Document]:
    rng = random.Random(3)
    docs = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        words = " ".join(rng.choice([*TOPICS, "study", "trial", "dose"]) for _ in range(12))
        meta: dict[str, Any] = {
            "lang": LANGS[i % 3],
            "year": 2000 + i % 20,
            "tags": [f"t{i % 4}", f"t{i % 7}"],
            "rare": i < 5,  # 5 documents only: a selective filter
        }
        if i % 4 == 0:
            meta["score"] = i / 4.0
        docs.append(Document(f"d{i}", f"Note {i} on {topic}", f"{topic} {words}", 1, meta))
    return docs


FILTERS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"year": {"$gte": 2015}},
    {"tags": {"$in": ["t2", "t5"]}},
    {"$and": [{"lang": "fr"}, {"year": {"$lt": 2010}}]},
    {"$or": [{"rare": True}, {"score": {"$gt": 8}}]},
    {"rare": True},
]
QUERIES = ["kidney dose", "bone study liver"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddingCache]:
    """One cache for the module: the corpus is embedded once (a loaded CI box: ~0.5 s a doc)."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("filters") / "embeddings.sqlite")
    yield cache
    cache.close()


def _build(model: EmbeddingModel, root: Path, cache: EmbeddingCache) -> Index:
    built = Index.create(model, Settings(data_dir=root), cache)
    built.vectors.seal_chunks = 16  # below Settings' floor: a small corpus gets IVF segments
    built.apply(_corpus())
    assert built.count().sealed_segments >= 1  # the IVF segments are used
    return built


@pytest.fixture(scope="module")
def index(
    model: EmbeddingModel, shared_cache: EmbeddingCache, tmp_path_factory: pytest.TempPathFactory
) -> Index:
    """Read-only for the tests that use it."""
    return _build(model, tmp_path_factory.mktemp("data"), shared_cache)


def _allowed(index: Index, node: Filter) -> set[str]:
    return {r.doc_id for r in index.documents if matches(node, r.metadata)}


def _vector_ranking(index: Index, query: str, docs: set[str]) -> list[tuple[str, float]]:
    qvec = index.model.encode_queries([query])[0]
    scored = []
    for doc_id in docs:
        record = index.get(doc_id)
        assert record is not None
        vectors = index.vectors.vectors_of([c.chunk_id for c in record.chunks])
        scored.append((doc_id, max(float(v @ qvec) for v in vectors.values())))
    return sorted(scored, key=lambda item: (-item[1], item[0]))


def _bm25_ranking(index: Index, query: str, docs: set[str]) -> list[tuple[str, float]]:
    everything = index.search(query, k=1000, mode="bm25")  # unfiltered, exhaustive
    return [(h.doc_id, h.score) for h in everything if h.doc_id in docs]


@pytest.mark.parametrize("path", ["exact", "pruned"])
def test_filtered_equals_brute_force_in_every_mode(
    index: Index, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "pruned":  # the IVF selector probe and the MaxScore kernel with a mask
        monkeypatch.setattr(vector_index, "EXACT_FILTER_IDS", 0)
        monkeypatch.setattr(lexical, "FILTER_EXACT_CHUNKS", 0)
    k = 5
    for where in FILTERS:
        node = parse(where)
        assert node is not None
        docs = _allowed(index, node)
        assert docs
        for query in QUERIES:
            vector = _vector_ranking(index, query, docs)
            hits = index.search(query, k=k, mode="vector", where=where)
            assert [h.doc_id for h in hits] == [d for d, _ in vector[:k]], (where, query)
            assert all(h.metadata == index.get(h.doc_id).metadata for h in hits)  # type: ignore[union-attr]
            for hit, (_, score) in zip(hits, vector, strict=False):
                assert hit.score == pytest.approx(score, abs=1e-5)

            bm25 = _bm25_ranking(index, query, docs)
            hits = index.search(query, k=k, mode="bm25", where=where)
            assert [(h.doc_id, h.score) for h in hits] == [
                (d, pytest.approx(s, rel=1e-6)) for d, s in bm25[:k]
            ], (where, query)

            fused = reciprocal_rank_fusion(
                [
                    ([d for d, _ in vector], index.fusion.vector),
                    ([d for d, _ in bm25], index.fusion.lexical),
                ],
                k=index.fusion.k,
            )
            hits = index.search(query, k=k, mode="hybrid", where=where)
            assert [h.doc_id for h in hits] == [d for d, _ in fused[:k]], (where, query)
            assert all(matches(node, h.metadata) for h in hits)


def test_a_selective_filter_still_returns_k_hits(index: Index) -> None:
    # The 5 `rare` documents are about varied topics; unfiltered, most are far from the query.
    for mode in ("vector", "hybrid"):
        hits = index.search("brain", k=5, mode=mode, where={"rare": True})
        assert sorted(h.doc_id for h in hits) == [f"d{i}" for i in range(5)]
    assert index.search("brain", k=5, mode="vector", where={"rare": True, "lang": "en"})
    assert index.search("brain", k=3, mode="vector", where={"year": 2003}) != []


def test_a_filter_nothing_matches_is_empty_and_bad_ones_are_refused(index: Index) -> None:
    for mode in ("vector", "bm25", "hybrid"):
        assert index.search("kidney", k=5, mode=mode, where={"lang": "xx"}) == []
        assert index.search("kidney", k=5, mode=mode, where={"year": {"$gt": 3000}}) == []
    with pytest.raises(InvalidQueryError, match=r"\$regex"):
        index.search("kidney", where={"lang": {"$regex": "e"}})


def test_identifier_promotion_respects_the_filter(make_index: Callable[..., Index]) -> None:
    docs = [
        Document("a", "Invoice", "Invoice INV-2024-00917 for ACME", 1, {"lang": "en"}),
        Document("b", "Rechnung", "Rechnung INV-2024-00917 für ACME", 1, {"lang": "de"}),
        Document("c", "Other", "unrelated text about lungs", 1, {"lang": "de"}),
    ]
    index = make_index(docs)
    assert {h.doc_id for h in index.search("INV-2024-00917", k=3)} >= {"a", "b"}
    hits = index.search("INV-2024-00917", k=3, where={"lang": "de"})
    assert hits and all(h.doc_id != "a" for h in hits) and hits[0].doc_id == "b"


def _ids(index: Index, where: dict[str, Any], mode: str = "bm25") -> set[str]:
    return {h.doc_id for h in index.search("kidney heart liver lung brain bone", k=200, mode=mode, where=where)}


def test_filters_follow_updates_deletes_and_snapshots(
    model: EmbeddingModel, shared_cache: EmbeddingCache, settings: Settings, tmp_path: Path
) -> None:
    index = _build(model, tmp_path / "data", shared_cache)
    before = _ids(index, {"lang": "en"})
    index.apply(
        [
            Document("d0", "Note 0 on kidney", "kidney dose", 2, {"lang": "xx", "year": 1990}),
            Deletion("d3", 5),
        ]
    )
    assert _ids(index, {"lang": "en"}) == before - {"d0", "d3"}
    assert _ids(index, {"lang": "xx"}) == {"d0"}
    assert _ids(index, {"year": {"$lt": 2000}}, "vector") == {"d0"}
    store = SnapshotStore(tmp_path / "idx")
    store.write(index)
    loaded, _ = store.load(model, settings)
    for where in [*FILTERS, {"lang": "xx"}]:
        for mode in ("vector", "bm25", "hybrid"):
            assert [h.doc_id for h in loaded.search("kidney dose", k=5, mode=mode, where=where)] == [
                h.doc_id for h in index.search("kidney dose", k=5, mode=mode, where=where)
            ], (where, mode)
    # a reader follows the writer's changes (a delta), metadata index included
    index.apply([Document("d1", "Note 1", "kidney kidney", 2, {"lang": "yy"}), Deletion("d0", 3)])
    store.write(index)
    store.refresh(loaded)
    assert _ids(loaded, {"lang": "yy"}) == {"d1"} and _ids(loaded, {"lang": "xx"}) == set()
    assert _ids(loaded, {"lang": "en"}) == _ids(index, {"lang": "en"})
    loaded.apply([Document("d1", "Note 1", "kidney", 3, {"lang": "zz"})])  # pending over store
    assert _ids(loaded, {"lang": "zz"}) == {"d1"} and _ids(loaded, {"lang": "yy"}) == set()


def test_vector_leg_filtered_paths_agree_on_random_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((6000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = vector_index.VectorIndex(16, nprobe=2, seal_chunks=1000)
    for start in range(0, 6000, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
        index.maintain()
    index.remove(set(range(0, 6000, 11)))
    assert index.sealed and index.nlist > 2
    dead = set(range(0, 6000, 11))
    query = vectors[7]
    for size in (3, 50, 2500, 5000):
        allowed = np.sort(rng.choice(6000, size, replace=False))
        allowed = np.asarray([i for i in allowed if i not in dead], dtype=np.int64)
        scores = vectors[allowed] @ query
        order = np.lexsort((allowed, -scores))[:20]
        expected = [int(allowed[i]) for i in order]
        for exact_ids in (0, 10_000):
            monkeypatch.setattr(vector_index, "EXACT_FILTER_IDS", exact_ids)
            found = [i for i, _ in index.search(query, 20, allowed)]
            if exact_ids:
                assert found == expected, size
            else:  # the probe: approximate, but every hit allowed, and k of them
                assert set(found) <= set(allowed.tolist()) and len(found) == min(20, len(allowed))
