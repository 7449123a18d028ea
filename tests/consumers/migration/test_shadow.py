"""The shadow index before its gate: bootstrap streams the serving index's documents (texts are
never all in RAM) and carries deletions over; catch-up tails `docs` (real broker) until at most
one batch behind, and stops on request or at its deadline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import consumers.migration.shadow as shadow_module
import indexer.document_store as document_store
from consumers.migration.errors import MigrationAborted, MigrationError
from consumers.migration.shadow import bootstrap_shadow, catch_up
from consumers.migration.status import MigrationStatus
from consumers.worker import IndexWorker
from contracts.documents import Deletion, Document
from contracts.events import UpsertEvent
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import ApplyReport, Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore

from ..conftest import Publish


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


def test_bootstrap_reports_what_it_embedded_and_what_came_from_the_cache(
    model: EmbeddingModel, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    live = Index.create(model, settings, cache)
    live.apply([Document(f"c{i}", "T", f"Cached text number {i}.", 1) for i in range(6)])
    status = MigrationStatus(None, tmp_path)

    first = bootstrap_shadow(
        Index.create(model, settings, cache), live, status=status, stop=threading.Event()
    )
    again = bootstrap_shadow(
        Index.create(model, settings, cache), live, status=status, stop=threading.Event()
    )

    assert first["documents"] == again["documents"] == 6
    # The live index filled the cache: a bootstrap with the same model embeds nothing.
    assert first["chunks_embedded"] == 0 and first["chunks_cached"] == first["chunks"] > 0
    assert again["chunks"] == first["chunks"]
    assert status.current["state"] == "bootstrapping"
    assert status.current["progress"]["documents_done"] == 6


def test_bootstrap_stops_when_asked(model: EmbeddingModel, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    live = Index.create(model, settings)
    live.apply([Document("a", "T", "text", 1)])
    stop = threading.Event()
    stop.set()
    with pytest.raises(MigrationAborted):
        bootstrap_shadow(
            Index.create(model, settings), live, status=MigrationStatus(None, tmp_path), stop=stop
        )


def _shadow_worker(
    model: EmbeddingModel, settings: Settings, bootstrap: str, tmp_path: Path
) -> IndexWorker:
    shadow_settings = settings.with_overrides(data_dir=tmp_path / "shadow")
    return IndexWorker.from_index(
        Index.create(model, shadow_settings),
        shadow_settings,
        bootstrap=bootstrap,
        start_offsets={},
        group_id=f"{settings.group_id}.shadow",
    )


def test_catch_up_tails_docs_until_at_most_one_batch_behind(
    model: EmbeddingModel,
    stream_settings: Settings,
    bootstrap: str,
    publish: Publish,
    tmp_path: Path,
) -> None:
    publish([UpsertEvent.build(f"t{i}", "Tail", f"Tail event {i}.", 1) for i in range(10)])
    settings = stream_settings.with_overrides(batch_max_events=2)  # "caught up": lag <= 2
    worker = _shadow_worker(model, settings, bootstrap, tmp_path)
    status = MigrationStatus(None, tmp_path)
    try:
        catch_up(worker, status=status, stop=threading.Event(), timeout_s=120)
        lag = sum(worker.source.lag().values())
        consumed = sum(o for parts in worker.offsets.values() for o in parts.values())
        assert lag <= 2 and consumed + lag == 10
        assert len(worker.index.documents) == consumed
    finally:
        worker.close(final_snapshot=False)


def test_catch_up_is_aborted_by_stop_and_fails_at_its_deadline(
    model: EmbeddingModel, stream_settings: Settings, bootstrap: str, tmp_path: Path
) -> None:
    worker = _shadow_worker(model, stream_settings, bootstrap, tmp_path)
    status = MigrationStatus(None, tmp_path)
    stop = threading.Event()
    try:
        with pytest.raises(MigrationError, match="did not catch up"):
            catch_up(worker, status=status, stop=stop, timeout_s=-1)
        stop.set()
        with pytest.raises(MigrationAborted):
            catch_up(worker, status=status, stop=stop)
    finally:
        worker.close(final_snapshot=False)
