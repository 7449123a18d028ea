"""Repair: the writer rebuilds a corrupt sealed segment's vectors from the embedding cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.documents import Document
from contracts.errors import SnapshotError
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def test_a_corrupt_sealed_segment_is_rebuilt_and_published(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    cache: EmbeddingCache,
    tmp_path: Path,
    many: list[Document],
) -> None:
    index = make_index(many)
    store = SnapshotStore(tmp_path / "idx")
    store.write(index, {"docs": {0: 90}})
    segment = next(store.segments_dir.glob("seg-*.faiss"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        SnapshotStore(store.root).load(model, settings, cache)  # readers never repair
    writer = SnapshotStore(store.root)
    repaired, manifest = writer.load(model, settings, cache, repair=True)
    report = writer.last_repair
    assert report is not None and report.corrupt == [f"segments/{segment.name}"]
    assert report.chunks > 0 and report.chunks_cached == report.chunks and report.chunks_embedded == 0
    assert report.published == manifest.generation == 2 and manifest.offsets == {"docs": {0: 90}}
    assert repaired.count() == index.count()
    reloaded, _ = SnapshotStore(store.root).load(model, settings, cache)
    assert reloaded.count() == index.count()
    assert [h.doc_id for h in reloaded.search("dosage 12", k=3)] == [h.doc_id for h in index.search("dosage 12", k=3)]
