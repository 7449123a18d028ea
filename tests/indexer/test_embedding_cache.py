"""The embedding cache saves work; a cache that cannot be written (disk full) never stops indexing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from contracts.documents import Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel


def _fill_the_disk(cache: EmbeddingCache) -> None:
    """SQLite's own limit on the file's pages: writes fail with SQLITE_FULL, as on a full disk."""
    pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
    cache._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_cache_is_a_logged_miss_not_an_error(
    tmp_path: Path, model: EmbeddingModel, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    try:
        kept = np.ones(model.dimension, dtype=np.float32) / np.sqrt(model.dimension)
        cache.put_many("fp", [("kept", kept)])
        _fill_the_disk(cache)
        big = [(f"h{i}", np.random.default_rng(i).random(model.dimension).astype(np.float32)) for i in range(500)]
        with caplog.at_level(logging.WARNING, logger="indexer.embedding_cache"):
            cache.put_many("fp", big)  # must not raise
        assert cache.write_failures == 1
        assert "full" in caplog.text and "embedded again" in caplog.text
        found = cache.get_many("fp", ["kept", "h1"], model.dimension)
        assert set(found) == {"kept"}  # what was written before is still served
    finally:
        cache.close()


def test_indexing_goes_on_when_the_cache_cannot_be_written(
    tmp_path: Path, model: EmbeddingModel
) -> None:
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    try:
        _fill_the_disk(cache)
        index = Index.create(model, Settings(data_dir=tmp_path / "data"), cache)
        docs = [Document(f"d{i}", "T", f"Document number {i} about vitamin D and bones.", 1) for i in range(4)]
        report = index.apply(docs)
        assert report.upserted == 4 and report.rejected == []
        assert report.chunks_embedded == 4 and cache.write_failures >= 1
        assert index.search("vitamin D bones", k=4, mode="hybrid")[0].doc_id.startswith("d")
        assert index.count().documents == 4
    finally:
        cache.close()


def test_embedding_cache_reembeds_only_changed_chunks(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache
) -> None:
    notes = [
        Document(f"m{i}", f"Note {i}", f"Clinical note {i} about topic {i % 7} and dosage {i}.", 1)
        for i in range(10)
    ]
    first = Index.create(model, settings, cache)
    report = first.apply(notes)
    assert report.chunks_embedded == 10
    second = Index.create(model, settings, cache)
    assert second.apply(notes).chunks_embedded == 0
    changed = second.apply([Document("m1", "Note 1", "entirely new text", 2)])
    assert changed.chunks_embedded == 1 and changed.chunks_cached == 0
    assert cache.count(model.info.fingerprint) == 11
