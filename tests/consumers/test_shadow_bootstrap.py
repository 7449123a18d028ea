"""Shadow bootstrap streams the serving index's documents: texts are never all in RAM."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import consumers.shadow as shadow_module
import indexer.document_store as document_store
from consumers.migration_status import MigrationStatus
from consumers.shadow import bootstrap_shadow
from contracts.documents import Deletion, Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import ApplyReport, Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def test_the_bootstrap_reads_the_store_page_by_page_and_copies_everything(
    model: EmbeddingModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", seal_chunks=64)
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    docs = [
        Document(f"b{i}", f"Title {i}", f"Body text {i} about subject {i % 5}.", 3, {"n": i})
        for i in range(40)
    ]
    writer = Index.create(model, settings, cache)
    writer.apply(docs)
    writer.apply([Deletion("b39", 4)])
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer)
    live, _ = store.load(model, settings, cache)  # every record is in the store, none in RAM
    reader = live.documents.store
    assert reader is not None and live.documents.pending_count == 0
    monkeypatch.setattr(document_store, "_PAGE_ROWS", 8)
    monkeypatch.setattr(shadow_module, "BOOTSTRAP_BATCH_DOCS", 4)

    shadow = Index.create(model, settings, cache)
    before = reader.rows_read
    applied: list[tuple[int, int]] = []  # (batch size, store rows read when it was applied)
    apply = shadow.apply

    def counting_apply(batch: Any) -> ApplyReport:
        applied.append((len(batch), reader.rows_read - before))
        return apply(batch)

    monkeypatch.setattr(shadow, "apply", counting_apply)
    stats = bootstrap_shadow(
        shadow, live, status=MigrationStatus(None, tmp_path), stop=threading.Event()
    )

    assert stats["documents"] == 39
    assert all(size <= 4 for size, _ in applied)
    # The first batch went in after one page (8 rows) of the 39, not after a full read.
    assert applied[0] == (4, 8)
    assert max(read for _, read in applied) <= 39

    def contents(index: Index) -> dict[str, tuple[Any, ...]]:
        return {r.doc_id: (r.version, r.title, r.text, r.metadata) for r in index.documents}

    assert contents(shadow) == contents(live) and len(contents(shadow)) == 39
    assert shadow.documents.held_version("b39") == 4  # the deleted version carried over
