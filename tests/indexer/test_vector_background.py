"""Seals, merges and retrains in the worker thread (indexer/vector_maintenance.py).

Jobs are held at their sink with an Event, so each test decides what the writer does while a
job runs; no sleeps.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from contracts.documents import Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.segments import SealedSegment
from indexer.snapshots import SnapshotStore
from indexer.snapshots.layout import segment_file
from indexer.vector_index import VectorIndex
from indexer.vector_maintenance import BackgroundMaintenance

D = 16
WAIT_S = 60.0


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Gate:
    """A sink that holds each job until `release`, recording what it was given."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.segments: list[SealedSegment] = []

    def __call__(self, segment: SealedSegment) -> None:
        self.segments.append(segment)
        self.entered.set()
        assert self.go.wait(WAIT_S), "the test never released the job"

    def release(self) -> None:
        self.go.set()


def _index(seal: int = 128) -> tuple[VectorIndex, Gate]:
    index = VectorIndex(D, seal_chunks=seal)
    gate = Gate()
    index.background = BackgroundMaintenance(index, sink=gate)
    return index, gate


def _ids_found(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray) -> set[int]:
    found: set[int] = set()
    for chunk_id, vector in zip(ids.tolist(), vectors, strict=True):
        hits = [i for i, _ in index.search(vector, 5)]
        if chunk_id in hits:
            found.add(chunk_id)
    return found


def test_a_seal_is_built_beside_the_writer_and_loses_no_change_made_meanwhile() -> None:
    index, gate = _index()
    x = _vectors(600, seed=1)
    index.add(np.arange(0, 128), x[:128])
    index.maintain()  # the first seal trains the quantizer in the writer's thread
    assert len(index.sealed) == 1 and index.quantizer is not None and not index.background.busy
    index.add(np.arange(128, 300), x[128:300])
    assert index.maintain() == []  # a seal job starts; nothing installed yet
    assert index.background.busy and gate.entered.wait(WAIT_S)
    # While it runs: the rows being sealed are still searchable (live), some are deleted,
    # more rows arrive.
    assert len(index.sealed) == 1 and len(index.live) == 172
    index.remove({130, 131, 299})
    index.add(np.arange(300, 400), x[300:400])
    assert index.maintain() == [] and len(index.sealed) == 1  # still running: nothing changes
    gate.release()
    index.background.settle()
    assert index.background.completed >= 1
    assert len(index) == 400 - 3
    held = np.concatenate([s.ids for s in index.sealed] + [index.live.ids])
    alive = sorted(set(held.tolist()) - index.tombstones)
    assert alive == sorted(set(range(400)) - {130, 131, 299})
    found = _ids_found(index, x[:400], np.arange(400))
    assert found == set(range(400)) - {130, 131, 299}
    assert {130, 131, 299} <= index.tombstones  # sealed while deleted: tombstoned there


def test_a_merge_planned_before_deletes_keeps_them_deleted() -> None:
    index, _ = _index(seal=64)
    x = _vectors(64 * 6, seed=2)
    held = threading.Event()
    go = threading.Event()

    def hold_merges(segment: SealedSegment) -> None:
        if len(segment) > 64:  # a merge's output, not a seal's
            held.set()
            assert go.wait(WAIT_S)

    index.background.sink = hold_merges
    for start in range(0, 64 * 4, 64):
        index.add(np.arange(start, start + 64), x[start : start + 64])
        index.maintain()  # the first seal in the writer's thread, then seal jobs
        index.background.finish()  # installed before the next batch
    sealed_before = {s.name for s in index.sealed}
    assert len(sealed_before) == 4 and not index.background.busy
    index.maintain()  # four tier-0 segments: a merge job starts
    assert index.background.busy and held.wait(WAIT_S)
    index.remove({5, 70, 200})  # in segments the merge is copying
    go.set()
    index.background.settle()
    assert len(index.sealed) == 1 and index.sealed[0].name not in sealed_before
    assert len(index) == 256 - 3
    assert _ids_found(index, x[:256], np.arange(256)) == set(range(256)) - {5, 70, 200}


def test_a_retrain_runs_in_the_worker_and_switches_the_quantizer_in_one_step() -> None:
    index, gate = _index(seal=128)
    gate.release()
    x = _vectors(128 * 40, seed=3)
    for start in range(0, len(x), 256):
        index.add(np.arange(start, start + 256), x[start : start + 256])
        index.maintain()
    index.background.settle()
    assert index.trained_on > 128 and index.nlist > 1  # retrained since the first seal
    assert all(s.index.nlist == index.nlist for s in index.sealed)
    assert len(index) == len(x)
    sample = np.arange(0, len(x), 37)
    assert len(_ids_found(index, x[sample], sample)) >= 0.95 * len(sample)


def test_a_failed_job_is_redone_in_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    index, gate = _index()
    gate.release()
    x = _vectors(300, seed=4)
    index.add(np.arange(0, 128), x[:128])
    index.maintain()
    calls = {"n": 0}
    real = index.build_seal

    def broken(ids: np.ndarray, vectors: np.ndarray) -> SealedSegment:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated")
        return real(ids, vectors)

    monkeypatch.setattr(index, "build_seal", broken)
    index.add(np.arange(128, 300), x[128:300])
    index.maintain()
    index.background.settle()  # the failed job is logged; the writer seals itself
    assert calls["n"] == 1 and len(index.sealed) >= 2 and len(index) == 300
    assert _ids_found(index, x, np.arange(300)) == set(range(300))


def test_a_generation_lists_only_installed_segments_and_finds_them_written(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    settings = settings.with_overrides(background_maintenance=True)
    index = Index.create(model, settings, cache)
    vectors = index.vectors
    assert vectors.background is not None
    store = SnapshotStore(tmp_path / "idx")
    docs = [
        Document(f"doc-{i}", f"title {i}", f"Document {i} about topic {i % 7}, words {i} {i * 3}", 1)
        for i in range(200)
    ]
    index.apply(docs[:80])  # the first seal trains the quantizer in the writer's thread
    store.write(index)  # the snapshot writer becomes the sink of new segments
    writer_sink = vectors.background.sink
    assert writer_sink is not None and len(vectors.sealed) == 1
    gate = Gate()

    def held(segment: SealedSegment) -> None:
        gate(segment)
        writer_sink(segment)

    vectors.background.sink = held
    index.apply(docs[80:])
    assert vectors.background.busy and gate.entered.wait(WAIT_S)
    manifest = store.write(index)  # the job is running: the generation lists no new segment
    assert [s["name"] for s in manifest.segments] == [s.name for s in vectors.sealed]
    assert manifest.counts["chunks"] == 200
    gate.release()
    vectors.background.settle(index.lock.writing)
    assert len(vectors.sealed) >= 2
    for segment in vectors.sealed:  # written by the worker, before any generation named them
        assert (store.root / segment_file(segment.name)).is_file()
    manifest = store.write(index)
    assert [s["name"] for s in manifest.segments] == [s.name for s in vectors.sealed]
    loaded, _ = store.load(model, settings, cache)
    assert loaded.count().chunks == index.count().chunks == 200
    for query in ("topic 3 words", "Document 150", "words 42"):
        assert [h.doc_id for h in loaded.search(query, k=5)] == [
            h.doc_id for h in index.search(query, k=5)
        ]
