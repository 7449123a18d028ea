"""Merging, compaction and retraining of the vector leg, without a model (synthetic vectors)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from indexer.merge_policy import SegmentStats, plan_merges, segment_bound, tier
from indexer.vector_index import VectorIndex, planned_nlist


def _mixture(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    order = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    return [[int(ids[i]) for i in row] for row in order]


def _recall(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    truth = _exact(vectors, ids, queries, 10)
    got = [[i for i, _ in index.search(q, 10)] for q in queries]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))


def test_tiered_policy_merges_a_full_tier_and_rewrites_dead_segments() -> None:
    unit = 100
    assert tier(100, unit) == 0 and tier(399, unit) == 0 and tier(400, unit) == 1
    stats = [SegmentStats(f"s{i}", 100, 0) for i in range(5)] + [SegmentStats("big", 1600, 0)]
    assert plan_merges(stats, unit) == [["s0", "s1", "s2", "s3"]]
    assert plan_merges([SegmentStats("d", 1000, 301)], unit) == [["d"]]
    assert plan_merges([SegmentStats("d", 1000, 300)], unit) == []
    assert segment_bound(1_000_000, 8192) == 3 * (3 + 1)


def test_segment_count_stays_logarithmic_and_quantizer_follows_growth() -> None:
    d, seal = 8, 256
    index = VectorIndex(d, seal_chunks=seal)
    vectors = _mixture(100_000, d, 50, seed=3)
    nlists = []
    for start in range(0, 100_000, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
        index.maintain()
        assert len(index.sealed) <= segment_bound(len(index), seal) + 1  # + the newest seal
        nlists.append(index.nlist)
    assert len(index) == 100_000 and len(index.sealed) <= segment_bound(100_000, seal)
    # first trained on 500 vectors, retrained at 4x growth (2k, 8k, 32k): one quantizer for all
    assert sorted(set(nlists)) == [1, 4, 16, 64] and index.trained_on == 32_000
    assert index.nlist == planned_nlist(index.trained_on)
    assert all(s.index.nlist == index.nlist for s in index.sealed)
    assert sorted(np.concatenate([s.ids for s in index.sealed]).tolist() + index.live.ids.tolist()) == list(
        range(100_000)
    )


def test_recall_after_retraining_against_exact_search() -> None:
    d, n = 64, 30_000
    drawn = _mixture(n + 200, d, 200, seed=5)  # queries from the same clusters as the data
    vectors, queries = drawn[:n], drawn[n:]
    index = VectorIndex(d, nprobe=8, seal_chunks=1000)  # a quarter of the lists
    for start in range(0, n, 1000):
        index.add(np.arange(start, start + 1000), vectors[start : start + 1000])
        index.maintain()
    assert index.nlist == 32 and index.trained_on == 16_000  # retrained at 4k and 16k
    assert index.imbalance() < 3.0
    assert _recall(index, vectors, np.arange(n), queries) >= 0.95


def test_deletes_then_merges_equal_exact_search_over_the_alive() -> None:
    d, n = 16, 6000
    drawn = _mixture(n + 50, d, 20, seed=7)
    vectors, queries = drawn[:n], drawn[n:]
    index = VectorIndex(d, nprobe=10_000, seal_chunks=500)
    rng = np.random.default_rng(8)
    alive = np.ones(n, dtype=bool)
    for start in range(0, n, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
        index.maintain()
        seen = np.flatnonzero(alive[: start + 500])
        doomed = rng.choice(seen, size=len(seen) // 8, replace=False)
        index.remove({int(i) for i in doomed})
        alive[doomed] = False
        index.maintain()
        sealed = sum(len(s) for s in index.sealed)
        # compaction keeps tombstones bounded by the dead fraction of what is sealed
        assert len(index.tombstones) <= 0.3 * sealed + 500
    assert len(index) == int(alive.sum())
    ids = np.flatnonzero(alive)
    assert _recall(index, vectors[ids], ids, queries) == 1.0
    stored = np.concatenate([s.ids for s in index.sealed] + [index.live.ids])
    assert set(index.tombstones) <= set(stored.tolist())
    assert len(stored) - len(index.tombstones) == len(ids)


def test_search_over_segments_probes_the_shared_lists_once() -> None:
    """All segments scan the lists the shared quantizer picked: same hits as one IVF index."""
    import faiss

    d, n = 32, 8000
    drawn = _mixture(n + 30, d, 40, seed=11)
    vectors, queries = drawn[:n], drawn[n:]
    index = VectorIndex(d, nprobe=3, seal_chunks=1000)
    for start in range(0, n, 1000):
        index.add(np.arange(start, start + 1000), vectors[start : start + 1000])
        index.maintain()
    assert len(index.sealed) > 1 and index.quantizer is not None and not len(index.live)
    single = faiss.IndexIVFFlat(index.quantizer, d, index.nlist, faiss.METRIC_INNER_PRODUCT)
    single.is_trained = True
    single.add_with_ids(vectors, np.arange(n))
    single.nprobe = 3
    _, want = single.search(queries, 10)
    for query, row in zip(queries, want, strict=True):
        assert [i for i, _ in index.search(query, 10)] == row.tolist()


def test_imbalanced_lists_trigger_a_retrain_before_4x_growth() -> None:
    d = 16
    index = VectorIndex(d, seal_chunks=2000)
    spread = _mixture(8000, d, 40, seed=13)
    index.add(np.arange(8000), spread)
    index.maintain()
    first = index.quantizer_name
    assert index.nlist == 16 and index.trained_on == 8000 and index.imbalance() < 2.0
    # new data from one far-away cluster: it all falls into one list
    rng = np.random.default_rng(14)
    center = rng.standard_normal(d).astype(np.float32) * 5
    narrow = center + 0.1 * rng.standard_normal((6000, d)).astype(np.float32)
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    for start in range(0, 6000, 2000):
        index.add(np.arange(8000 + start, 10_000 + start), narrow[start : start + 2000])
        index.maintain()
    assert index.quantizer_name != first and index.trained_on == 14_000  # 1.75x, not 4x
    assert index.nlist == planned_nlist(14_000) and index.imbalance() < 3.0


def test_heavy_work_runs_outside_the_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seal, merge and retrain compute their segments before taking the (write-lock) swap."""
    from indexer.segments import SealedSegment

    inside = {"now": False, "swaps": 0}

    @contextlib.contextmanager
    def swap() -> Iterator[None]:
        inside["now"] = True
        inside["swaps"] += 1
        try:
            yield
        finally:
            inside["now"] = False

    def outside(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: object, **kwargs: object) -> Any:
            assert not inside["now"], f"{fn.__name__} ran under the write lock"
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(SealedSegment, "build", staticmethod(outside(SealedSegment.build)))
    monkeypatch.setattr(SealedSegment, "merge", staticmethod(outside(SealedSegment.merge)))
    monkeypatch.setattr(VectorIndex, "_train", outside(VectorIndex._train))  # k-means
    d = 8
    vectors = _mixture(12_000, d, 10, seed=15)
    index = VectorIndex(d, seal_chunks=300)
    for start in range(0, 12_000, 300):
        index.add(np.arange(start, start + 300), vectors[start : start + 300])
        index.maintain(swap)
    assert inside["swaps"] >= 40 and index.trained_on > 300  # seals, merges and retrains ran
    assert len(index) == 12_000


def test_a_quantizer_from_before_versioning_is_retrained_at_the_next_seal() -> None:
    """Old manifests name segments/quantizer.faiss and no trained_on: the next seal retrains
    (their nlist was fixed at the first seal), and the new quantizer gets a versioned name."""
    d = 16
    vectors = _mixture(6000, d, 30, seed=21)
    old = VectorIndex(d, seal_chunks=1000)
    old.add(np.arange(1000), vectors[:1000])
    old.maintain()
    assert old.quantizer is not None
    index = VectorIndex(d, seal_chunks=1000)
    index.adopt_quantizer(old.quantizer, {"file": "segments/quantizer.faiss", "nlist": old.nlist})
    for segment in old.sealed:
        index.attach(segment)
    assert index.quantizer_file == "segments/quantizer.faiss" and index.trained_on == 0
    index.add(np.arange(1000, 6000), vectors[1000:])
    index.maintain()
    assert index.quantizer_name.startswith("quantizer-") and index.trained_on == 6000
    assert index.quantizer_entry() == {
        "file": f"segments/{index.quantizer_name}.faiss",
        "nlist": planned_nlist(6000),
        "trained_on": 6000,
    }
    assert len(index.sealed) == 1 and len(index) == 6000


def test_live_rows_and_deletes_are_searched_in_the_shared_lists() -> None:
    """Once a quantizer exists the live segment is held in its lists too: with rows in the live
    segment and deletes in both kinds of segment, a query returns what one faiss IVF index over
    the alive vectors returns at the same nprobe (the live segment is not scanned flat)."""
    import faiss

    d, n = 32, 9000
    drawn = _mixture(n + 30, d, 40, seed=23)
    vectors, queries = drawn[:n], drawn[n:]
    index = VectorIndex(d, nprobe=3, seal_chunks=2000)
    for start in range(0, n, 500):
        index.add(np.arange(start, start + 500), vectors[start : start + 500])
        index.maintain()
    assert len(index.sealed) >= 1 and len(index.live) == 1000 and index.live.nlist == index.nlist
    doomed = set(range(0, n, 7))  # sealed and live rows alike
    index.remove(doomed)
    _ = index.search(queries[0], 10)  # a selector now exists; later deletes update it in place
    index.remove({8999, 8998, 3})
    doomed |= {8999, 8998, 3}
    alive = np.array(sorted(set(range(n)) - doomed))
    assert len(index) == len(alive) and len(index.live) == len([i for i in alive if i >= 8000])
    assert index.quantizer is not None
    single = faiss.IndexIVFFlat(index.quantizer, d, index.nlist, faiss.METRIC_INNER_PRODUCT)
    single.is_trained = True
    single.add_with_ids(vectors[alive], alive)
    single.nprobe = 3
    _, want = single.search(queries, 10)
    for query, row in zip(queries, want, strict=True):
        assert [i for i, _ in index.search(query, 10)] == row.tolist()
    # a fresh live segment installed from outside (a snapshot load) is put in the lists too
    from indexer.segments import LiveSegment

    reloaded = LiveSegment(d)
    reloaded.add(index.live.ids.copy(), index.live.vectors.copy())
    index.live = reloaded
    assert reloaded.nlist == index.nlist
    for query, row in zip(queries, want, strict=True):
        assert [i for i, _ in index.search(query, 10)] == row.tolist()


def test_sealed_chunks_cost_no_python_objects() -> None:
    """Which segment holds a chunk is an int32 array and tombstones a bitmap: attaching a
    segment of 50k vectors allocates a few bytes per chunk on the Python heap, not a ~100 B
    dict entry per chunk (2.5 KB/chunk is the whole budget at 1M chunks)."""
    import tracemalloc

    from indexer.segments import SealedSegment

    d, n = 8, 50_000
    vectors = _mixture(n, d, 10, seed=25)
    index = VectorIndex(d, seal_chunks=1000)
    index.add(np.arange(1000), vectors[:1000])
    index.maintain()
    assert index.quantizer is not None
    segment = SealedSegment.build("big", index.quantizer, index.nlist, np.arange(1000, n), vectors[1000:])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index.attach(segment)
        index.remove(set(range(1000, 6000)))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    tombstones = 5000 * 80  # the tombstone set itself: bounded by the 30 % dead fraction
    assert (after - before - tombstones) / n < 16
    assert len(index) == n - 5000
    assert set(index.vectors_of([999, 1000, 5999, 6000])) == {999, 6000}
