from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests_support import chunk_ids_consistent

from contracts.documents import Deletion, Document
from contracts.errors import IndexNotFoundError, ModelMismatchError, SnapshotError
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir

MANY = [
    Document(f"m{i}", f"Note {i}", f"Clinical note {i} about topic {i % 7} and dosage {i}.", 1)
    for i in range(90)
]


def _results(index: Index, query: str) -> list[tuple[str, float]]:
    return [(h.doc_id, round(h.score, 5)) for h in index.search(query, k=5, mode="hybrid")]


def test_roundtrip_with_sealed_segments_and_offsets(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    index = make_index(MANY)
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


def test_corruption_is_detected(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    index = make_index()
    store = SnapshotStore(tmp_path / "idx")
    store.write(index)
    index.apply([Document("d9", "Later", "a later document", 1)])
    second = store.write(index)
    assert second.live is not None and second.live["files"][-1]["kind"] == "delta"
    live = store.root / second.live["files"][-1]["file"]  # generation 2's own live file
    data = bytearray(live.read_bytes())
    data[len(data) // 2] ^= 0xFF
    live.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        store.load(model, settings)
    loaded, manifest = store.load(model, settings, fallback=True)
    assert manifest.generation == 1 and loaded.count().documents == len(index.documents) - 1


def test_a_different_model_is_refused_naming_both(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    store.write(make_index())
    manifest_path = tmp_path / "idx" / "gen-000001" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["model"]["fingerprint"] = "f" * 64
    data["model"]["name"] = "some/other-model"
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ModelMismatchError) as err:
        store.load(model, settings)
    assert "some/other-model" in str(err.value) and "all-MiniLM-L6-v2" in str(err.value)


def test_refresh_moves_an_open_index_forward(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    writer = make_index(MANY[:40])
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer)
    reader, _ = store.load(model, settings)
    writer.apply([*MANY[40:], Deletion("m1", 5), Document("m2", "Note 2", "now about pancreas", 2)])
    manifest = store.write(writer, {"docs": {0: 99}})
    sealed_before = {s.name for s in reader.vectors.sealed}
    assert store.refresh(reader).generation == manifest.generation
    assert reader.count() == writer.count()
    assert {s.name for s in reader.vectors.sealed} >= sealed_before
    assert (
        reader.get("m1") is None and reader.search("pancreas", k=1, mode="bm25")[0].doc_id == "m2"
    )
    assert _results(reader, "dosage 77") == _results(writer, "dosage 77")
    assert chunk_ids_consistent(reader)


def test_garbage_collection_keeps_recent_generations(
    make_index: Callable[..., Index], tmp_path: Path
) -> None:
    index = make_index()
    store = SnapshotStore(tmp_path / "idx", keep=2)
    for _ in range(4):
        store.write(index)
    assert store.generations() == [3, 4]


def test_index_ids_cannot_escape_the_data_root(settings: Settings) -> None:
    for bad in ("../etc", "/abs/path", "a/b", "", "UPPER", "..", "idx\n"):
        with pytest.raises(IndexNotFoundError):
            index_dir(settings, bad)
    assert index_dir(settings, "all-minilm-l6-v2-abc").parent == settings.indexes_dir.resolve()


def test_embedding_cache_reembeds_only_changed_chunks(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache
) -> None:
    first = Index.create(model, settings, cache)
    report = first.apply(MANY[:10])
    assert report.chunks_embedded == 10
    second = Index.create(model, settings, cache)
    assert second.apply(MANY[:10]).chunks_embedded == 0
    changed = second.apply([Document("m1", "Note 1", "entirely new text", 2)])
    assert changed.chunks_embedded == 1 and changed.chunks_cached == 0
    assert cache.count(model.info.fingerprint) == 11
