"""Snapshot generations: `gen-N/` directories written atomically, with the Kafka offsets they contain.

A generation is written into a temporary directory, fsynced, and renamed; the manifest (written
last) lists a checksum for every file it needs. A crash at any point therefore leaves the
previous generation intact, and the offsets in a manifest are exactly those whose events the
generation contains (bytewax-style recovery: resume from the snapshot, not from Kafka commits).
Sealed segments live in `segments/`, are written once and referenced by later generations; the
live segment is a base plus one delta per generation in `live/` (indexer/live_store.py), so a
generation writes the rows it changed, not the whole live segment.
Documents live in `documents.sqlite` (indexer/documents.py: why SQLite, MVCC by generation): a
generation commits only the documents changed since the previous one, in one SQLite transaction,
before its manifest; the manifest names the store generation and its row counts, which loading
verifies (SQLite's own page checks catch the rest; the writer runs `PRAGMA quick_check` when it
opens). A refresh reads only the rows changed between its generation and the new one. Format 1
(gen-*/documents.jsonl rewritten every generation) is migrated by the writer when it opens
(`semsearch index`), refused by readers with a message that says so.

What can go wrong on disk, and what happens then:
- a write fails (disk full, I/O error): the temporary directory is removed and a SnapshotWriteError
  says what to do; readers keep the previous generation, the writer keeps its state and retries.
- a manifest or generation file is corrupt: loading with `fallback` serves the newest generation
  that verifies, logging (and reporting through `on_skip`) each one skipped.
- a crash between the SQLite commit and the manifest rename: readers read at their manifest's
  generation and never see the extra rows; the writer rolls them back before committing again.
- documents.sqlite is corrupt or truncated (every generation shares it): SnapshotError naming the
  file and how to rebuild; nothing is served from it.
- a sealed segment (shared by many generations, so falling back does not help) fails its checksum:
  the writer (`load(repair=True)`, only under the index's WriterLock) rebuilds its vectors from the
  document table and the embedding cache and publishes a new generation; readers never write.
- GC runs while a reader loads: readers pin the generation (indexer/pins.py), GC skips it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from contracts.errors import IndexNotFoundError, SnapshotError
from contracts.ids import validate_index_id
from contracts.offsets import Offsets
from indexer import live_store
from indexer.canaries import CanaryProbe
from indexer.compatibility import ensure_compatible
from indexer.config import DataRoot, IndexConfig, IndexSettings
from indexer.document_store import DocumentStore, StoreChanges
from indexer.document_table import DocumentTable
from indexer.durable_files import fsync_dir, fsync_file, sha256_of, write_atomically
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.lexical import Checkpoint, LexicalIndex
from indexer.lexical_store import LexicalStore
from indexer.live_store import LivePlan
from indexer.model import EmbeddingModel
from indexer.pins import GenerationPins, Pin
from indexer.segments import LiveSegment, SealedSegment
from indexer.vector_codec import PQSegment, full_vectors_file, load_segment

log = logging.getLogger(__name__)

# 2: documents in documents.sqlite (1: gen-*/documents.jsonl, migrated by the writer on open).
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
_GEN = re.compile(r"^gen-(\d{6,})$")

# Called with (generation, reason) for each generation a fallback load skipped.
OnSkip = Callable[[int, str], object]
_STALE_TMP_S = 60


class SnapshotWriteError(SnapshotError, OSError):
    """Writing a generation failed (nothing was published). Also an OSError, so callers that
    treat I/O failures as retryable keep doing so; `errno` is the underlying one."""


class _Vanished(IndexNotFoundError):
    """The generation was garbage-collected before it could be pinned."""


@dataclass
class RepairReport:
    """What rebuilding corrupt sealed segments cost (chunks_embedded is 0 with a warm cache)."""

    generation: int
    corrupt: list[str]
    chunks: int = 0
    chunks_cached: int = 0
    chunks_embedded: int = 0
    published: int | None = None


def index_dir(settings: DataRoot, index_id: str) -> Path:
    """The directory of an index id, always inside the data root."""
    root = settings.indexes_dir.resolve()
    path = (root / validate_index_id(index_id)).resolve()
    if path.parent != root:
        raise IndexNotFoundError(f"index id {index_id!r} resolves outside {root}")
    return path


@dataclass
class Manifest:
    index_id: str
    generation: int
    created_at: float
    model: dict[str, Any]
    canaries: dict[str, Any]
    settings: dict[str, Any]
    counts: dict[str, int]
    next_chunk_id: int
    quantizer: dict[str, Any] | None
    segments: list[dict[str, Any]]
    offsets: Offsets
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION
    # The document store generation this manifest reads (StoreStats.to_json); None in format 1.
    documents: dict[str, Any] | None = None
    # The lexical segments (LexicalStore.persist's section); None: rebuilt from the documents.
    lexical: dict[str, Any] | None = None
    # The live segment's base + deltas (indexer/live_store.py); None: GEN/live.npz (before deltas).
    live: dict[str, Any] | None = None
    # Kafka timestamp (ms) of the newest event the offsets cover: GET /index reports its age.
    # None: unknown (no event consumed yet, no timestamp, or a manifest written before it).
    newest_event_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["offsets"] = {
            t: {str(p): o for p, o in parts.items()} for t, parts in self.offsets.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["offsets"] = {
            t: {int(p): int(o) for p, o in parts.items()} for t, parts in data["offsets"].items()
        }
        return cls(**data)


def _segment_files(segments: list[dict[str, Any]]) -> list[str]:
    """The shared files of sealed segments: each faiss file, and a PQ segment's full vectors."""
    return [rel for s in segments for rel in (s["file"], s.get("vectors")) if rel]


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except OSError:
        return False


class SnapshotStore:
    """Writes, verifies, loads and garbage-collects the generations of one index directory.

    Writing assumes the caller holds the directory's WriterLock (indexer/writer_lock.py); reading
    never needs it.
    """

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = max(2, keep)
        self.segments_dir = self.root / "segments"
        self.pins = GenerationPins(self.root)
        self.last_repair: RepairReport | None = None
        self.migrated_from: int | None = None  # the format-1 generation the writer migrated
        self._documents: DocumentStore | None = None
        self._writer_checked = False
        self._writer_error: SnapshotError | None = None
        self._live_plan: LivePlan | None = None  # written, committed once the generation is

    def document_store(self, *, writer: bool = False) -> DocumentStore:
        """The documents.sqlite of this directory (one connection per SnapshotStore); only the
        writer (under the WriterLock) may create it or write to it."""
        current = self._documents
        if current is None or (writer and not current.writer):
            current = self._documents = DocumentStore(self.root, writer=writer)
        return current

    # -- listing --------------------------------------------------------------------------
    def generations(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            match = _GEN.match(entry.name)
            if match and (entry / MANIFEST).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def latest_generation(self) -> int | None:
        generations = self.generations()
        return generations[-1] if generations else None

    def _gen_dir(self, generation: int) -> Path:
        return self.root / f"gen-{generation:06d}"

    def _no_snapshot(self) -> IndexNotFoundError:
        return IndexNotFoundError(
            f"no snapshot in {self.root}; build one with `semsearch build` or run `semsearch index`"
        )

    def read_manifest(self, generation: int | None = None) -> Manifest:
        if generation is None:
            # The newest one; if GC removes it between listing and reading, the next newest.
            for _ in range(10):
                latest = self.latest_generation()
                if latest is None:
                    raise self._no_snapshot()
                try:
                    return self.read_manifest(latest)
                except IndexNotFoundError:
                    continue
            raise SnapshotError(f"generations of {self.root} vanish faster than they can be read")
        path = self._gen_dir(generation) / MANIFEST
        try:
            return Manifest.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"generation {generation} does not exist in {self.root}"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"{path} is not a valid manifest: {exc}") from None

    def latest_manifest(self, on_skip: OnSkip | None = None) -> Manifest:
        """The newest manifest that parses (a truncated newest one is skipped and reported)."""
        errors = []
        for generation in reversed(self.generations()):
            try:
                return self.read_manifest(generation)
            except _Vanished:
                continue
            except IndexNotFoundError:
                continue  # collected meanwhile; older ones follow
            except SnapshotError as exc:
                log.error("skipping generation %d of %s: %s", generation, self.root, exc)
                if on_skip is not None:
                    on_skip(generation, str(exc))
                errors.append(str(exc))
        if errors:
            raise SnapshotError(f"no readable manifest in {self.root}: " + "; ".join(errors))
        raise self._no_snapshot()

    # -- pins -----------------------------------------------------------------------------
    def pin(self, generation: int) -> Pin:
        """Keep `generation` from GC until the pin is released (use it as a context manager)."""
        pin = self.pins.pin(generation, (self._gen_dir(generation) / MANIFEST).is_file)
        if pin is None:
            raise _Vanished(f"generation {generation} does not exist in {self.root}")
        return pin

    def pin_latest(self, on_skip: OnSkip | None = None) -> tuple[Pin, Manifest]:
        """The newest readable manifest, its generation pinned: a slow caller (loading the model
        the manifest names) still finds that generation afterwards."""
        for _ in range(10):
            manifest = self.latest_manifest(on_skip)
            try:
                return self.pin(manifest.generation), manifest
            except _Vanished:
                continue
        raise SnapshotError(f"generations of {self.root} vanish faster than they can be pinned")

    # -- writing --------------------------------------------------------------------------
    def write(
        self,
        index: Index,
        offsets: Offsets | None = None,
        extra: dict[str, Any] | None = None,
        newest_event_ms: int | None = None,
    ) -> Manifest:
        """Persist the index as the next generation; returns its manifest.

        On any failure nothing is published and nothing is left behind (the temporary directory
        is removed); an OSError becomes a SnapshotWriteError saying what to do.
        """
        generation = 1
        tmp: Path | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.segments_dir.mkdir(exist_ok=True)
            generation = (self.latest_generation() or 0) + 1
            tmp = self.root / f".tmp-gen-{generation:06d}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            self._live_plan = None
            manifest = self._write_into(tmp, generation, index, offsets, extra, newest_event_ms)
            try:
                os.rename(tmp, self._gen_dir(generation))
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
                index.documents.committed(self.document_store(writer=True), generation)
                if self._live_plan is not None:
                    self._live_plan.commit()  # the next generation writes a delta from here
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, SnapshotError):
                raise self._write_error(exc, generation) from exc
            raise
        try:
            self.collect_garbage()
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
        files: dict[str, dict[str, Any]] = {}
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
                rel = f"segments/{segment.name}.faiss"
                self._write_once(self.root / rel, segment.save)
                record: dict[str, Any] = {"name": segment.name, "file": rel, "count": len(segment)}
                if isinstance(segment, PQSegment):
                    record["vectors"] = self._write_full_vectors(segment, full_vectors_file(rel))
                segments.append(record)
            np.save(tmp / "tombstones.npy", np.fromiter(sorted(vectors.tombstones), dtype=np.int64))
            documents = self._write_documents(index, generation)
            # The rows changed since the previous generation (or a fresh base when due).
            live, self._live_plan = live_store.persist(self.root, vectors.live)
            files.update(live_store.checksums(live))
            lexical_checkpoint = index.lexical.checkpoint()
            counts = index.count().__dict__
            next_chunk_id = index.next_chunk_id
        lexical = self._write_lexical(index, lexical_checkpoint)
        for name in ("tombstones.npy",):
            fsync_file(tmp / name)
            files[f"GEN/{name}"] = {
                "sha256": sha256_of(tmp / name),
                "bytes": (tmp / name).stat().st_size,
            }
        previous: dict[str, dict[str, Any]] | None = None
        shared = _segment_files(segments) + ([quantizer["file"]] if quantizer else [])
        for rel in shared + LexicalStore.files(lexical):
            entry = self._read_sidecar(rel)
            if entry is None:
                if previous is None:
                    previous = self._previous_checksums()
                entry = self._segment_checksum(rel, previous.get(rel))
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
        manifest_path.write_text(json.dumps(manifest.to_json(), indent=1))
        fsync_file(manifest_path)
        fsync_dir(tmp)
        return manifest

    def _write_documents(self, index: Index, generation: int) -> dict[str, Any]:
        """Commit the documents changed since the previous generation (one SQLite transaction,
        O(changes)); rows a crashed attempt left above the newest manifest are rolled back in the
        same transaction. Returns the manifest's `documents` entry."""
        previous = self.latest_generation() or 0
        store = self.document_store(writer=True)
        return index.documents.commit(store, generation, previous).to_json()

    def _write_lexical(self, index: Index, checkpoint: Checkpoint) -> dict[str, Any]:
        """The lexical leg's delta segment (and merges) since the previous generation, written
        outside the index lock (indexer/lexical_store.py); checksummed like sealed segments."""
        return LexicalStore(self.root).persist(index.lexical, checkpoint)

    def _read_sidecar(self, rel: str) -> dict[str, Any] | None:
        # Sealed files never change, so their checksum is computed once and kept beside them.
        sidecar = self.root / f"{rel}.sha256"
        try:
            entry = json.loads(sidecar.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s); recomputing it", sidecar, exc)
            return None
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
        ):
            return entry
        log.warning("%s is not a checksum record; recomputing it", sidecar)
        return None

    def _previous_checksums(self) -> dict[str, dict[str, Any]]:
        """Checksums the newest readable manifest recorded: a sidecar lost after its segment was
        corrupted must not bless the corruption by rehashing the damaged file."""
        try:
            return dict(self.latest_manifest().files)
        except (SnapshotError, IndexNotFoundError):
            return {}

    def _segment_checksum(self, rel: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checksum record of a sealed file, (re)written atomically as its sidecar."""
        path = self.root / rel
        entry = known if known is not None else {"sha256": sha256_of(path), "bytes": path.stat().st_size}
        write_atomically(
            path.with_name(path.name + ".sha256"), lambda tmp: tmp.write_text(json.dumps(entry))
        )
        return entry

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

    def collect_garbage(self) -> None:
        """Keep the newest `keep` generations, every pinned one, and the segments they reference."""
        now = time.time()
        with self.pins.collecting() as pinned:
            generations = self.generations()
            kept = set(generations[-self.keep :]) | (pinned & set(generations))
            for old in generations:
                if old not in kept:
                    # Renamed first: a reader never sees a half-deleted generation as one.
                    doomed = self.root / f".del-gen-{old:06d}-{uuid.uuid4().hex[:8]}"
                    try:
                        os.rename(self._gen_dir(old), doomed)
                    except OSError:
                        continue
                    shutil.rmtree(doomed, ignore_errors=True)
            referenced = set()
            for generation in sorted(kept):
                try:
                    manifest = self.read_manifest(generation)
                except (SnapshotError, IndexNotFoundError):
                    continue
                referenced.update(_segment_files(manifest.segments))
                if manifest.quantizer:
                    referenced.add(manifest.quantizer["file"])
                referenced.update(LexicalStore.files(manifest.lexical))
                referenced.update(live_store.files(manifest.live))
            LexicalStore(self.root).collect_garbage(referenced)
            live_store.collect_garbage(self.root, referenced)
            if kept and (self.root / "documents.sqlite").is_file():
                # Under the pins lock: no reader can pin a generation older than `kept` now.
                self.document_store(writer=True).collect(min(kept))
            if self.segments_dir.is_dir():
                for path in [*self.segments_dir.glob("*.faiss"), *self.segments_dir.glob("*.vectors")]:
                    rel = f"segments/{path.name}"
                    if rel not in referenced and _older_than(path, now - _STALE_TMP_S):
                        path.unlink(missing_ok=True)
                        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
                for stale in self.segments_dir.glob(".tmp-*"):
                    if _older_than(stale, now - _STALE_TMP_S):
                        stale.unlink(missing_ok=True)
        for pattern in (".tmp-gen-*", ".del-gen-*"):
            for stale in self.root.glob(pattern):
                if _older_than(stale, now - _STALE_TMP_S):
                    shutil.rmtree(stale, ignore_errors=True)

    # -- reading --------------------------------------------------------------------------
    def _corrupt_files(self, manifest: Manifest, skip: set[str] | None = None) -> list[tuple[str, str]]:
        """(file, problem) for every file of the manifest that is missing or fails its checksum."""
        gen_dir = self._gen_dir(manifest.generation)
        bad = []
        for rel, expected in manifest.files.items():
            if skip and rel in skip:
                continue
            path = gen_dir / rel[4:] if rel.startswith("GEN/") else self.root / rel
            if not path.is_file():
                bad.append((rel, f"generation {manifest.generation} of {self.root} is missing {rel}"))
            elif sha256_of(path) != expected["sha256"]:
                bad.append(
                    (
                        rel,
                        f"{path} fails its checksum (generation {manifest.generation}); the file "
                        "is corrupt - load an older generation or rebuild the index",
                    )
                )
        return bad

    def verify(self, manifest: Manifest, skip: set[str] | None = None) -> None:
        bad = self._corrupt_files(manifest, skip)
        if bad:
            raise SnapshotError(bad[0][1])

    def load(
        self,
        model: EmbeddingModel,
        settings: IndexSettings,
        cache: EmbeddingCache | None = None,
        generation: int | None = None,
        *,
        fallback: bool = False,
        repair: bool = False,
        on_skip: OnSkip | None = None,
    ) -> tuple[Index, Manifest]:
        """Load and verify a generation (the latest by default), refusing a different model.

        `fallback`: serve the newest generation that loads, reporting each skipped one through
        the log and `on_skip`. `repair` (writers only: it publishes a generation, so the caller
        must hold the WriterLock): rebuild sealed segments that fail their checksum from the
        document table and the embedding cache instead of skipping the generation.
        """
        if generation is not None:
            return self._load(model, settings, cache, generation, repair)
        tried: set[int] = set()
        errors: list[str] = []
        while True:
            # Relisted each time: GC may have replaced the candidates meanwhile.
            candidates = [g for g in reversed(self.generations()) if g not in tried]
            if not candidates:
                break
            candidate = candidates[0]
            tried.add(candidate)
            try:
                return self._load(model, settings, cache, candidate, repair)
            except _Vanished:
                continue
            except SnapshotError as exc:
                if not fallback:
                    raise
                log.error("skipping generation %s of %s: %s", candidate, self.root, exc)
                if on_skip is not None:
                    on_skip(candidate, str(exc))
                errors.append(str(exc))
        if not errors:
            raise self._no_snapshot()
        hint = ""
        corrupt_shared = ("segments/seg-", f"{live_store.DIRECTORY}/live-")
        if any(any(c in e for c in corrupt_shared) and "checksum" in e for e in errors) and not repair:
            hint = (
                " - a sealed segment or live-segment file is corrupt; start the indexer of this index (`semsearch "
                "index`), which rebuilds it from the document table and the embedding cache"
            )
        raise SnapshotError(f"no loadable generation in {self.root}{hint}: " + "; ".join(errors))

    def _load(
        self,
        model: EmbeddingModel,
        settings: IndexSettings,
        cache: EmbeddingCache | None,
        generation: int,
        repair: bool = False,
    ) -> tuple[Index, Manifest]:
        with self.pin(generation):
            manifest = self.read_manifest(generation)
            canaries = CanaryProbe.from_json(manifest.canaries)
            ensure_compatible(model, manifest.model, canaries, manifest.index_id)
            bad = self._corrupt_files(manifest)
            sealed_files = set(_segment_files(manifest.segments))
            lexical_files = set(LexicalStore.files(manifest.lexical))
            # Shared by the generations of one chain, so rebuilt like a sealed segment.
            sealed_files |= set(live_store.files(manifest.live))
            corrupt = {rel for rel, _ in bad}
            # The writer rebuilds shared files: vectors from the cache, BM25 from the documents.
            if bad and not (repair and corrupt <= sealed_files | lexical_files):
                raise SnapshotError(bad[0][1])
            stored = manifest.settings
            config = IndexConfig.of(settings).with_chunking(stored["chunk_tokens"], stored["chunk_overlap"])
            if repair:
                self._open_writer_store()
            index = Index(model, config, cache, canaries=canaries)
            index.index_id = manifest.index_id
            self._install(index, manifest, sealed={}, skip=corrupt, writer=repair)
        if manifest.documents is None:
            manifest = self._migrate(index, manifest)
        if corrupt & sealed_files:
            manifest = self._repair(index, manifest, sorted(corrupt & sealed_files))
        elif corrupt:
            log.error(
                "generation %d of %s: lexical segment(s) %s fail their checksum; BM25 was rebuilt "
                "from the document store, publishing it",
                manifest.generation,
                self.root,
                ", ".join(sorted(corrupt)),
            )
            manifest = self.write(index, manifest.offsets, manifest.extra, manifest.newest_event_ms)
        return index, manifest

    def _open_writer_store(self) -> None:
        """What the writer does once when it opens: undo rows a crash left above the newest
        manifest, and let SQLite check its pages (O(file), so not on every reader load)."""
        if self._writer_error is not None:
            raise self._writer_error
        if self._writer_checked:
            return
        store = self.document_store(writer=True)
        try:
            store.quick_check()
            store.rollback_after(self.latest_generation() or 0)
        except SnapshotError as exc:
            self._writer_error = exc
            raise
        self._writer_checked = True

    def _migrate(self, index: Index, manifest: Manifest) -> Manifest:
        """Format 1 -> 2: the documents.jsonl just loaded becomes the store's first generation,
        published as a new generation with the same offsets (the old ones stay until GC)."""
        log.warning(
            "generation %d of %s is format 1 (documents.jsonl); migrating its %d documents to "
            "documents.sqlite",
            manifest.generation,
            self.root,
            len(index.documents),
        )
        published = self.write(index, manifest.offsets, manifest.extra, manifest.newest_event_ms)
        self.migrated_from = manifest.generation
        return published

    def _format1_refused(self, manifest: Manifest) -> SnapshotError:
        return SnapshotError(
            f"generation {manifest.generation} of {self.root} was written in format 1 (documents "
            "in gen-*/documents.jsonl), which readers no longer load; start the indexer of this "
            "index (`semsearch index`), which migrates it when it opens, or rebuild it "
            "(`semsearch build`)"
        )

    def _repair(self, index: Index, manifest: Manifest, corrupt: list[str]) -> Manifest:
        """Rebuild the vectors of corrupt sealed segments and publish them as a new generation.

        Which chunks they held needs no reading of the damaged files: every live chunk of the
        document table that is in neither the live segment nor a healthy sealed segment. Their
        vectors come from the embedding cache (keyed by fingerprint + content hash); only what
        the cache lacks is embedded again. Chunks of deleted documents are simply not rebuilt.
        """
        report = RepairReport(manifest.generation, corrupt)
        log.error(
            "generation %d of %s: sealed segment(s) %s fail their checksum; rebuilding their "
            "vectors from the document table and the embedding cache",
            manifest.generation,
            self.root,
            ", ".join(corrupt),
        )
        vectors = index.vectors
        present = set(vectors.live.ids.tolist())
        for segment in vectors.sealed:
            present.update(segment.ids.tolist())
        lost = [
            (record, chunk)
            for record in index.documents
            for chunk in record.chunks
            if chunk.chunk_id not in present
        ]
        report.chunks = len(lost)
        if lost:
            fingerprint = index.model.info.fingerprint
            hashes = [chunk.content_hash for _, chunk in lost]
            found = (
                index.cache.get_many(fingerprint, hashes, index.model.dimension)
                if index.cache is not None
                else {}
            )
            texts = {c.content_hash: r.chunk_text(c) for r, c in lost if c.content_hash not in found}
            report.chunks_cached = sum(1 for h in hashes if h in found)
            report.chunks_embedded = len(texts)
            if texts:
                log.warning(
                    "repair of %s: re-embedding %d chunks the embedding cache does not hold",
                    self.root,
                    len(texts),
                )
                embedded = index.model.encode_documents(list(texts.values()))
                if not np.isfinite(embedded).all():
                    raise SnapshotError(
                        f"repairing {self.root}: the model produced NaN/inf embeddings; rebuild "
                        "the index with a working model"
                    )
                fresh = dict(zip(texts, embedded, strict=True))
                if index.cache is not None:
                    index.cache.put_many(fingerprint, fresh.items())
                found.update(fresh)
            ids = np.fromiter((c.chunk_id for _, c in lost), dtype=np.int64, count=len(lost))
            rows = np.vstack([found[c.content_hash] for _, c in lost])
            if any(rel.startswith(f"{live_store.DIRECTORY}/") for rel in corrupt):
                # The live rows are among the lost: they go back where they were (sealed in
                # turn if that fills it); the next generation writes the live segment as a base.
                with index.lock.writing():
                    vectors.add(ids, rows)
                vectors.maintain(index.lock.writing)
            else:
                if vectors.quantizer is None:
                    raise SnapshotError(
                        f"{self.root} has sealed segments but no quantizer; rebuild the index"
                    )
                segment = vectors.codec.build(
                    f"seg-{uuid.uuid4().hex[:12]}", vectors.quantizer, vectors.nlist, ids, rows
                )
                with index.lock.writing():
                    vectors.attach(segment)
        with index.lock.writing():
            sealed_ids: set[int] = set()
            for segment in vectors.sealed:
                sealed_ids.update(segment.ids.tolist())
            vectors.tombstones &= sealed_ids  # tombstones of vectors that are gone with the file
            vectors._selector = None
        published = self.write(index, manifest.offsets, manifest.extra, manifest.newest_event_ms)
        report.published = published.generation
        self.last_repair = report
        log.warning(
            "repaired %s: %d chunks rebuilt (%d from the embedding cache, %d embedded); published "
            "generation %d",
            self.root,
            report.chunks,
            report.chunks_cached,
            report.chunks_embedded,
            published.generation,
        )
        return published

    def refresh(self, index: Index, generation: int | None = None) -> Manifest:
        """Move an open index forward to a newer generation in place (near-real-time reopen)."""
        if generation is None:
            generation = self.latest_generation()
            if generation is None:
                raise self._no_snapshot()
        with self.pin(generation):
            manifest = self.read_manifest(generation)
            if manifest.index_id != index.index_id:
                raise SnapshotError(f"{self.root} holds {manifest.index_id}, not {index.index_id}")
            loaded = {s.name: s for s in index.vectors.sealed}
            known = set(_segment_files([s for s in manifest.segments if s["name"] in loaded]))
            if manifest.quantizer and manifest.quantizer["file"] == index.vectors.quantizer_file:
                known.add(manifest.quantizer["file"])
            # Lexical segments the index already holds are not read (nor hashed) again.
            held = {s.file for s in index.lexical.segments if s.file}
            known.update(rel for rel in LexicalStore.files(manifest.lexical) if rel in held)
            if self._same_quantizer(index, manifest):
                # Live rows it holds are not read again either: only the deltas it lacks.
                known.update(live_store.held_files(index.vectors.live, manifest.live) or ())
            self.verify(manifest, skip=known)
            self._install(index, manifest, sealed=loaded, refresh=True)
        return manifest

    def _install(
        self,
        index: Index,
        manifest: Manifest,
        sealed: dict[str, SealedSegment],
        skip: set[str] | None = None,
        *,
        writer: bool = False,
        refresh: bool = False,
    ) -> None:
        gen_dir = self._gen_dir(manifest.generation)
        changes: StoreChanges | None = None
        if refresh and manifest.documents is not None:
            changes = index.documents.delta(
                self.document_store(), int(manifest.documents["generation"])
            )
        documents = lexical = None
        if changes is None:
            documents = self._open_documents(manifest, writer=writer)
        if changes is None or manifest.lexical is not None:
            lexical = self._load_lexical(index, manifest, documents, skip, reuse=refresh)
        update = None
        if refresh and manifest.live is not None and self._same_quantizer(index, manifest):
            update = live_store.prepare_update(self.root, index.vectors.live, manifest.live)
        live: LiveSegment | None = None
        if update is None:
            if skip and skip & set(live_store.files(manifest.live)):
                live = LiveSegment(index.model.dimension)  # the writer's repair re-adds its rows
            else:
                live = self._load_live(manifest, index.model.dimension)
        tombstones = {int(i) for i in np.load(gen_dir / "tombstones.npy")}
        segments = [
            sealed.get(s["name"]) or load_segment(s, self.root)
            for s in manifest.segments
            if not (skip and skip & set(_segment_files([s])))
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

    @staticmethod
    def _same_quantizer(index: Index, manifest: Manifest) -> bool:
        """The index already holds the manifest's quantizer (so held live rows stay assigned)."""
        held = index.vectors.quantizer_file
        if manifest.quantizer is None:
            return held is None
        return manifest.quantizer["file"] == held and int(manifest.quantizer["nlist"]) == index.vectors.nlist

    def _load_live(self, manifest: Manifest, dimension: int) -> LiveSegment:
        """The generation's live segment: its base + deltas, or the whole-segment file of a
        generation written before deltas (the next generation then writes a base)."""
        if manifest.live is None:
            return LiveSegment.load(self._gen_dir(manifest.generation) / "live.npz", dimension)
        return live_store.load(self.root, manifest.live, dimension)

    def _open_documents(self, manifest: Manifest, *, writer: bool) -> DocumentTable:
        if manifest.documents is None:
            if not writer:
                raise self._format1_refused(manifest)
            return DocumentTable.load(self._gen_dir(manifest.generation) / "documents.jsonl")
        store = self.document_store(writer=writer)
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
