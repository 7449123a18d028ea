"""Private copies: the newest generation, loaded with the model its manifest names, pinned
against GC for as long as the migration runs."""

from __future__ import annotations

from pathlib import Path

from consumers.migration.copies import PrivateCopies
from contracts.documents import Document
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel


def test_a_copy_is_the_newest_generation_and_stays_pinned_until_released(
    model: EmbeddingModel, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    copies = PrivateCopies(settings, None)
    store = copies.store_of(model.index_id)
    writer = Index.create(model, settings)
    writer.apply([Document("p1", "T", "one", 1)])
    store.write(writer)
    writer.apply([Document("p2", "T", "two", 1)])
    newest = store.write(writer)

    copy, manifest = copies.of_serving(model.index_id)

    assert manifest.generation == newest.generation
    assert {r.doc_id for r in copy.documents} == {"p1", "p2"}
    assert copy.index_id == model.index_id  # the model the manifest names (the bundled one)
    assert newest.generation in store.pins.pinned()
    writer.apply([Document("p3", "T", "three", 1)])
    store.write(writer)
    assert {r.doc_id for r in copy.documents} == {"p1", "p2"}  # nobody else writes to it
    copies.release()
    assert newest.generation not in store.pins.pinned()
