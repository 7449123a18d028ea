"""The live segment: appends amortized O(1), deletes without renumbering, exact results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.segments import LiveSegment


def _unit(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_appends_grow_capacity_geometrically() -> None:
    live = LiveSegment(8)
    vectors = _unit(5000)
    reallocations = 0
    buffer = live._vectors
    for i in range(5000):
        live.add(np.array([i]), vectors[i : i + 1])
        if live._vectors is not buffer:
            reallocations += 1
            buffer = live._vectors
    assert len(live) == 5000
    assert reallocations <= 8  # doubling from 64: log2(5000 / 64) + 1 copies, not 5000
    np.testing.assert_array_equal(live.ids, np.arange(5000))
    np.testing.assert_array_equal(live.vectors, vectors)


def test_swap_delete_keeps_every_remaining_vector_findable(tmp_path: Path) -> None:
    vectors = _unit(300, seed=1)
    live = LiveSegment(8)
    live.add(np.arange(300), vectors)
    dead = set(range(0, 300, 3)) | {299, 7000}
    assert live.remove(dead) == 101
    alive = [i for i in range(300) if i not in dead]
    assert len(live) == 199 and sorted(live.ids.tolist()) == alive
    for chunk_id in alive:
        assert live.contains(chunk_id)
        np.testing.assert_array_equal(live.vector(chunk_id), vectors[chunk_id])
    assert not live.contains(0)
    query = vectors[4:5]
    _scores, ids = live.search(query, 5)
    exact = sorted(alive, key=lambda i: -float(vectors[i] @ vectors[4]))[:5]
    assert ids[0].tolist() == exact
    live.save(tmp_path / "live.npz")
    again = LiveSegment.load(tmp_path / "live.npz", 8)
    assert again.ids.tolist() == live.ids.tolist()
    np.testing.assert_array_equal(again.vectors, live.vectors)
    again.add(np.array([9000]), vectors[:1])
    assert len(again) == 200 and again.contains(9000)
