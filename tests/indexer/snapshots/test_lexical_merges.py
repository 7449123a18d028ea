"""Lexical merges in the background (indexer/snapshots/lexical_merges.py): a generation writes
only its delta; the merge runs after the publish and the next generation lists its output.

The merge is held at its checksum step with an Event, so a test decides what happens while it
runs; no sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts.documents import Deletion, Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore
from indexer.snapshots.lexical_merges import LexicalMerger

WAIT_S = 60.0
QUERIES = ("kidney dosage", "renal report 7", "creatinine 12", "cardiac output 3")


def _docs(start: int, stop: int, version: int = 1) -> list[Document]:
    return [
        Document(
            f"d{i}",
            f"Report {i}",
            f"Renal report {i} about kidney dosage, creatinine {i} and cardiac output {i % 5}.",
            version,
        )
        for i in range(start, stop)
    ]


def _bm25(index: Index) -> list[list[tuple[str, float]]]:
    return [
        [(h.doc_id, round(h.score, 5)) for h in index.search(q, k=5, mode="bm25")] for q in QUERIES
    ]


def _names(manifest_section: dict[str, object]) -> list[str]:
    segments = manifest_section["segments"]
    assert isinstance(segments, list)
    return [str(s["name"]) for s in segments]


@pytest.fixture
def background(settings: Settings) -> Settings:
    return settings.with_overrides(background_maintenance=True)


def _two_generations(index: Index, store: SnapshotStore) -> None:
    """A base of 40 documents, then a delta of 20: deltas holding more than 25 % of the base
    make the policy merge everything into a new base."""
    for start, stop in ((0, 40), (40, 60)):
        index.apply(_docs(start, stop))
        store.write(index)


def test_a_generation_leaves_its_merges_to_the_worker_and_the_next_lists_them(
    model: EmbeddingModel, background: Settings, settings: Settings, cache: EmbeddingCache, tmp_path: Path
) -> None:
    index = Index.create(model, background, cache)
    store = SnapshotStore(tmp_path / "bg")
    _two_generations(index, store)
    second = store.latest_manifest()
    assert second.lexical is not None and len(_names(second.lexical)) == 2  # merged afterwards
    assert store.settle()  # the merge that generation made due ran after its publish
    assert len(index.lexical.segments) == 1
    third = store.write(index)
    assert third.lexical is not None
    assert _names(third.lexical) == [s.name for s in index.lexical.segments]
    # the same answers as an index merging inside its generations, and after a restart
    inline = Index.create(model, settings, cache)
    inline_store = SnapshotStore(tmp_path / "inline")
    _two_generations(inline, inline_store)
    assert _bm25(index) == _bm25(inline)
    loaded, _ = store.load(model, background, cache)
    assert _bm25(loaded) == _bm25(index)


@dataclass
class Writer:
    """An index maintained in the background, its store, and the store's lexical merger."""

    index: Index
    store: SnapshotStore
    merger: LexicalMerger
    load: Callable[[int | None], Index]


@pytest.fixture
def writer(
    model: EmbeddingModel, background: Settings, cache: EmbeddingCache, tmp_path: Path
) -> Writer:
    store = SnapshotStore(tmp_path / "idx")

    def load(generation: int | None) -> Index:
        return store.load(model, background, cache, generation=generation)[0]

    index = Index.create(model, background, cache)
    return Writer(index, store, store._writer.lexical_merger, load)


def test_documents_deleted_while_a_merge_runs_stay_deleted(writer: Writer) -> None:
    index, store, merger = writer.index, writer.store, writer.merger
    entered, go = threading.Event(), threading.Event()
    real = merger._sidecar

    def held(rel: str) -> None:  # the merged file is written; it is not swapped in yet
        entered.set()
        assert go.wait(WAIT_S)
        real(rel)

    merger._sidecar = held  # type: ignore[method-assign]
    _two_generations(index, store)
    assert entered.wait(WAIT_S) and merger.busy
    # Meanwhile: delete documents held by the segments being merged, update others, write.
    index.apply([Deletion("d25"), Deletion("d45")])
    index.apply(_docs(41, 43, version=2))
    during = store.write(index)  # the merge is still running: its inputs are listed
    assert during.lexical is not None and merger.busy
    go.set()
    assert store.settle()
    after = store.write(index)
    expected = _bm25(index)
    hits = {doc for query in expected for doc, _ in query}
    assert "d25" not in hits and "d45" not in hits
    for manifest in (during, after):
        loaded = writer.load(manifest.generation)
        assert _bm25(loaded) == expected
        assert loaded.count().documents == 58
        assert loaded.get("d25") is None and loaded.get("d42").version == 2  # type: ignore[union-attr]


def test_a_failed_merge_changes_nothing_and_a_later_generation_retries(writer: Writer) -> None:
    index, store, merger = writer.index, writer.store, writer.merger
    real = merger._sidecar
    failures = {"left": 1}

    def flaky(rel: str) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(28, "No space left on device")
        real(rel)

    merger._sidecar = flaky  # type: ignore[method-assign]
    _two_generations(index, store)
    assert not store.settle()  # logged, dropped
    before = _bm25(index)
    store.write(index)  # lists the published segments again, and restarts the merge
    assert store.settle()
    final = store.write(index)
    assert final.lexical is not None and len(_names(final.lexical)) == 1
    loaded = writer.load(None)
    assert _bm25(loaded) == before == _bm25(index)
