"""Installing a verified generation into an Index: a new one (loading) or an open one moved
forward in place (refresh).

Everything is read and prepared outside the index lock (files, a refresh's document delta, the
live rows' assignment to the quantizer's lists); the lock is held only to swap it in, so queries
wait for the swap, not for the reads. A refresh reuses what the index already holds (sealed and
lexical segments, the live deltas it has) and applies only the document rows changed since its
generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from contracts.errors import SnapshotError
from indexer import live_store
from indexer.document_store import StoreChanges
from indexer.document_table import DocumentTable
from indexer.index import Index
from indexer.lexical import LexicalIndex
from indexer.lexical_store import LexicalStore
from indexer.segments import LiveSegment, SealedSegment
from indexer.snapshots.document_connection import DocumentConnection
from indexer.snapshots.layout import LEGACY_DOCUMENTS, LEGACY_LIVE, TOMBSTONES, gen_dir
from indexer.snapshots.manifest import Manifest, segment_files
from indexer.vector_codec import load_segment


def format1_refused(root: Path, manifest: Manifest) -> SnapshotError:
    return SnapshotError(
        f"generation {manifest.generation} of {root} was written in format 1 (documents "
        "in gen-*/documents.jsonl), which readers no longer load; start the indexer of this "
        "index (`semsearch index`), which migrates it when it opens, or rebuild it "
        "(`semsearch build`)"
    )


def same_quantizer(index: Index, manifest: Manifest) -> bool:
    """The index already holds the manifest's quantizer (so held live rows stay assigned)."""
    held = index.vectors.quantizer_file
    if manifest.quantizer is None:
        return held is None
    return manifest.quantizer["file"] == held and int(manifest.quantizer["nlist"]) == index.vectors.nlist


class Installer:
    def __init__(self, root: Path, documents: DocumentConnection) -> None:
        self.root = root
        self.documents = documents

    def install(
        self,
        index: Index,
        manifest: Manifest,
        sealed: dict[str, SealedSegment],
        skip: set[str] | None = None,
        *,
        writer: bool = False,
        refresh: bool = False,
    ) -> None:
        """`sealed`: segments the index holds, by name (not read again); `skip`: corrupt shared
        files the writer is rebuilding (left out); `writer`: open the document store writable
        (and accept format 1, which it migrates)."""
        changes: StoreChanges | None = None
        if refresh and manifest.documents is not None:
            changes = index.documents.delta(
                self.documents.store(), int(manifest.documents["generation"])
            )
        documents = lexical = None
        if changes is None:
            documents = self._open_documents(manifest, writer=writer)
        if changes is None or manifest.lexical is not None:
            lexical = self._load_lexical(index, manifest, documents, skip, reuse=refresh)
        update = None
        if refresh and manifest.live is not None and same_quantizer(index, manifest):
            update = live_store.prepare_update(self.root, index.vectors.live, manifest.live)
        live: LiveSegment | None = None
        if update is None:
            if skip and skip & set(live_store.files(manifest.live)):
                live = LiveSegment(index.model.dimension)  # the writer's repair re-adds its rows
            else:
                live = self._load_live(manifest, index.model.dimension)
        tombstones_file = gen_dir(self.root, manifest.generation) / TOMBSTONES
        tombstones = {int(i) for i in np.load(tombstones_file)}
        segments = [
            sealed.get(s["name"]) or load_segment(s, self.root)
            for s in manifest.segments
            if not (skip and skip & set(segment_files([s])))
        ]
        quantizer: Any = None
        if manifest.quantizer and manifest.quantizer["file"] != index.vectors.quantizer_file:
            quantizer = faiss.read_index(str(self.root / manifest.quantizer["file"]))
        if manifest.quantizer:  # the live rows into the quantizer's lists, before the lock
            held = index.vectors.quantizer if quantizer is None else quantizer
            if held is not None and live is not None:
                live.assign(held, int(manifest.quantizer["nlist"]))
        with index.lock.writing():
            if changes is not None:
                assert manifest.documents is not None
                index.documents.apply_delta(changes, int(manifest.documents["generation"]))
                if lexical is None:
                    self._apply_lexical(index, changes)
            else:
                assert documents is not None
                index.documents = documents
            if lexical is not None:
                index.lexical = lexical
            vectors = index.vectors
            for segment in list(vectors.sealed):
                if segment not in segments:
                    vectors.detach(segment)
            for segment in segments:
                if segment not in vectors.sealed:
                    vectors.attach(segment)
            if quantizer is not None:
                vectors.adopt_quantizer(quantizer, manifest.quantizer)  # type: ignore[arg-type]
            if update is not None:
                live = live_store.apply_update(update)
            assert live is not None
            vectors.live = live
            vectors.tombstones = tombstones
            vectors._selector = None
            index.next_chunk_id = manifest.next_chunk_id

    def _load_live(self, manifest: Manifest, dimension: int) -> LiveSegment:
        """The generation's live segment: its base + deltas, or the whole-segment file of a
        generation written before deltas (the next generation then writes a base)."""
        if manifest.live is None:
            return LiveSegment.load(gen_dir(self.root, manifest.generation) / LEGACY_LIVE, dimension)
        return live_store.load(self.root, manifest.live, dimension)

    def _open_documents(self, manifest: Manifest, *, writer: bool) -> DocumentTable:
        if manifest.documents is None:
            if not writer:
                raise format1_refused(self.root, manifest)
            return DocumentTable.load(gen_dir(self.root, manifest.generation) / LEGACY_DOCUMENTS)
        store = self.documents.store(writer=writer)
        return DocumentTable.open(store, int(manifest.documents["generation"]), manifest.documents)

    def _load_lexical(
        self,
        index: Index,
        manifest: Manifest,
        documents: DocumentTable | None,
        skip: set[str] | None,
        *,
        reuse: bool,
    ) -> LexicalIndex:
        """The persisted lexical segments (checksums verified with the manifest's files, so not
        hashed twice; a refresh reuses the segments it holds). Without them - format 1, or a
        corrupt segment the writer is repairing - BM25 is rebuilt from the document store,
        streamed (texts never all in RAM)."""
        section = manifest.lexical
        if section is not None and not (skip and skip & set(LexicalStore.files(section))):
            held = index.lexical if reuse else None
            return LexicalStore(self.root).load(section, reuse=held, verify=False)
        if documents is None:
            documents = index.documents
        lexical = LexicalIndex()
        for record in documents:
            full_text = record.full_text
            for chunk in record.chunks:
                lexical.add(chunk.chunk_id, full_text[chunk.start : chunk.end])
        return lexical

    @staticmethod
    def _apply_lexical(index: Index, changes: StoreChanges) -> None:
        """A refresh applies only the rows that changed: BM25 is not rebuilt per refresh."""
        for record in changes.ended:
            full_text = record.full_text
            for chunk in record.chunks:
                index.lexical.remove(chunk.chunk_id, full_text[chunk.start : chunk.end])
        for record in changes.added:
            full_text = record.full_text
            for chunk in record.chunks:
                index.lexical.add(chunk.chunk_id, full_text[chunk.start : chunk.end])
