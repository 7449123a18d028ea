"""The facade: one SnapshotStore per index directory, its parts sharing one document store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.documents import Document
from contracts.errors import SemsearchError
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import Manifest, SnapshotStore


def test_gc_keeps_at_least_two_generations(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path, keep=1).keep == 2 and SnapshotStore(tmp_path, keep=5).keep == 5


def test_writing_and_reading_share_one_document_store_connection(
    make_index: Callable[..., Index], tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    reader = store.document_store()
    assert store.document_store() is reader and not reader.writer
    manifest = store.write(make_index())
    writer = store.document_store(writer=True)
    assert writer.writer and store.document_store() is writer  # upgraded once, then shared
    assert store.read_manifest().generation == manifest.generation == store.latest_generation()


def test_a_long_lived_reader_holds_the_generation_it_loaded(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    index = make_index([Document("a", "A", "first note", 1)])
    store.write(index)
    newest = store.write(index)
    chosen: list[int] = []

    def model_for(manifest: Manifest) -> EmbeddingModel:
        chosen.append(manifest.generation)  # picked while the newest manifest is pinned
        assert manifest.generation in store.pins.pinned()
        return model

    loaded, manifest, hold = store.load_held(model_for, settings)
    assert chosen == [newest.generation] == [manifest.generation] == [hold.generation]
    assert loaded.count().documents == 1
    assert store.pins.pinned() == {newest.generation}
    hold.release()
    assert store.pins.pinned() == set()


def test_a_failed_load_leaves_no_pin_behind(tmp_path: Path, settings: Settings) -> None:
    store = SnapshotStore(tmp_path / "idx")

    def model_for(manifest: Manifest) -> EmbeddingModel:
        raise AssertionError("no generation exists: never called")

    with pytest.raises(SemsearchError):
        store.load_held(model_for, settings)
    assert store.pins.pinned() == set()


def test_a_model_that_fails_to_load_releases_the_pin(
    make_index: Callable[..., Index], settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    store.write(make_index([Document("a", "A", "first note", 1)]))

    def model_for(manifest: Manifest) -> EmbeddingModel:
        raise SemsearchError("the model of this manifest is not installed")

    with pytest.raises(SemsearchError, match="not installed"):
        store.load_held(model_for, settings)
    assert store.pins.pinned() == set()
