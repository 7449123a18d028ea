"""Committing a generation: what it holds loads back exactly, and a crash publishes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests_support import chunk_ids_consistent

from contracts.documents import Deletion, Document
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def _results(index: Index, query: str) -> list[tuple[str, float]]:
    return [(h.doc_id, round(h.score, 5)) for h in index.search(query, k=5, mode="hybrid")]


def test_roundtrip_with_sealed_segments_and_offsets(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    many: list[Document],
) -> None:
    index = make_index(many)
    index.apply([Deletion("m3", 2), Document("m4", "Note 4", "rewritten note about kidneys", 2)])
    assert index.count().sealed_segments >= 1 and index.count().deleted_chunks >= 1
    store = SnapshotStore(tmp_path / "idx")
    manifest = store.write(index, {"docs": {0: 42, 1: 7}})
    assert manifest.generation == 1 and manifest.offsets == {"docs": {0: 42, 1: 7}}
    loaded, again = store.load(model, settings)
    assert again.offsets == {"docs": {0: 42, 1: 7}}
    assert loaded.count() == index.count()
    assert loaded.get("m3") is None and loaded.get("m4").version == 2  # type: ignore[union-attr]
    for query in ("dosage of note 12", "kidneys", "topic 5"):
        assert _results(loaded, query) == _results(index, query)
    assert chunk_ids_consistent(loaded)
    # resuming keeps ids unique and refuses stale replays
    assert loaded.apply([Document("m4", "x", "older", 1)]).stale == 1
    loaded.apply([Document("new", "New", "brand new note", 1)])
    assert chunk_ids_consistent(loaded)


def test_crash_during_snapshot_leaves_previous_generation_loadable(
    pending_change: tuple[Index, SnapshotStore],
    model: EmbeddingModel,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, store = pending_change

    def crash(*args: object) -> None:
        raise OSError("simulated power loss before the rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        store.write(index, {"docs": {0: 9}})
    monkeypatch.undo()
    assert store.generations() == [1]
    loaded, manifest = store.load(model, settings)
    assert manifest.offsets == {"docs": {0: 8}} and loaded.get("d9") is None
