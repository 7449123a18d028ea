from __future__ import annotations

import numpy as np

from indexer.vector_index import MIN_POINTS_PER_LIST, VectorIndex, nlist_for, planned_nlist


def _unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return [int(ids[i]) for i in np.argsort(-(vectors @ q))[:k]]


def test_stays_flat_until_enough_data_then_seals() -> None:
    index = VectorIndex(16, nprobe=64, seal_chunks=500)
    vectors = _unit(1200)
    index.add(np.arange(400), vectors[:400])
    assert index.maybe_seal() is None and index.quantizer is None
    index.add(np.arange(400, 1200), vectors[400:])
    sealed = index.maybe_seal()
    assert sealed is not None and index.quantizer is not None
    assert len(sealed) == 1200 and len(index.live) == 0
    assert index.nlist * MIN_POINTS_PER_LIST <= 1200


def test_search_across_segments_matches_exact_search_with_full_probe() -> None:
    vectors = _unit(3000, seed=1)
    index = VectorIndex(16, nprobe=10_000, seal_chunks=1000)
    for start in range(0, 3000, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
        index.maybe_seal()
    assert len(index.sealed) == 3
    query = _unit(1, seed=9)[0]
    got = [i for i, _ in index.search(query, 10)]
    assert got == _exact(vectors, np.arange(3000), query, 10)


def test_deletes_are_tombstoned_then_compacted() -> None:
    vectors = _unit(1000, seed=2)
    index = VectorIndex(16, nprobe=10_000, seal_chunks=800)
    index.add(np.arange(1000), vectors)
    index.maybe_seal()
    query = vectors[5]
    assert index.search(query, 1)[0][0] == 5
    index.remove({5})
    assert 5 not in [i for i, _ in index.search(query, 20)]
    assert len(index) == 999
    index.remove(set(range(100, 500)))
    rewritten = index.compact()
    assert len(rewritten) == 1 and not index.tombstones
    assert len(index) == 599
    assert set(index.vectors_of([5, 100, 600])) == {600}


def test_nlist_rule() -> None:
    # small indexes: few lists of ~1,000 vectors (nprobe 16 scans most of them: near-exact)
    assert nlist_for(8192) == 8 and nlist_for(60_000) == 60
    assert nlist_for(10) == 1
    # from SMALL_INDEX on: 4 sqrt(N), faiss' guideline (raw IVF in bench.scale uses it too)
    assert nlist_for(100_000) == 1265 and nlist_for(1_000_000) == 4000
    # trained for the middle of the next 4x growth (2N)
    assert planned_nlist(8192) == 16 and planned_nlist(500_000) == 4000
    assert planned_nlist(32_768) == 32_768 // MIN_POINTS_PER_LIST  # >= 39 training points per list
    assert planned_nlist(64) == 1
