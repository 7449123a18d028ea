"""Persisted lexical segments: round trips, O(change) deltas, merges, corruption, no re-analysis."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import indexer.analyzer
import indexer.lexical
import indexer.lexical_store
from contracts.errors import SnapshotError
from indexer.analyzer import analyze
from indexer.lexical import LexicalIndex
from indexer.lexical_store import LexicalStore, LexicalStoreError
from tests.indexer.test_lexical import LuceneIdfBM25, _corpus


def _queries(texts: list[str], n: int = 50, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(rng.choice(texts).split(), 3)) for _ in range(n)]


def _assert_same(a: LexicalIndex, b: LexicalIndex, queries: list[str], k: int = 10) -> None:
    assert len(a) == len(b)
    for query in queries:
        got, want = a.search(query, k), b.search(query, k)
        assert [i for i, _ in got] == [i for i, _ in want], query
        assert np.allclose([s for _, s in got], [s for _, s in want], rtol=1e-5), query


def _persist(store: LexicalStore, index: LexicalIndex) -> dict[str, Any]:
    return store.persist(index, index.checkpoint())


def _rebuilt(texts: dict[int, str]) -> LexicalIndex:
    index = LexicalIndex()
    for chunk_id in sorted(texts):
        index.add(chunk_id, texts[chunk_id])
    return index


def test_round_trip_equals_the_in_memory_index_and_rank_bm25(tmp_path: Path) -> None:
    texts = _corpus(300, seed=21)
    live = LexicalIndex()
    for i, text in enumerate(texts):
        live.add(i, text)
    store = LexicalStore(tmp_path)
    section = _persist(store, live)
    loaded = store.load(section)
    queries = _queries(texts)
    _assert_same(loaded, live, queries)
    reference = LuceneIdfBM25([analyze(t) for t in texts])
    for query in queries[:10]:
        expected = reference.get_scores(analyze(query))
        for chunk_id, score in loaded.search(query, 10):
            assert math.isclose(score, expected[chunk_id], rel_tol=1e-4)


def test_a_generation_writes_only_the_change_and_deltas_carry_removals(tmp_path: Path) -> None:
    texts = dict(enumerate(_corpus(400, seed=4)))
    live = LexicalIndex()
    for i in range(300):
        live.add(i, texts[i])
    store = LexicalStore(tmp_path)
    first = _persist(store, live)
    removed = list(range(0, 300, 7))
    for i in removed:
        live.remove(i)
    for i in range(300, 310):
        live.add(i, texts[i])
    second = _persist(store, live)
    assert second["segments"][0]["name"] == first["segments"][0]["name"]
    delta = second["segments"][-1]
    assert (delta["chunks"], delta["removed"]) == (10, len(removed))
    delta_bytes = (tmp_path / delta["file"]).stat().st_size
    base_bytes = (tmp_path / first["segments"][0]["file"]).stat().st_size
    assert delta_bytes < base_bytes / 5
    alive = {i: texts[i] for i in range(310) if i not in set(removed)}
    queries = _queries(list(alive.values()))
    _assert_same(store.load(second), _rebuilt(alive), queries)
    _assert_same(store.load(second), live, queries)
    # The older generation still loads as it was.
    _assert_same(store.load(first), _rebuilt({i: texts[i] for i in range(300)}), queries)


def test_merges_keep_scores_and_bound_the_segment_count(tmp_path: Path) -> None:
    texts = dict(enumerate(_corpus(1200, seed=9)))
    rng = random.Random(3)
    live = LexicalIndex()
    alive: dict[int, str] = {}
    store = LexicalStore(tmp_path)
    next_id = 0
    sections = []
    for _generation in range(40):
        for _ in range(25):
            live.add(next_id, texts[next_id])
            alive[next_id] = texts[next_id]
            next_id += 1
        for victim in rng.sample(sorted(alive), 8):
            live.remove(victim)
            del alive[victim]
        sections.append(_persist(store, live))
        assert len(sections[-1]["segments"]) <= 2 + indexer.lexical_store.MAX_DELTAS
    assert [s.name for s in live.segments] == [s["name"] for s in sections[-1]["segments"]]
    held = sum(s["chunks"] for s in sections[-1]["segments"])
    assert held - len(alive) <= 0.25 * held + 8  # removed postings are merged away
    queries = _queries(list(alive.values()))
    _assert_same(store.load(sections[-1]), _rebuilt(alive), queries)
    _assert_same(live, _rebuilt(alive), queries)


def test_inline_freezes_and_merges_never_touch_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer.lexical, "BUFFER_CHUNKS", 8)
    monkeypatch.setattr(indexer.lexical, "INLINE_MERGE_CHUNKS", 64)
    texts = dict(enumerate(_corpus(300, seed=5)))
    live = LexicalIndex()
    store = LexicalStore(tmp_path)
    for i in range(100):
        live.add(i, texts[i])
    checkpoint = live.checkpoint()
    for i in range(100, 200):  # buffered, frozen and merged while the checkpoint is persisted
        live.add(i, texts[i])
    first = store.persist(live, checkpoint)
    assert sum(s["chunks"] for s in first["segments"]) == 100
    second = _persist(store, live)
    queries = _queries([texts[i] for i in range(200)])
    _assert_same(store.load(first), _rebuilt({i: texts[i] for i in range(100)}), queries)
    _assert_same(store.load(second), _rebuilt({i: texts[i] for i in range(200)}), queries)


def test_refresh_reads_only_new_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _corpus(120, seed=8)
    writer = LexicalIndex()
    for i in range(100):
        writer.add(i, texts[i])
    store = LexicalStore(tmp_path)
    reader = store.load(_persist(store, writer))
    for i in range(100, 105):
        writer.add(i, texts[i])
    section = _persist(store, writer)
    reads: list[Path] = []
    original = indexer.lexical_store.read_segment

    def counting(path: Path, *, verify: bool = True) -> indexer.lexical.Segment:
        reads.append(path)
        return original(path, verify=verify)

    monkeypatch.setattr(indexer.lexical_store, "read_segment", counting)
    refreshed = store.load(section, reuse=reader)
    assert reads == [tmp_path / section["segments"][-1]["file"]]
    _assert_same(refreshed, writer, _queries(texts))


def test_load_does_not_analyze_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _corpus(200, seed=2)
    live = LexicalIndex()
    for i, text in enumerate(texts):
        live.add(i, text)
    live.add(200, "Invoice INV-2024-00917 overdue")
    store = LexicalStore(tmp_path)
    section = _persist(store, live)
    queries = [analyze(q) for q in _queries(texts, 10)]

    def refuse(text: str) -> list[str]:
        raise AssertionError("load must not analyze text")

    monkeypatch.setattr(indexer.analyzer, "analyze", refuse)
    loaded = store.load(section)
    for terms in queries:
        assert loaded.search_terms(terms, 5) == live.search_terms(terms, 5)
    assert loaded.chunks_with("#inv-2024-00917") == {200}  # identifiers stay exact terms


def _one_segment_file(tmp_path: Path) -> tuple[LexicalStore, dict[str, Any], Path]:
    live = LexicalIndex()
    for i, text in enumerate(_corpus(100, seed=6)):
        live.add(i, text)
    store = LexicalStore(tmp_path)
    section = _persist(store, live)
    return store, section, tmp_path / section["segments"][0]["file"]


def test_a_truncated_segment_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    store, section, path = _one_segment_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(LexicalStoreError, match="truncated") as caught:
        store.load(section)
    assert isinstance(caught.value, SnapshotError)  # the snapshot loader falls back on it
    assert "older generation" in str(caught.value)
    path.write_bytes(data[:5])
    with pytest.raises(LexicalStoreError, match="truncated"):
        store.load(section)


def test_a_flipped_byte_is_detected(tmp_path: Path) -> None:
    store, section, path = _one_segment_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LexicalStoreError, match="checksum"):
        store.load(section)
    path.unlink()
    with pytest.raises(LexicalStoreError, match="missing"):
        store.load(section)


def test_garbage_collection_keeps_referenced_segments(tmp_path: Path) -> None:
    texts = _corpus(200, seed=12)
    live = LexicalIndex()
    store = LexicalStore(tmp_path)
    for i in range(100):
        live.add(i, texts[i])
    old = _persist(store, live)
    for i in range(100, 200):  # > 25% of the base: a full merge replaces the old base
        live.add(i, texts[i])
    new = _persist(store, live)
    assert len(new["segments"]) == 1 and new["segments"][0]["chunks"] == 200
    long_ago = time.time() - 3600
    for path in (tmp_path / "lexical").iterdir():
        os.utime(path, (long_ago, long_ago))
    store.collect_garbage(set(LexicalStore.files(new)) | set(LexicalStore.files(old)))
    store.load(old)
    store.collect_garbage(set(LexicalStore.files(new)))
    with pytest.raises(LexicalStoreError, match="missing"):
        store.load(old)
    assert len(store.load(new)) == 200


def test_searches_run_while_the_writer_merges(tmp_path: Path) -> None:
    texts = _corpus(1500, seed=14)
    live = LexicalIndex()
    for i in range(1000):
        live.add(i, texts[i])
    store = LexicalStore(tmp_path)
    _persist(store, live)
    for i in range(1000, 1500):
        live.add(i, texts[i])
    for i in range(0, 1000, 2):
        live.remove(i)
    expected = {i: texts[i] for i in range(1500) if i >= 1000 or i % 2}
    queries = _queries(list(expected.values()), 20)
    want = {q: _rebuilt(expected).search(q, 10) for q in queries}
    errors: list[str] = []
    done = threading.Event()

    def search() -> None:
        while not done.is_set():
            for query in queries:
                if [i for i, _ in live.search(query, 10)] != [i for i, _ in want[query]]:
                    errors.append(query)

    thread = threading.Thread(target=search)
    thread.start()
    try:
        section = _persist(store, live)  # full merge, swapped in while searches run
    finally:
        done.set()
        thread.join(timeout=60)
    assert not errors
    assert len(section["segments"]) == 1 and len(live.segments) == 1
    assert live.segments[0].chunks == len(expected)


@pytest.mark.parametrize("old_format", [1, 2])
def test_older_segments_load_rank_the_same_and_are_rewritten_by_merges(
    tmp_path: Path, old_format: int
) -> None:
    """Files written before block bounds (format 1) or posting weights (format 2) existed still
    load: what they lack is computed when read, rankings are unchanged, and the next merge
    writes the current format."""
    texts = dict(enumerate(_corpus(400, seed=27)))
    live = _rebuilt({i: texts[i] for i in range(300)})
    store = LexicalStore(tmp_path)
    section = _persist(store, live)
    path = tmp_path / section["segments"][0]["file"]
    indexer.lexical_store.write_segment(live.segments[0], path, file_format=old_format)
    assert f'"format": {old_format}'.encode() in path.read_bytes()[:4096]
    assert b'"weights"' not in path.read_bytes()[:4096]
    loaded = store.load(section)  # the manifest checksum is the snapshot loader's, not here
    assert loaded.segments[0].block_max.shape == live.segments[0].block_max.shape
    assert np.array_equal(loaded.segments[0].block_max, live.segments[0].block_max)
    assert np.array_equal(loaded.segments[0].weights, live.segments[0].weights)
    queries = _queries(list(texts.values())[:300])
    _assert_same(loaded, live, queries)
    for i in range(300, 400):  # > 25% of the base: the next generation fully merges
        loaded.add(i, texts[i])
    merged = _persist(store, loaded)
    header = indexer.lexical_store.read_segment(tmp_path / merged["segments"][0]["file"])
    assert header.block_max.shape[0] > 0
    raw = (tmp_path / merged["segments"][0]["file"]).read_bytes()
    assert b'"format": 3' in raw[:4096]
    _assert_same(store.load(merged), _rebuilt(texts), _queries(list(texts.values())))


def test_an_unknown_segment_format_is_refused_with_the_rebuild_hint(tmp_path: Path) -> None:
    store, section, path = _one_segment_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"format": 3', b'"format": 9', 1))
    with pytest.raises(LexicalStoreError, match=r"format 9.*reads 1, 2, 3.*semsearch build"):
        store.load(section)
