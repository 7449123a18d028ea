"""Generations across a quantizer retrain: each names its own quantizer file, loads with it,
and a reader refreshes from before the retrain to after it.

Vectors come from the embedding cache (pre-filled with a synthetic mixture), so thousands of
chunks go through the real Index.apply path without running the model on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contracts.documents import Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def _docs(start: int, stop: int) -> list[Document]:
    return [Document(f"v{i}", f"V {i}", f"vector note {i} about item {i % 97}", 1) for i in range(start, stop)]


def _prefill(index: Index, cache: EmbeddingCache, docs: list[Document], seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = index.model.dimension
    centers = np.random.default_rng(0).standard_normal((30, d)).astype(np.float32)
    hashes = [c.content_hash for doc in docs for c in index.chunker.split(doc.full_text)]
    x = centers[rng.integers(0, 30, len(hashes))] + 0.5 * rng.standard_normal((len(hashes), d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cache.put_many(index.model.info.fingerprint, zip(hashes, x, strict=True))


def _grow(index: Index, cache: EmbeddingCache, start: int, stop: int) -> None:
    for lo in range(start, stop, 250):
        docs = _docs(lo, min(stop, lo + 250))
        _prefill(index, cache, docs, seed=lo)
        report = index.apply(docs)
        assert report.chunks_embedded == 0 and report.upserted == len(docs)


def _top(index: Index, queries: np.ndarray) -> list[list[int]]:
    with index.lock.reading():
        return [[i for i, _ in index.vectors.search(q, 10)] for q in queries]


def test_retrain_is_one_generation_and_older_ones_keep_their_quantizer(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    writer = Index.create(model, settings, cache)  # seal_chunks=64
    queries = np.random.default_rng(1).standard_normal((5, model.dimension)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _grow(writer, cache, 0, 750)
    first_name, first_nlist = writer.vectors.quantizer_name, writer.vectors.nlist
    assert first_nlist == 1 and first_name.startswith("quantizer-")
    store = SnapshotStore(tmp_path / "idx", keep=3)
    gen1 = store.write(writer, {"docs": {0: 750}})
    before = _top(writer, queries)
    reader, _ = store.load(model, settings, generation=1)
    sealed_before = list(reader.vectors.sealed)

    _grow(writer, cache, 750, 2100)  # retrained once, at 1,000 chunks: 2 lists
    assert writer.vectors.nlist == 2 and writer.vectors.quantizer_name != first_name
    assert writer.vectors.trained_on == 1000
    # everything re-assigned to the new quantizer; merges keep the segment count small
    assert all(s.index.nlist == 2 for s in writer.vectors.sealed) and len(writer.vectors.sealed) <= 4
    gen2 = store.write(writer, {"docs": {0: 2100}})
    after = _top(writer, queries)

    assert gen1.quantizer and gen2.quantizer
    assert gen1.quantizer["file"] == f"segments/{first_name}.faiss"
    assert gen2.quantizer["file"] != gen1.quantizer["file"]
    assert gen2.quantizer["nlist"] == 2 and gen2.quantizer["trained_on"] == 1000
    assert (store.root / gen1.quantizer["file"]).is_file()  # kept: gen 1 is still kept

    old, old_manifest = store.load(model, settings, generation=1)
    assert old.vectors.nlist == 1 and old.vectors.quantizer_name == first_name
    assert _top(old, queries) == before
    new, _ = store.load(model, settings, cache)
    assert new.vectors.nlist == 2 and new.vectors.quantizer_file == gen2.quantizer["file"]
    assert _top(new, queries) == after and new.count() == writer.count()

    # near-real-time reopen across the retrain: the reader adopts the new quantizer + segments
    assert reader.vectors.quantizer_name == first_name
    manifest = store.refresh(reader)
    assert manifest.generation == 2 and reader.vectors.quantizer_name == writer.vectors.quantizer_name
    assert not set(map(id, reader.vectors.sealed)) & set(map(id, sealed_before))
    assert _top(reader, queries) == after and len(reader.vectors) == len(writer.vectors)
    assert old_manifest.generation == 1

    # a resumed writer keeps growing with the loaded quantizer and retrains when due again
    _grow(new, cache, 2100, 2400)
    assert new.vectors.nlist == 2 and new.vectors.quantizer_name == writer.vectors.quantizer_name
    gen3 = store.write(new, {"docs": {0: 2400}})
    assert gen3.quantizer == gen2.quantizer  # same quantizer file, not rewritten


def test_loaded_live_rows_are_put_in_the_lists_outside_the_write_lock(
    model: EmbeddingModel,
    settings: Settings,
    cache: EmbeddingCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Assigning the live rows to the quantizer costs rows x nlist dot products (0.6 s at 1M
    chunks): a load or refresh does it before taking the index's write lock, and searches then
    scan the live segment's assigned lists, with the results of the writer."""
    from indexer.segments import LiveSegment

    writer = Index.create(model, settings, cache)  # seal_chunks=64
    _grow(writer, cache, 0, 300)
    store = SnapshotStore(tmp_path / "idx", keep=3)
    store.write(writer, {"docs": {0: 300}})
    reader, _ = store.load(model, settings, generation=1)
    _grow(writer, cache, 300, 310)  # rows in the writer's live segment (below seal_chunks)
    assert len(writer.vectors.live) and writer.vectors.live.quantizer is writer.vectors.quantizer
    store.write(writer, {"docs": {0: 310}})

    assigned_under_lock: list[bool] = []
    original = LiveSegment.assign
    original_rows = LiveSegment.assign_rows

    def watched(self: LiveSegment, quantizer: object, nlist: int) -> None:
        assigned_under_lock.append(reader.lock._writer)
        original(self, quantizer, nlist)  # type: ignore[arg-type]

    def watched_rows(self: LiveSegment, vectors: np.ndarray) -> np.ndarray | None:
        assigned_under_lock.append(reader.lock._writer)
        return original_rows(self, vectors)

    monkeypatch.setattr(LiveSegment, "assign", watched)
    # A refresh that only reads the new delta assigns just its rows (also before the lock).
    monkeypatch.setattr(LiveSegment, "assign_rows", watched_rows)
    store.refresh(reader)
    assert assigned_under_lock == [False]
    assert reader.vectors.live.quantizer is reader.vectors.quantizer
    assert len(reader.vectors.live) == len(writer.vectors.live) > 0
    queries = np.random.default_rng(2).standard_normal((5, model.dimension)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert _top(reader, queries) == _top(writer, queries)
