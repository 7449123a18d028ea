"""Refresh: an open index moves forward in place, keeping what it already holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests_support import chunk_ids_consistent

from contracts.documents import Deletion, Document
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def _results(index: Index, query: str) -> list[tuple[str, float]]:
    return [(h.doc_id, round(h.score, 5)) for h in index.search(query, k=5, mode="hybrid")]


def test_refresh_moves_an_open_index_forward(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    many: list[Document],
) -> None:
    writer = make_index(many[:40])
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer)
    reader, _ = store.load(model, settings)
    writer.apply([*many[40:], Deletion("m1", 5), Document("m2", "Note 2", "now about pancreas", 2)])
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
