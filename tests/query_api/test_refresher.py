"""Refresher against real snapshots: new generations applied in place, bad ones skipped once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from contracts.documents import Document
from contracts.settings import Settings
from indexer.snapshots import SnapshotStore
from query_api.loader import IndexLoader
from query_api.metrics import ApiMetrics
from query_api.refresher import Refresher

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]


@pytest.fixture
def metrics() -> ApiMetrics:
    return ApiMetrics()


@pytest.fixture
def loader(settings: Settings, metrics: ApiMetrics) -> IndexLoader:
    return IndexLoader(settings, metrics)


def skipped(metrics: ApiMetrics, index_id: str) -> float:
    value = metrics.registry.get_sample_value("semsearch_generations_skipped_total", {"index_id": index_id})
    return value or 0.0


def refreshes(metrics: ApiMetrics) -> float:
    return metrics.registry.get_sample_value("semsearch_index_loads_total", {"kind": "refresh"}) or 0.0


def pinned(store: SnapshotStore) -> list[str]:
    return sorted(p.name.split(".")[0] for p in (store.root / "pins").glob("*.*.*"))


def test_refresh_reuses_loaded_sealed_segments(
    loader: IndexLoader, metrics: ApiMetrics, build_index: BuildIndex, extra_doc: Document
) -> None:
    """Near-real-time reopen reads only what is new: a sealed segment is loaded once."""
    topics = ("rainfall", "soil acidity", "bird counts", "river flow")
    notes = [
        Document(f"n{i}", f"Note {i}", f"Field note {i} records {topics[i % 4]} at site {i * 7}.", 1)
        for i in range(64)  # seal_chunks=64 in these settings: one sealed IVF segment
    ]
    writer, store = build_index("idx-a", docs=notes)
    assert len(writer.vectors.sealed) == 1
    served = loader.load("idx-a")
    sealed = list(served.index.vectors.sealed)
    assert len(sealed) == 1
    writer.apply([extra_doc])
    store.write(writer, {"docs": {0: 11}})
    refreshed = Refresher(metrics).refresh(served)
    assert refreshed is not None and refreshed.generation == 2
    assert refreshed.index.get("d11") is not None
    assert refreshed.index.vectors.sealed == sealed and refreshed.index.vectors.sealed[0] is sealed[0]
    assert [h.doc_id for h in refreshed.index.search("antibiotic resistance", k=1)] == ["d11"]
    assert refreshed.index is served.index, "a refresh updates the open index; it does not reload it"
    assert refreshed.manifest.offsets == {"docs": {0: 11}}
    assert served.generation == 1, "the Serving a request took is not changed: a new one is made"
    assert pinned(store) == ["2"] and refreshes(metrics) == 1


def test_nothing_newer_is_no_refresh(loader: IndexLoader, metrics: ApiMetrics, build_index: BuildIndex) -> None:
    build_index("idx-a")
    served = loader.load("idx-a")
    assert Refresher(metrics).refresh(served) is None
    assert refreshes(metrics) == 0


def test_a_generation_that_fails_to_apply_is_skipped_once_and_the_next_one_applies(
    loader: IndexLoader, metrics: ApiMetrics, build_index: BuildIndex, extra_doc: Document
) -> None:
    writer, store = build_index("idx-a")
    served = loader.load("idx-a")
    refresher = Refresher(metrics)
    second = store.write(writer)
    (store.root / f"gen-{second.generation:06d}" / "manifest.json").write_text("{")  # torn
    for _ in range(2):
        assert refresher.refresh(served) is None
    assert skipped(metrics, "idx-a") == 1, "a bad generation is counted once, not every poll"
    assert pinned(store) == ["1"]
    writer.apply([extra_doc])
    store.write(writer)
    refreshed = refresher.refresh(served)
    assert refreshed is not None and refreshed.generation == 3
    assert refreshed.index.get("d11") is not None and pinned(store) == ["3"]
