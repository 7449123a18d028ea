"""The live segment on disk as a base plus per-generation deltas (indexer/live_store.py):
a generation writes the rows it changed, readers rebuild base + deltas, a refresh reads only
the deltas it lacks, and corruption, GC, old layouts and failed writes behave as before."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests_support import flip_a_byte

from contracts.documents import Deletion, Document
from contracts.errors import SnapshotError
from contracts.settings import Settings
from indexer import live_store
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore

DOCS = [
    Document(f"n{i}", f"Note {i}", f"Ward note {i} about topic {i % 9} and dose {i}.", 1)
    for i in range(40)
]


def _rows(index: Index) -> dict[int, bytes]:
    live = index.vectors.live
    return {int(i): live.vector(int(i)).tobytes() for i in live.ids}


def _top(
    index: Index, queries: tuple[str, ...] = ("dose 12", "topic 4", "ward note 30")
) -> list[list[str]]:
    return [[h.doc_id for h in index.search(q, k=5, mode="vector")] for q in queries]


def _chain(manifest: Any) -> list[dict[str, Any]]:
    assert manifest.live is not None
    return list(manifest.live["files"])


def _age(root: Path) -> None:
    for path in (root / "live").iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))


def test_a_generation_writes_only_the_rows_it_changed(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    writer = make_index(DOCS, seal_chunks=10_000)  # everything stays in the live segment
    store = SnapshotStore(tmp_path / "idx")
    first = store.write(writer, {"docs": {0: 40}})
    assert [e["kind"] for e in _chain(first)] == ["base"] and _chain(first)[0]["added"] == 40
    assert not (store.root / "gen-000001" / "live.npz").exists()

    writer.apply(
        [
            Document("n3", "Note 3", "now about the pancreas", 2),
            Deletion("n5", 2),
            *[Document(f"x{i}", "Extra", f"extra note {i}", 1) for i in range(3)],
        ]
    )
    second = store.write(writer, {"docs": {0: 45}})
    chain = _chain(second)
    assert [e["kind"] for e in chain] == ["base", "delta"] and chain[0] == _chain(first)[0]
    assert (chain[1]["added"], chain[1]["removed"]) == (
        4,
        2,
    )  # n3's new chunk + 3 extras; n3, n5 old
    assert chain[1]["bytes"] < chain[0]["bytes"] / 5  # proportional to the change
    assert second.files[chain[1]["file"]]["sha256"] == chain[1]["sha256"]

    loaded, manifest = store.load(model, settings)
    assert manifest.generation == 2 and manifest.offsets == {"docs": {0: 45}}
    assert _rows(loaded) == _rows(writer) and _top(loaded) == _top(writer)
    assert loaded.get("n5") is None and loaded.count() == writer.count()
    # an older generation keeps loading from its own (shorter) chain
    old, _ = store.load(model, settings, generation=1)
    assert len(old.vectors.live) == 40 and old.get("n5") is not None
    # a generation without change writes no live file at all
    third = store.write(writer, {"docs": {0: 46}})
    assert _chain(third) == chain


def test_refresh_reads_only_the_deltas_it_has_not_seen(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx", keep=5)
    store.write(writer)
    reader, _ = store.load(model, settings)
    held = reader.vectors.live
    writer.apply([Document("n1", "Note 1", "kidney function", 2)])
    store.write(writer)
    writer.apply([Deletion("n2", 2), Document("y", "New", "a new note on lungs", 1)])
    latest = store.write(writer)

    read: list[str] = []
    original = live_store._read

    def watched(root: Path, entry: dict[str, Any], dimension: int) -> Any:
        read.append(str(entry["file"]))
        return original(root, entry, dimension)

    monkeypatch.setattr(live_store, "_read", watched)
    store.refresh(reader)
    assert read == [e["file"] for e in _chain(latest)[1:]]  # the two new deltas, not the base
    assert reader.vectors.live is held  # updated in place
    assert _rows(reader) == _rows(writer) and _top(reader) == _top(writer)
    assert reader.count() == writer.count() and reader.get("n2") is None
    read.clear()
    store.refresh(reader)  # nothing new: nothing read
    assert read == []


def test_the_chain_is_bounded_by_a_fresh_base(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_store, "MAX_DELTAS", 2)
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx", keep=10)
    kinds = []
    for step in range(4):
        writer.apply([Document(f"z{step}", "Z", f"note number {step} on sleep", 1)])
        kinds.append([e["kind"] for e in _chain(store.write(writer))])
    assert kinds == [["base"], ["base", "delta"], ["base", "delta", "delta"], ["base"]]
    # a chain whose files would hold more than twice the live rows: a base instead
    monkeypatch.setattr(live_store, "MAX_DELTAS", 100)
    kinds = []
    for version in range(2, 9):  # each round replaces the same documents' chunks
        writer.apply(
            [Document(f"z{step}", "Z", f"note {step} v{version}", version) for step in range(4)]
        )
        manifest = store.write(writer)
        chain = _chain(manifest)
        kinds.append([e["kind"] for e in chain])
        rows_read = sum(int(e["added"]) + int(e["removed"]) for e in chain)
        assert rows_read <= 2 * int(manifest.live["rows"]), kinds
    assert ["base"] in kinds[1:] and any(len(k) > 1 for k in kinds), kinds
    loaded, _ = store.load(model, settings)
    assert _rows(loaded) == _rows(writer)
    # a seal replaces the live segment: the next generation starts a new base
    sealing = make_index(DOCS)  # seal_chunks=64
    other = SnapshotStore(tmp_path / "other")
    other.write(sealing)
    sealing.apply([Document(f"s{i}", "S", f"sealed note {i}", 1) for i in range(30)])
    assert sealing.count().sealed_segments >= 1
    chain = _chain(other.write(sealing))
    assert [e["kind"] for e in chain] == ["base"] and chain[0]["added"] == len(sealing.vectors.live)
    again, _ = other.load(model, settings)
    assert _rows(again) == _rows(sealing) and again.count() == sealing.count()


def test_a_corrupt_delta_refuses_its_generation_and_the_previous_one_is_served(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer)
    writer.apply([Document("n7", "Note 7", "hepatic dosing", 2)])
    store.write(writer)
    expected = _rows(writer)
    writer.apply([Document("w", "W", "a third generation", 1)])
    third = store.write(writer)
    flip_a_byte(store.root / _chain(third)[-1]["file"])
    with pytest.raises(SnapshotError, match="checksum"):
        store.load(model, settings)
    skipped: list[int] = []
    loaded, manifest = store.load(
        model, settings, fallback=True, on_skip=lambda g, _r: skipped.append(g)
    )
    assert manifest.generation == 2 and skipped == [3] and _rows(loaded) == expected
    # a reader on generation 2 refuses to refresh into it and keeps what it serves
    with pytest.raises(SnapshotError, match="checksum"):
        store.refresh(loaded)
    assert _rows(loaded) == expected

    # a chain that does not add up to the manifest (checksums intact) is refused too
    path = store.root / "gen-000002" / "manifest.json"
    data = json.loads(path.read_text())
    data["live"]["rows"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="add up"):
        store.load(model, settings, generation=2)


def test_generations_with_a_whole_live_npz_still_load(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    """The layout before deltas: GEN/live.npz, no `live` section; the next write starts a base."""
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx")
    manifest = store.write(writer)
    gen_dir = store.root / "gen-000001"
    writer.vectors.live.save(gen_dir / "live.npz")
    path = gen_dir / "manifest.json"
    data = json.loads(path.read_text())
    for rel in live_store.files(data.pop("live")):
        del data["files"][rel]
        (store.root / rel).unlink()
    from indexer.durable_files import sha256_of

    data["files"]["GEN/live.npz"] = {"sha256": sha256_of(gen_dir / "live.npz"), "bytes": 1}
    path.write_text(json.dumps(data))
    loaded, again = store.load(model, settings)
    assert again.live is None and again.generation == manifest.generation
    assert _rows(loaded) == _rows(writer) and _top(loaded) == _top(writer)
    loaded.apply([Document("q", "Q", "after the upgrade", 1)])
    chain = _chain(store.write(loaded))
    assert [e["kind"] for e in chain] == ["base"] and chain[0]["added"] == len(loaded.vectors.live)
    assert _rows(store.load(model, settings)[0]) == _rows(loaded)


def test_gc_keeps_the_chain_files_of_kept_and_pinned_generations_only(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_store, "MAX_DELTAS", 1)  # a new base every other generation
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx", keep=2)
    first = store.write(writer)
    pinned_files = live_store.files(first.live)
    with store.pin(1):
        for step in range(6):
            writer.apply([Document(f"g{step}", "G", f"gc note {step}", 1)])
            store.write(writer)
            _age(store.root)
        assert all((store.root / rel).is_file() for rel in pinned_files)
        assert store.load(model, settings, generation=1)[0].count().documents == 40
    writer.apply([Document("last", "L", "the last one", 1)])
    store.write(writer)
    _age(store.root)
    store.write(writer)  # GC sees the aged files
    kept = store.generations()
    needed = {rel for g in kept for rel in live_store.files(store.read_manifest(g).live)}
    present = {f"live/{p.name}" for p in (store.root / "live").iterdir()}
    assert present == needed and not set(pinned_files) & present
    assert _rows(store.load(model, settings)[0]) == _rows(writer)


def test_a_failed_generation_keeps_its_rows_for_the_next_delta(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer)
    writer.apply([Document("n9", "Note 9", "renal clearance", 2), Document("f", "F", "fresh", 1)])
    real_rename = os.rename

    def crash(src: Any, dst: Any) -> None:
        if Path(dst).name.startswith("gen-"):
            raise OSError("simulated power loss before the generation's rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        store.write(writer)
    monkeypatch.undo()
    assert store.generations() == [1]
    second = store.write(writer)
    assert [e["kind"] for e in _chain(second)] == ["base", "delta"]
    assert (_chain(second)[1]["added"], _chain(second)[1]["removed"]) == (2, 1)
    loaded, _ = store.load(model, settings)
    assert _rows(loaded) == _rows(writer) and loaded.get("n9").version == 2  # type: ignore[union-attr]


def test_a_corrupt_base_is_rebuilt_by_the_writer_from_the_cache(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    cache: EmbeddingCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A base is shared by every generation of its chain (like a sealed segment): readers refuse
    them all, naming the fix; the writer re-adds the live rows from the embedding cache."""
    writer = make_index(DOCS, seal_chunks=10_000)
    store = SnapshotStore(tmp_path / "idx")
    store.write(writer, {"docs": {0: 40}})
    writer.apply([Document("n4", "Note 4", "gastric ulcers", 2)])
    second = store.write(writer, {"docs": {0: 41}})
    expected = _top(writer)
    flip_a_byte(store.root / _chain(second)[0]["file"])
    with pytest.raises(SnapshotError, match="no loadable generation") as err:
        store.load(model, settings, fallback=True)
    assert "semsearch index" in str(err.value)

    def no_embedding(texts: Any) -> Any:
        raise AssertionError(f"repair embedded {len(texts)} chunks; the cache holds them all")

    monkeypatch.setattr(model, "encode_documents", no_embedding)
    repaired, manifest = store.load(model, settings, cache, fallback=True, repair=True)
    report = store.last_repair
    assert report is not None and report.chunks == 40 and report.chunks_embedded == 0
    assert manifest.generation == 3 and manifest.offsets == {"docs": {0: 41}}
    assert [e["kind"] for e in _chain(manifest)] == ["base"]
    assert _top(repaired) == expected and repaired.count() == writer.count()
    reader, again = store.load(model, settings)
    assert again.generation == 3 and _rows(reader) == _rows(repaired)


def test_the_journal_records_only_what_changed_since_the_chain() -> None:
    """Rows added and removed between two generations cost nothing; a persisted row removed is
    a removal; precomputed list assignments give the same lists as faiss' own."""
    import faiss
    import numpy as np

    from indexer.segments import LiveSegment

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    live = LiveSegment(8)
    live.add(np.arange(10), x[:10])
    live.adopt_chain(live_store.LiveChain(()))
    assert live.clean()
    live.add(np.arange(10, 14), x[10:14])
    live.remove({3, 11, 99})  # 3 was persisted, 11 never was, 99 is unknown
    added, removed = live.journal()
    assert sorted(added.tolist()) == [10, 12, 13] and removed.tolist() == [3] and not live.clean()
    np.testing.assert_array_equal(live.rows_of(added), x[added])  # in row order
    live.add(np.array([14]), x[14:15])  # after the journal was taken, before its commit
    live.remove({12})
    live.persisted(live_store.LiveChain(()), added, removed)
    again, gone = live.journal()
    assert again.tolist() == [14] and gone.tolist() == [12]

    quantizer = faiss.IndexFlatIP(8)
    quantizer.add(x[30:34])
    plain, assigned = LiveSegment(8), LiveSegment(8)
    for segment in (plain, assigned):
        segment.assign(quantizer, 4)
    plain.add(np.arange(20), x[:20])
    lists = assigned.assign_rows(x[:20])
    assert lists is not None and lists.shape == (20,)
    assigned.add(np.arange(20), x[:20], lists)
    coarse_scores, coarse_lists = quantizer.search(x[:3], 2)
    params = faiss.SearchParametersIVF()
    params.nprobe = 2
    for q in range(3):
        a = plain.search_assigned(
            x[q : q + 1], 5, (coarse_lists[q : q + 1], coarse_scores[q : q + 1]), params
        )
        b = assigned.search_assigned(
            x[q : q + 1], 5, (coarse_lists[q : q + 1], coarse_scores[q : q + 1]), params
        )
        assert a[1].tolist() == b[1].tolist()
