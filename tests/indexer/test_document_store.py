"""The document store (documents.sqlite): per-change generations, delta refresh, crash rollback,
corruption and the format-1 migration."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.documents import Deletion, Document
from contracts.errors import SnapshotError
from contracts.settings import Settings
from indexer.document_store import STORE_FILE, DocumentStore
from indexer.document_table import DocumentTable
from indexer.documents import ChunkRecord, DocumentRecord
from indexer.durable_files import sha256_of
from indexer.index import Index
from indexer.lexical import LexicalIndex
from indexer.lexical_store import LexicalStore
from indexer.model import EmbeddingModel
from indexer.snapshots import MANIFEST, SnapshotStore

WORDS = [
    "kidney", "renal", "filtration", "protein", "urine",
    "glomerular", "nephron", "sodium", "potassium", "dialysis",
]  # fmt: skip


def _record(i: int, version: int = 1, chunk_base: int = 0) -> DocumentRecord:
    text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(150)) + f" doc{i} v{version}"
    half = len(text) // 2
    chunks = (
        ChunkRecord(chunk_base + 2 * i, 0, half, f"{i:08d}{version:04d}a"),
        ChunkRecord(chunk_base + 2 * i + 1, half, len(text), f"{i:08d}{version:04d}b"),
    )
    return DocumentRecord(f"doc-{i}", version, f"Title {i}", text, {"n": i}, chunks)


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def _commit(table: DocumentTable, store: DocumentStore, generation: int) -> None:
    table.commit(store, generation, generation - 1)
    table.committed(store, generation)


def _populated(tmp_path: Path, docs: int = 2000) -> tuple[DocumentTable, DocumentStore]:
    store = DocumentStore(tmp_path, writer=True)
    table = DocumentTable()
    for i in range(docs):
        table.put(_record(i), previous=None)
    _commit(table, store, 1)
    return table, store


def test_a_generation_after_5_changed_docs_writes_bytes_proportional_to_the_change(
    tmp_path: Path,
) -> None:
    table, store = _populated(tmp_path)
    assert table.pending_count == 0  # committed: no text left in RAM
    store_bytes = sum(p.stat().st_size for p in tmp_path.glob(f"{STORE_FILE}*"))
    next_chunk = 10_000
    for i in range(5):
        table.put(_record(i, version=2, chunk_base=next_chunk))
    table.remove("doc-7", 3)
    before = _wchar()
    _commit(table, store, 2)
    written = _wchar() - before
    # Six changed documents of 2,000 (~1 KB of text each): the generation writes their rows and
    # the index pages they touch, not the table (a JSON dump would write all ~2.5 MB again).
    assert store_bytes > 2_000_000
    assert written < store_bytes / 20, (written, store_bytes)
    assert table.get("doc-3") == _record(3, version=2, chunk_base=next_chunk)
    assert table.get("doc-7") is None and table.held_version("doc-7") == 3
    assert len(table) == 1999 and table.chunk_count == 2 * 1999
    # An older generation still reads as it was (MVCC), from another connection.
    reader = DocumentTable.open(DocumentStore(tmp_path), 1, None)
    assert reader.get("doc-3") == _record(3) and reader.get("doc-7") == _record(7)
    assert reader.owner_id(2 * 3) == "doc-3" and reader.owner_id(next_chunk + 6) is None


def test_rows_no_kept_generation_sees_are_collected(tmp_path: Path) -> None:
    table, store = _populated(tmp_path, docs=50)
    for generation in range(2, 6):
        table.put(_record(1, version=generation, chunk_base=1000 * generation))
        _commit(table, store, generation)
    rows = store._query("SELECT count(*) FROM docs WHERE doc_id = 'doc-1'")[0][0]
    assert rows == 5
    store.collect(4)
    assert store._query("SELECT version FROM docs WHERE doc_id = 'doc-1' ORDER BY version") == [
        (4,),
        (5,),
    ]
    assert store.oldest_generation() == 4
    opened = DocumentTable.open(DocumentStore(tmp_path), 4, None)
    assert opened.held_version("doc-1") == 4 and len(opened) == 50


def test_a_table_loaded_from_an_older_generation_writes_its_own_state(tmp_path: Path) -> None:
    """The writer fell back to generation 1 (the newest manifest was unreadable): generation 3
    must hold generation 1's documents plus its own changes, not generation 2's rows."""
    table, store = _populated(tmp_path, docs=20)
    table.put(_record(1, version=2, chunk_base=500))
    table.remove("doc-2", None)
    _commit(table, store, 2)
    older = DocumentTable.open(store, 1, None)
    older.put(_record(5, version=7, chunk_base=900))
    older.commit(store, 3, 2)
    older.committed(store, 3)
    fresh = DocumentTable.open(DocumentStore(tmp_path), 3, None)
    assert fresh.get("doc-1") == _record(1) and fresh.get("doc-2") == _record(2)
    assert fresh.held_version("doc-5") == 7 and len(fresh) == 20 and not fresh.deleted_versions


def test_a_truncated_or_garbled_store_is_refused_with_a_fix(tmp_path: Path) -> None:
    _table, store = _populated(tmp_path)
    store.close()  # checkpoints the WAL into the main file
    path = tmp_path / STORE_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match=r"corrupt or truncated.*semsearch build"):
        DocumentTable.open(DocumentStore(tmp_path), 1, None)
    path.write_bytes(b"\x00garbage" * (len(data) // 8))
    with pytest.raises(SnapshotError, match=r"corrupt or truncated"):
        DocumentTable.open(DocumentStore(tmp_path), 1, None)
    path.unlink()
    with pytest.raises(SnapshotError, match=r"missing.*semsearch build"):
        DocumentTable.open(DocumentStore(tmp_path), 1, None)


# -- through SnapshotStore, with the real model ------------------------------------------------
def _docs(n: int, version: int = 1) -> list[Document]:
    return [
        Document(
            f"n{i}",
            f"Note {i}",
            f"note {i} about {WORDS[i % len(WORDS)]} version {version}",
            version,
        )
        for i in range(n)
    ]


def test_refresh_reads_only_the_rows_that_changed(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    index = make_index(_docs(40))
    writer = SnapshotStore(tmp_path / "idx")
    writer.write(index)
    reader = SnapshotStore(tmp_path / "idx")
    served, _ = reader.load(model, settings)
    index.apply(
        [
            Document("n3", "Note 3", "zymurgy brewing yeast", 2),
            Deletion("n4", 9),
            Document("n5", "Note 5", "xylophone practice", 2),
        ]
    )
    writer.write(index)
    before = reader.document_store().rows_read
    manifest = reader.refresh(served)
    read = reader.document_store().rows_read - before
    # 2 ended + 2 added rows, 1 deleted version, and the generation records: not 40 documents.
    assert read <= 8, read
    assert manifest.generation == 2 and served.documents.generation == 2
    assert served.count() == index.count()
    assert served.documents.held_version("n4") == 9 and served.get("n4") is None
    assert [h.doc_id for h in served.search("zymurgy", k=3, mode="bm25")] == ["n3"]
    protein = [h.doc_id for h in served.search("protein", k=40, mode="bm25")]
    assert "n13" in protein and "n3" not in protein  # n3's old text left BM25
    hit = served.search("xylophone", k=1, mode="hybrid")[0]
    assert (hit.doc_id, hit.title, hit.snippet) == ("n5", "Note 5", "Note 5 xylophone practice")


def _store_rows(root: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(root / STORE_FILE)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_crash_between_the_store_commit_and_the_manifest_rename_rolls_back(
    pending_change: tuple[Index, SnapshotStore],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, store = pending_change
    index.apply([Document("d1", "Vitamin D", "new", 2)])

    def crash(*args: object) -> None:
        raise OSError("simulated power loss before the rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        store.write(index, {"docs": {0: 10}})
    monkeypatch.undo()
    root = tmp_path / "idx"
    assert store.generations() == [1]
    assert _store_rows(root, "SELECT count(*) FROM docs WHERE gen_from = 2") == [(2,)]
    # A reader reads at its manifest's generation: the orphan rows are invisible.
    loaded, manifest = SnapshotStore(root).load(model, settings)
    assert manifest.generation == 1 and loaded.get("d9") is None and loaded.get("d1").version == 1  # type: ignore[union-attr]
    # The writer rolls them back when it opens.
    reopened, _ = SnapshotStore(root).load(model, settings, repair=True)
    assert _store_rows(root, "SELECT count(*) FROM docs WHERE gen_from > 1 OR gen_to > 1") == [(0,)]
    assert reopened.count() == loaded.count()
    # The surviving writer retries: generation 2 holds its changes once.
    assert store.write(index, {"docs": {0: 10}}).generation == 2
    live = _store_rows(
        root, "SELECT doc_id, count(*) FROM docs WHERE gen_to IS NULL GROUP BY doc_id"
    )
    assert all(count == 1 for _, count in live) and len(live) == 9
    again, manifest = SnapshotStore(root).load(model, settings)
    assert again.get("d9") is not None and again.get("d1").version == 2  # type: ignore[union-attr]
    assert manifest.documents is not None and manifest.documents["documents"] == 9


def test_a_corrupt_store_is_detected_and_says_how_to_rebuild(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    index = make_index()
    store.write(index)
    store.write(index)
    index.documents.store.close()  # type: ignore[union-attr]
    store.document_store(writer=True).close()
    path = tmp_path / "idx" / STORE_FILE
    path.write_bytes(b"not a database" * 512)
    with pytest.raises(
        SnapshotError, match=r"documents.sqlite is corrupt or truncated.*semsearch build"
    ):
        SnapshotStore(tmp_path / "idx").load(model, settings)
    with pytest.raises(SnapshotError, match=r"no loadable generation.*documents.sqlite is corrupt"):
        SnapshotStore(tmp_path / "idx").load(model, settings, fallback=True)
    with pytest.raises(SnapshotError, match=r"documents.sqlite is corrupt"):
        SnapshotStore(tmp_path / "idx").load(model, settings, fallback=True, repair=True)


def _as_format_1(root: Path, index: Index) -> None:
    """Rewrite generation 1 the way the format-1 writer left it: documents.jsonl in the
    generation (checksummed in the manifest), no documents.sqlite, format 1."""
    gen = root / "gen-000001"
    with (gen / "documents.jsonl").open("w", encoding="utf-8") as handle:
        index.documents.dump(handle)
    data = json.loads((gen / MANIFEST).read_text())
    data.pop("documents")
    data["format"] = 1
    data["files"]["GEN/documents.jsonl"] = {
        "sha256": sha256_of(gen / "documents.jsonl"),
        "bytes": (gen / "documents.jsonl").stat().st_size,
    }
    (gen / MANIFEST).write_text(json.dumps(data))
    for path in root.glob(f"{STORE_FILE}*"):
        path.unlink()


def test_a_format_1_index_is_refused_by_readers_and_migrated_by_the_writer(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "idx"
    index = make_index()
    index.apply([Deletion("d2", 5)])
    SnapshotStore(root).write(index, {"docs": {0: 9}})
    index.documents.store.close()  # type: ignore[union-attr]
    _as_format_1(root, index)
    with pytest.raises(SnapshotError, match=r"format 1.*`semsearch index`.*migrates"):
        SnapshotStore(root).load(model, settings)
    with pytest.raises(SnapshotError, match=r"no loadable generation.*format 1.*`semsearch index`"):
        SnapshotStore(root).load(model, settings, fallback=True)
    assert not (root / STORE_FILE).exists()  # a reader creates nothing

    writer = SnapshotStore(root)
    migrated, manifest = writer.load(model, settings, fallback=True, repair=True)
    assert writer.migrated_from == 1 and manifest.generation == 2 and manifest.format == 2
    assert manifest.offsets == {"docs": {0: 9}} and (root / STORE_FILE).is_file()
    assert migrated.count() == index.count() and migrated.documents.pending_count == 0
    served, served_manifest = SnapshotStore(root).load(model, settings)
    assert served_manifest.generation == 2 and served.count() == index.count()
    assert served.documents.held_version("d2") == 5 and served.get("d2") is None
    assert served.get("d1") == index.get("d1")
    assert [h.doc_id for h in served.search("INV-2024-00917", k=1)] == ["d7"]


# -- the lexical leg's segments, wired into generations ----------------------------------------
def test_a_restart_loads_the_lexical_segments_instead_of_analyzing_text(
    make_index: Callable[..., Index],
    model: EmbeddingModel,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "idx"
    index = make_index()
    store = SnapshotStore(root)
    first = store.write(index)
    index.apply([Document("d9", "Later", "zymurgy brewing yeast", 1), Deletion("d8", 2)])
    second = store.write(index)
    assert first.lexical is not None and second.lexical is not None
    assert set(LexicalStore.files(second.lexical)) <= set(second.files)  # checksummed

    def no_analysis(*args: object) -> None:
        raise AssertionError("a load analyzed text instead of reading the lexical segments")

    monkeypatch.setattr(LexicalIndex, "add", no_analysis)
    loaded, _ = SnapshotStore(root).load(model, settings)
    expected = [
        (h.doc_id, h.score) for h in index.search("invoice overdue zymurgy", k=5, mode="bm25")
    ]
    assert [
        (h.doc_id, h.score) for h in loaded.search("invoice overdue zymurgy", k=5, mode="bm25")
    ] == expected
    older, _ = SnapshotStore(root).load(model, settings, generation=1)
    SnapshotStore(root).refresh(older)
    assert [
        (h.doc_id, h.score) for h in older.search("invoice overdue zymurgy", k=5, mode="bm25")
    ] == expected


def test_a_corrupt_lexical_segment_is_rebuilt_by_the_writer_from_the_documents(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "idx"
    index = make_index()
    manifest = SnapshotStore(root).write(index, {"docs": {0: 8}})
    assert manifest.lexical is not None
    segment = root / LexicalStore.files(manifest.lexical)[0]
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        SnapshotStore(root).load(model, settings, fallback=True)
    writer = SnapshotStore(root)
    repaired, published = writer.load(model, settings, fallback=True, repair=True)
    assert published.generation == 2 and published.offsets == {"docs": {0: 8}}
    served, _ = SnapshotStore(root).load(model, settings)
    expected = [h.doc_id for h in index.search("INV-2024-00917 overdue", k=3, mode="bm25")]
    assert [h.doc_id for h in served.search("INV-2024-00917 overdue", k=3, mode="bm25")] == expected
    assert [
        h.doc_id for h in repaired.search("INV-2024-00917 overdue", k=3, mode="bm25")
    ] == expected
