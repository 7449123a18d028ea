"""Damaged index directories: every reader serves what still loads, the writer repairs or retries."""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tests_support import flip_a_byte

from consumers.worker import IndexWorker
from contracts.documents import Document
from contracts.errors import SnapshotError
from contracts.events import UpsertEvent
from contracts.settings import Settings
from indexer.document_table import DocumentTable
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, SnapshotWriteError, index_dir
from producers.publisher import Publisher
from query_api.holder import IndexHolder

MANY = [
    Document(f"m{i}", f"Note {i}", f"Clinical note {i} about topic {i % 7} and dosage {i}.", 1)
    for i in range(90)
]
EXTRA = [Document(f"x{i}", f"Extra {i}", f"An extra report {i} about kidneys and dosage {i}.", 1) for i in range(10)]
QUERIES = ("dosage of note 12", "topic 5", "clinical note 70")


def _results(index: Index) -> list[list[tuple[str, float | None]]]:
    return [
        [(h.doc_id, None if h.similarity is None else round(h.similarity, 4)) for h in index.search(q, k=5)]
        for q in QUERIES
    ]


def _written(model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, docs: list[Document]) -> tuple[Index, SnapshotStore]:
    """The model's live index directory: generation 1 holds `docs` (sealed: seal_chunks is 64),
    generation 2 also EXTRA (in the live segment); both reference the same sealed segment."""
    index = Index.create(model, settings, cache)
    store = SnapshotStore(index_dir(settings, model.index_id), keep=settings.keep_generations)
    index.apply(docs)
    store.write(index, {})
    index.apply(EXTRA)
    store.write(index, {})
    return index, store


def _skipped(holder: IndexHolder, index_id: str) -> float:
    value = holder.metrics.registry.get_sample_value("semsearch_generations_skipped_total", {"index_id": index_id})
    return value or 0.0


def test_a_truncated_newest_manifest_serves_the_previous_generation(
    model: EmbeddingModel, stream_settings: Settings, bootstrap: str, cache: EmbeddingCache
) -> None:
    _, store = _written(model, stream_settings, cache, MANY)
    manifest = store.root / "gen-000002" / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])  # a torn write
    holder = IndexHolder(stream_settings, redis_url="")  # no pointer: the configured model's index
    holder.poll_once()
    serving = holder.current
    assert serving is not None and serving.generation == 1 and serving.index.count().documents == 90
    assert _skipped(holder, model.index_id) >= 1

    worker = IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id)
    try:
        assert worker.generation == 1 and worker.index.count().documents == 90
        worker.index.apply(EXTRA)
        written = worker.snapshot()  # next to the broken one, never over it
        assert written.generation == 3
    finally:
        worker.close(final_snapshot=False)

    # Refresh: the broken generation is skipped, the newer good one is applied.
    holder.poll_once()
    assert holder.current is not None and holder.current.generation == 3
    assert holder.current.index.count().documents == 100
    # A broken generation newer than the served one does not disturb serving either.
    fourth = store.write(holder.current.index, {})
    (store.root / f"gen-{fourth.generation:06d}" / "manifest.json").write_text("{")
    before = _skipped(holder, model.index_id)
    holder.poll_once()
    assert holder.current.generation == 3 and _skipped(holder, model.index_id) == before + 1
    assert holder.current.index.search("extra report 7", k=1)[0].doc_id == "x7"


def test_a_corrupt_sealed_segment_is_rebuilt_from_the_cache_by_the_writer_only(
    model: EmbeddingModel,
    stream_settings: Settings,
    bootstrap: str,
    cache: EmbeddingCache,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    index, store = _written(model, stream_settings, cache, MANY)
    assert index.count().sealed_segments >= 1
    expected = _results(index)
    segments = sorted(store.segments_dir.glob("seg-*.faiss"))
    flip_a_byte(segments[0])  # shared by both generations: falling back does not help

    # Readers never write: they report clearly and leave the directory as it is.
    with pytest.raises(SnapshotError, match="no loadable generation") as err:
        store.load(model, stream_settings, fallback=True)
    assert "semsearch index" in str(err.value) and "embedding cache" in str(err.value)
    holder = IndexHolder(stream_settings, redis_url="")
    holder.poll_once()
    assert holder.current is None and holder.last_error and "semsearch index" in holder.last_error
    assert store.generations() == [1, 2] and sorted(store.segments_dir.glob("seg-*.faiss")) == segments

    def no_embedding(texts: Any) -> Any:
        raise AssertionError(f"repair embedded {len(texts)} chunks; the cache holds them all")

    monkeypatch.setattr(model, "encode_documents", no_embedding)
    caplog.set_level(logging.WARNING, logger="indexer.snapshots")
    worker = IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id)
    try:
        repair = worker.store.last_repair
        assert repair is not None and repair.chunks_embedded == 0
        assert repair.chunks_cached == repair.chunks > 0 and repair.corrupt == [f"segments/{segments[0].name}"]
        assert worker.generation == repair.published == 3
        assert _results(worker.index) == expected
        assert worker.index.count() == index.count()
    finally:
        worker.close(final_snapshot=False)
    assert "repaired" in caplog.text
    # The published generation loads for readers as it is, and answers as before.
    reader, manifest = SnapshotStore(store.root).load(model, stream_settings)
    assert manifest.generation == 3 and _results(reader) == expected
    holder.poll_once()
    assert holder.current is not None and holder.current.generation == 3


def test_repair_reembeds_what_the_cache_lacks_and_says_so(
    model: EmbeddingModel,
    stream_settings: Settings,
    bootstrap: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = EmbeddingCache(tmp_path / "first.sqlite")
    index, store = _written(model, stream_settings, first, MANY)
    expected = [[doc for doc, _ in hits] for hits in _results(index)]
    flip_a_byte(next(store.segments_dir.glob("seg-*.faiss")))
    empty = EmbeddingCache(tmp_path / "empty.sqlite")
    caplog.set_level(logging.WARNING, logger="indexer.snapshots")
    worker = IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=empty, group_id=stream_settings.group_id)
    try:
        repair = worker.store.last_repair
        assert repair is not None and repair.chunks_embedded == repair.chunks > 0
        assert f"re-embedding {repair.chunks} chunks" in caplog.text
        assert [[doc for doc, _ in hits] for hits in _results(worker.index)] == expected
        assert empty.count(model.info.fingerprint) == repair.chunks  # cached for next time
    finally:
        worker.close(final_snapshot=False)


def test_an_empty_checksum_sidecar_is_recomputed_not_fatal(
    make_index: Any, model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    index = make_index(MANY)
    store = SnapshotStore(tmp_path / "idx")
    store.write(index)
    sidecars = sorted(store.segments_dir.glob("*.sha256"))
    assert sidecars
    for sidecar in sidecars:
        sidecar.write_text("")  # what a crash between create and write leaves
    second = store.write(index)
    for sidecar in sidecars:
        assert sidecar.read_text().startswith("{")
    loaded, manifest = store.load(model, settings)
    assert manifest.generation == second.generation and loaded.count() == index.count()
    assert not list(store.segments_dir.glob(".tmp-*"))

    # A sidecar lost AFTER its segment was damaged must not bless the damage.
    segment = next(store.segments_dir.glob("seg-*.faiss"))
    flip_a_byte(segment)
    segment.with_name(segment.name + ".sha256").write_text("")
    third = store.write(index)
    with pytest.raises(SnapshotError, match="checksum"):
        store.load(model, settings, generation=third.generation)


def _disk_full(monkeypatch: pytest.MonkeyPatch, full: threading.Event) -> None:
    original = DocumentTable.commit

    def commit(self: DocumentTable, *args: Any) -> Any:
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args)

    monkeypatch.setattr(DocumentTable, "commit", commit)


def test_disk_full_during_a_write_leaves_nothing_and_keeps_the_previous_generation(
    pending_change: tuple[Index, SnapshotStore],
    model: EmbeddingModel,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, store = pending_change
    full = threading.Event()
    full.set()
    _disk_full(monkeypatch, full)
    with pytest.raises(SnapshotWriteError) as err:
        store.write(index, {"docs": {0: 9}})
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert str(err.value).startswith(f"disk full writing generation 2 in {store.root}: free space")
    assert "keeps serving generation 1" in str(err.value)
    assert not list(store.root.glob(".tmp-gen-*")) and store.generations() == [1]
    loaded, manifest = store.load(model, settings)
    assert manifest.offsets == {"docs": {0: 8}} and loaded.get("d9") is None
    full.clear()
    assert store.write(index, {"docs": {0: 9}}).generation == 2


def _failures(index_id: str) -> float:
    return REGISTRY.get_sample_value("semsearch_snapshot_failures_total", {"index_id": index_id}) or 0.0


def test_the_worker_retries_a_failed_snapshot_instead_of_dying(
    model: EmbeddingModel,
    stream_settings: Settings,
    bootstrap: str,
    cache: EmbeddingCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = IndexWorker.open(model, stream_settings, bootstrap=bootstrap, cache=cache, group_id=stream_settings.group_id)
    publisher = Publisher(bootstrap)
    try:
        assert worker.store.generations() == [1]
        persisted = dict(worker.snapshot_offsets)
        full = threading.Event()
        full.set()
        _disk_full(monkeypatch, full)
        failures = _failures(model.index_id)
        events = [UpsertEvent.build(f"d{i}", f"Doc {i}", f"document number {i} about kidneys", version=1) for i in range(6)]
        report = publisher.publish_docs(stream_settings.docs_topic, events)
        assert report.failed == 0
        tick = threading.Event()
        deadline = time.monotonic() + 60
        while len(worker.index.documents) < 6 or _failures(model.index_id) < failures + 2:
            assert time.monotonic() < deadline, f"consumed {len(worker.index.documents)}, failures {_failures(model.index_id) - failures}"
            worker.step()  # raises if a failed snapshot killed the worker
            tick.wait(0.01)
        assert worker.dirty and worker.snapshot_offsets == persisted  # nothing claimed as persisted
        assert worker.store.generations() == [1] and not list(worker.store.root.glob(".tmp-gen-*"))
        full.clear()  # space freed
        while worker.dirty:
            assert time.monotonic() < deadline, "the snapshot was not retried after space was freed"
            worker.step()
        assert worker.store.generations()[-1] == worker.generation >= 2
        manifest = worker.store.read_manifest()
        assert manifest.counts["documents"] == 6
        assert sum(o for parts in manifest.offsets.values() for o in parts.values()) == 6
    finally:
        publisher.close()
        worker.close(final_snapshot=False)
