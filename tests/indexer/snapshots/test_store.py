"""The facade: one SnapshotStore per index directory, its parts sharing one document store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from indexer.index import Index
from indexer.snapshots import SnapshotStore


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
