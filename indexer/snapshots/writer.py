"""Committing a generation: everything written into a temporary directory, the manifest last,
fsynced, then one rename publishes it with the Kafka offsets whose events it contains.

A crash at any point leaves the previous generation intact, so the offsets in a manifest are
exactly those its data reflects (bytewax-style recovery: resume from the snapshot, not from
Kafka commits). Files shared with other generations (sealed segments, quantizers, lexical
segments, live bases and deltas) are written once, atomically, before the manifest that names
them; documents are committed to documents.sqlite, in one transaction, before the manifest too
(a crash in between leaves rows no manifest reads, rolled back before the next commit). After a
publish, GC runs; its failure does not undo the publish.

Assumes the caller holds the index directory's WriterLock (indexer/writer_lock.py).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from contracts.errors import IndexNotFoundError, SnapshotError
from contracts.offsets import Offsets
from indexer import live_store
from indexer.durable_files import fsync_dir, fsync_file, write_atomically
from indexer.index import Index
from indexer.lexical import Checkpoint
from indexer.lexical_store import LexicalStore
from indexer.live_store import LivePlan
from indexer.segments import SealedSegment
from indexer.snapshots import checksums
from indexer.snapshots.checksums import Record
from indexer.snapshots.document_connection import DocumentConnection
from indexer.snapshots.garbage import GarbageCollector
from indexer.snapshots.generations import Generations
from indexer.snapshots.layout import (
    MANIFEST,
    TOMBSTONES,
    gen_dir,
    own_file,
    segment_file,
    segments_dir,
    temporary_gen_dir,
)
from indexer.snapshots.lexical_merges import LexicalMerger
from indexer.snapshots.manifest import Manifest, segment_files
from indexer.vector_codec import PQSegment, full_vectors_file

log = logging.getLogger(__name__)


class SnapshotWriteError(SnapshotError, OSError):
    """Writing a generation failed (nothing was published). Also an OSError, so callers that
    treat I/O failures as retryable keep doing so; `errno` is the underlying one."""


class GenerationWriter:
    def __init__(
        self, generations: Generations, documents: DocumentConnection, garbage: GarbageCollector
    ) -> None:
        self.root = generations.root
        self.generations = generations
        self.documents = documents
        self.garbage = garbage
        self._live_plan: LivePlan | None = None  # written, committed once the generation is
        # Background maintenance: a published generation's lexical merges run in a worker.
        self.lexical_merger = LexicalMerger(self.root)
        self._lexical_persisted: Checkpoint | None = None

    def write(
        self,
        index: Index,
        offsets: Offsets | None = None,
        extra: dict[str, Any] | None = None,
        newest_event_ms: int | None = None,
    ) -> Manifest:
        """`SnapshotStore.write`, which documents the guarantees (the facade forwards here)."""
        generation = 1
        tmp: Path | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            segments_dir(self.root).mkdir(exist_ok=True)
            generation = (self.generations.latest_generation() or 0) + 1
            tmp = temporary_gen_dir(self.root, generation)
            tmp.mkdir()
            self._live_plan = None
            self._lexical_persisted = None
            if index.vectors.background is not None:
                index.vectors.background.sink = self.prewrite_segment
            manifest = self._write_into(tmp, generation, index, offsets, extra, newest_event_ms)
            try:
                os.rename(tmp, gen_dir(self.root, generation))
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise SnapshotError(
                        f"generation {generation} appeared in {self.root} while this process "
                        "wrote it: another process writes this index; run one writer per index "
                        "(semsearch index / semsearch build take its LOCK)"
                    ) from exc
                raise
            tmp = None
            fsync_dir(self.root)
            with index.lock.writing():
                index.documents.committed(self.documents.store(writer=True), generation)
                if self._live_plan is not None:
                    self._live_plan.commit()  # the next generation writes a delta from here
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, SnapshotError):
                raise self._write_error(exc, generation) from exc
            raise
        if self._lexical_persisted is not None:  # published: its merges may start
            self.lexical_merger.start(index.lexical, self._lexical_persisted)
        try:
            self.garbage.collect()
        except OSError as exc:  # the generation is published; GC retries next time
            log.warning("garbage collection in %s failed: %s", self.root, exc)
        return manifest

    def _write_error(self, exc: OSError, generation: int) -> SnapshotWriteError:
        keeps = (
            f"the index keeps serving generation {generation - 1}"
            if generation > 1
            else "nothing is served until a generation is written"
        )
        if exc.errno == errno.ENOSPC:
            message = (
                f"disk full writing generation {generation} in {self.root}: free space; "
                f"{keeps} and the indexer retries"
            )
        else:
            message = (
                f"could not write generation {generation} in {self.root}: {exc}; {keeps} and "
                "the indexer retries"
            )
        error = SnapshotWriteError(message)
        error.errno = exc.errno
        return error

    def _write_into(
        self,
        tmp: Path,
        generation: int,
        index: Index,
        offsets: Offsets | None,
        extra: dict[str, Any] | None,
        newest_event_ms: int | None = None,
    ) -> Manifest:
        files: dict[str, Record] = {}
        with index.lock.reading():
            vectors = index.vectors
            quantizer: dict[str, Any] | None = None
            if vectors.quantizer is not None:
                # Versioned by name: a retrain is a new file, older generations keep theirs.
                quantizer = vectors.quantizer_entry()
                self._write_once(
                    self.root / quantizer["file"],
                    lambda p: faiss.write_index(vectors.quantizer, str(p)),
                )
            segments: list[dict[str, Any]] = []
            for segment in vectors.sealed:
                rel = segment_file(segment.name)
                self._write_once(self.root / rel, segment.save)
                record: dict[str, Any] = {"name": segment.name, "file": rel, "count": len(segment)}
                if isinstance(segment, PQSegment):
                    record["vectors"] = self._write_full_vectors(segment, full_vectors_file(rel))
                segments.append(record)
            np.save(tmp / TOMBSTONES, np.fromiter(sorted(vectors.tombstones), dtype=np.int64))
            documents = self._write_documents(index, generation)
            # The rows changed since the previous generation (or a fresh base when due).
            live, self._live_plan = live_store.persist(self.root, vectors.live)
            files.update(live_store.checksums(live))
            lexical_checkpoint = index.lexical.checkpoint()
            counts = index.count().__dict__
            next_chunk_id = index.next_chunk_id
        lexical = self._write_lexical(index, lexical_checkpoint)
        for name in (TOMBSTONES,):
            fsync_file(tmp / name)
            files[own_file(name)] = checksums.record(tmp / name)
        previous: dict[str, Record] | None = None
        shared = segment_files(segments) + ([quantizer["file"]] if quantizer else [])
        for rel in shared + LexicalStore.files(lexical):
            entry = checksums.read_sidecar(self.root, rel)
            if entry is None:
                if previous is None:
                    previous = self._previous_checksums()
                entry = checksums.write_sidecar(self.root, rel, previous.get(rel))
            files[rel] = entry
        manifest = Manifest(
            index_id=index.index_id,
            generation=generation,
            created_at=time.time(),
            model=index.model.info.to_json(),
            canaries=index.canaries.to_json(),
            settings={
                "chunk_tokens": index.config.chunk_tokens,
                "chunk_overlap": index.config.chunk_overlap,
                "nprobe": index.config.nprobe,
                "seal_chunks": index.config.seal_chunks,
            },
            counts=counts,
            next_chunk_id=next_chunk_id,
            quantizer=quantizer,
            segments=segments,
            offsets={t: dict(p) for t, p in (offsets or {}).items()},
            files=files,
            extra=extra or {},
            documents=documents,
            lexical=lexical,
            live=live,
            newest_event_ms=newest_event_ms,
        )
        manifest_path = tmp / MANIFEST
        manifest_path.write_text(manifest.dumps())
        fsync_file(manifest_path)
        fsync_dir(tmp)
        return manifest

    def _write_documents(self, index: Index, generation: int) -> dict[str, Any]:
        """Commit the documents changed since the previous generation (one SQLite transaction,
        O(changes)); rows a crashed attempt left above the newest manifest are rolled back in the
        same transaction. Returns the manifest's `documents` entry."""
        previous = self.generations.latest_generation() or 0
        store = self.documents.store(writer=True)
        return index.documents.commit(store, generation, previous).to_json()

    def _write_lexical(self, index: Index, checkpoint: Checkpoint) -> dict[str, Any]:
        """The lexical leg's delta segment since the previous generation, written outside the
        index lock (indexer/lexical_store.py); checksummed like sealed segments. Its merges run
        here too, or in the background after the publish when the index maintains in the
        background (indexer/snapshots/lexical_merges.py)."""
        store = LexicalStore(self.root)
        if not index.config.background_maintenance:
            return store.persist(index.lexical, checkpoint)
        section = store.persist(index.lexical, checkpoint, merge=False)
        self._lexical_persisted = store.persisted  # merged after the publish (lexical_merges.py)
        return section

    def _previous_checksums(self) -> dict[str, Record]:
        """Checksums the newest readable manifest recorded: a sidecar lost after its segment was
        corrupted must not bless the corruption by rehashing the damaged file."""
        try:
            return dict(self.generations.latest_manifest().files)
        except (SnapshotError, IndexNotFoundError):
            return {}

    def prewrite_segment(self, segment: SealedSegment) -> None:
        """A segment a background job just built, written with its checksum sidecar before any
        generation lists it (the worker's thread: indexer/vector_maintenance.py), so the
        generation that first names it writes only what changed. Unreferenced, it is removed by
        GC like any stale file; the generation that lists it rewrites it if it is gone."""
        segments_dir(self.root).mkdir(parents=True, exist_ok=True)
        rel = segment_file(segment.name)
        self._write_once(self.root / rel, segment.save)
        written = [rel]
        if isinstance(segment, PQSegment):
            written.append(self._write_full_vectors(segment, full_vectors_file(rel)))
        for name in written:
            checksums.write_sidecar(self.root, name)

    def _write_full_vectors(self, segment: PQSegment, rel: str) -> str:
        """A PQ segment's full vectors, written once like its segment; from then on they are
        served from the file's memory map instead of RAM."""
        self._write_once(self.root / rel, segment.full.write)
        segment.full.spill(self.root / rel)
        return rel

    @staticmethod
    def _write_once(path: Path, writer: Any) -> None:
        if not path.exists():
            write_atomically(path, writer)
