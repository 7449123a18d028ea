"""The lexical leg inside snapshot generations: restart without analysis, O(change), fallback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import indexer.analyzer
from contracts.documents import Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.lexical_store import LexicalStore
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir

QUERIES = ("vitamin d bone loss", "cholesterol statins", "invoice overdue", "INV-2024-00917")
EXTRA = [
    Document(f"x{i}", f"Extra {i}", f"Renal report {i} about kidney dosage and creatinine {i}.", 1)
    for i in range(6)
]


def _bm25(index: Index) -> list[list[tuple[str, float]]]:
    return [
        [(h.doc_id, round(h.score, 5)) for h in index.search(q, k=5, mode="bm25")] for q in QUERIES
    ]


def _store(settings: Settings, model: EmbeddingModel) -> SnapshotStore:
    return SnapshotStore(index_dir(settings, model.index_id), keep=settings.keep_generations)


def test_a_restart_loads_bm25_without_analyzing_text(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    cache: EmbeddingCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = make_index()
    store = _store(settings, model)
    store.write(index, {})
    expected = _bm25(index)

    def refuse(text: str) -> list[str]:
        raise AssertionError("loading a generation must not analyze chunk text")

    with monkeypatch.context() as patch:
        patch.setattr(indexer.analyzer, "analyze", refuse)
        loaded, manifest = _store(settings, model).load(model, settings, cache)
    assert manifest.lexical is not None and len(loaded.lexical) == len(index.lexical)
    assert _bm25(loaded) == expected
    hybrid = loaded.search("INV-2024-00917", k=3)
    assert hybrid[0].doc_id == "d7"  # identifier queries stay exact


def test_a_generation_writes_only_the_lexical_delta(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    cache: EmbeddingCache,
) -> None:
    notes = [
        Document(f"m{i}", f"Note {i}", f"Clinical note {i} on dosage {i}.", 1) for i in range(60)
    ]
    index = make_index(notes)
    store = _store(settings, model)
    first = store.write(index, {})
    index.apply([EXTRA[0]])
    second = store.write(index, {})
    assert first.lexical is not None and second.lexical is not None
    base = first.lexical["segments"][0]
    assert second.lexical["segments"][0]["file"] == base["file"]  # shared, not rewritten
    delta = second.lexical["segments"][-1]
    added = index.get("x0")
    assert added is not None
    assert delta["chunks"] == len(added.chunks) and delta["removed"] == 0
    root = index_dir(settings, model.index_id)
    assert (root / delta["file"]).stat().st_size < (root / base["file"]).stat().st_size
    for rel in LexicalStore.files(second.lexical):
        assert second.files[rel]["sha256"]  # checksummed in the manifest like sealed segments
    replaced = index.get("m3")
    assert replaced is not None
    index.apply([Document("m3", "Note 3", "Rewritten note three about sleep.", 2)])
    third = store.write(index, {})
    assert third.lexical is not None
    assert third.lexical["segments"][-1]["removed"] == len(replaced.chunks)
    loaded, _ = _store(settings, model).load(model, settings, cache)
    assert _bm25(loaded) == _bm25(index)


def test_a_corrupt_lexical_segment_is_skipped_by_readers_and_rebuilt_by_the_writer(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    cache: EmbeddingCache,
) -> None:
    index = make_index()
    store = _store(settings, model)
    store.write(index, {})
    before = _bm25(index)
    index.apply(EXTRA)
    second = store.write(index, {})
    after = _bm25(index)
    assert second.lexical is not None
    delta = index_dir(settings, model.index_id) / second.lexical["segments"][-1]["file"]
    data = bytearray(delta.read_bytes())
    data[len(data) // 2] ^= 0x40
    delta.write_bytes(bytes(data))

    skipped: list[int] = []
    reader, manifest = _store(settings, model).load(
        model, settings, cache, fallback=True, on_skip=lambda g, _reason: skipped.append(g)
    )
    assert skipped == [second.generation] and manifest.generation == second.generation - 1
    assert _bm25(reader) == before

    writer, repaired = _store(settings, model).load(model, settings, cache, repair=True)
    assert repaired.generation > second.generation  # BM25 rebuilt from the documents, published
    assert _bm25(writer) == after
    fresh, _ = _store(settings, model).load(model, settings, cache)
    assert _bm25(fresh) == after
