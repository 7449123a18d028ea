"""SnapshotStore: the one object callers use for an index directory's generations.

A generation is written into a temporary directory, fsynced, and renamed; the manifest (written
last) lists a checksum for every file it needs (writer.py). Sealed segments live in `segments/`,
are written once and referenced by later generations; the live segment is a base plus one delta
per generation in `live/` (indexer/live_store.py), so a generation writes the rows it changed,
not the whole live segment. Documents live in `documents.sqlite` (indexer/document_store.py: why
SQLite, MVCC by generation): a generation commits only the documents changed since the previous
one, in one SQLite transaction, before its manifest; the manifest names the store generation and
its row counts, which loading verifies (SQLite's own page checks catch the rest; the writer runs
`PRAGMA quick_check` when it opens). A refresh reads only the rows changed between its
generation and the new one (refresh.py). Format 1 (gen-*/documents.jsonl rewritten every
generation) is migrated by the writer when it opens (`semsearch index`), refused by readers with
a message that says so (loader.py).

What can go wrong on disk, and what happens then:
- a write fails (disk full, I/O error): the temporary directory is removed and a SnapshotWriteError
  says what to do; readers keep the previous generation, the writer keeps its state and retries.
- a manifest or generation file is corrupt: loading with `fallback` serves the newest generation
  that verifies, logging (and reporting through `on_skip`) each one skipped (generations.py).
- a crash between the SQLite commit and the manifest rename: readers read at their manifest's
  generation and never see the extra rows; the writer rolls them back before committing again.
- documents.sqlite is corrupt or truncated (every generation shares it): SnapshotError naming the
  file and how to rebuild; nothing is served from it.
- a sealed segment (shared by many generations, so falling back does not help) fails its checksum:
  the writer (`load(repair=True)`, only under the index's WriterLock) rebuilds its vectors from the
  document table and the embedding cache and publishes a new generation (repair.py); readers
  never write.
- GC runs while a reader loads: readers pin the generation (indexer/pins.py), GC skips it
  (garbage.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.errors import GenerationCollectedError, IndexNotFoundError
from contracts.offsets import Offsets
from indexer.config import IndexSettings
from indexer.document_store import DocumentStore
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.pins import Pin, StandingPin
from indexer.snapshots import checksums
from indexer.snapshots.document_connection import DocumentConnection
from indexer.snapshots.garbage import GarbageCollector
from indexer.snapshots.generations import Generations, OnSkip
from indexer.snapshots.install import Installer
from indexer.snapshots.layout import segments_dir
from indexer.snapshots.loader import Loader
from indexer.snapshots.manifest import Manifest
from indexer.snapshots.refresh import refresh_index
from indexer.snapshots.repair import RepairReport
from indexer.snapshots.writer import GenerationWriter


class SnapshotStore:
    """Writes, verifies, loads and garbage-collects the generations of one index directory.

    Writing assumes the caller holds the directory's WriterLock (indexer/writer_lock.py); reading
    never needs it.
    """

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.segments_dir = segments_dir(self.root)
        self._generations = Generations(self.root)
        self.pins = self._generations.pins
        self._documents = DocumentConnection(self.root)
        self._garbage = GarbageCollector(self._generations, self._documents, max(2, keep))
        self._writer = GenerationWriter(self._generations, self._documents, self._garbage)
        self._installer = Installer(self.root, self._documents)
        self._loader = Loader(self._generations, self._documents, self._installer, self._writer)

    @property
    def keep(self) -> int:
        """How many of the newest generations GC keeps (at least 2), besides pinned ones."""
        return self._garbage.keep

    @keep.setter
    def keep(self, keep: int) -> None:
        self._garbage.keep = keep

    @property
    def last_repair(self) -> RepairReport | None:
        return self._loader.last_repair

    @property
    def migrated_from(self) -> int | None:
        """The format-1 generation the writer migrated, if it did."""
        return self._loader.migrated_from

    def document_store(self, *, writer: bool = False) -> DocumentStore:
        """The documents.sqlite of this directory (one connection per SnapshotStore); only the
        writer (under the WriterLock) may create it or write to it."""
        return self._documents.store(writer=writer)

    # -- listing (generations.py) ---------------------------------------------------------
    def generations(self) -> list[int]:
        return self._generations.generations()

    def latest_generation(self) -> int | None:
        return self._generations.latest_generation()

    def read_manifest(self, generation: int | None = None) -> Manifest:
        return self._generations.read_manifest(generation)

    def latest_manifest(self, on_skip: OnSkip | None = None) -> Manifest:
        """The newest manifest that parses (a truncated newest one is skipped and reported)."""
        return self._generations.latest_manifest(on_skip)

    def pin(self, generation: int) -> Pin:
        """Keep `generation` from GC until the pin is released (use it as a context manager)."""
        return self._generations.pin(generation)

    def pin_latest(self, on_skip: OnSkip | None = None) -> tuple[Pin, Manifest]:
        """The newest readable manifest, its generation pinned: a slow caller (loading the model
        the manifest names) still finds that generation afterwards."""
        return self._generations.pin_latest(on_skip)

    # -- writing (writer.py, garbage.py) --------------------------------------------------
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
        return self._writer.write(index, offsets, extra, newest_event_ms)

    def settle(self) -> bool:
        """Wait for the lexical merges the last generation started in the background (a
        build's end, benches, tests); True when they changed the index (the next generation
        lists the merged segments)."""
        return self._writer.lexical_merger.settle()

    @property
    def background_cpu_s(self) -> float:
        """CPU seconds the background lexical merges took so far (benches)."""
        return self._writer.lexical_merger.cpu_s

    def stop_background(self) -> None:
        """Let a running lexical merge finish and stop its worker (a writer closing)."""
        self._writer.lexical_merger.close()

    def collect_garbage(self) -> None:
        """Keep the newest `keep` generations, every pinned one, and the segments they reference."""
        self._garbage.collect()

    # -- reading (checksums.py, loader.py, refresh.py) ------------------------------------
    def verify(self, manifest: Manifest, skip: set[str] | None = None) -> None:
        """Raise SnapshotError naming the first file of `manifest` missing or corrupt."""
        checksums.verify(self.root, manifest.generation, manifest.files, skip)

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
        return self._loader.load(
            model, settings, cache, generation, fallback=fallback, repair=repair, on_skip=on_skip
        )

    def load_held(
        self,
        model_for: Callable[[Manifest], EmbeddingModel],
        settings: IndexSettings,
        cache: EmbeddingCache | None = None,
        *,
        on_skip: OnSkip | None = None,
    ) -> tuple[Index, Manifest, StandingPin]:
        """The newest generation that loads, for a long-lived reader (the API, a migration's
        private copy), with a StandingPin on it that the caller releases.

        The newest manifest is pinned before `model_for(manifest)` loads its model (seconds), so
        GC cannot remove it meanwhile; the pin then moves to the generation that loaded (newer:
        written meanwhile; older: the newest failed to load). GenerationCollectedError when that
        generation was collected in between (loading again finds a newer one); the pin is
        released on any failure."""
        hold = StandingPin()
        try:
            pin, newest = self.pin_latest(on_skip)
            hold = StandingPin(pin)
            index, manifest = self.load(
                model_for(newest), settings, cache, fallback=True, on_skip=on_skip
            )
            try:
                hold.move_to(manifest.generation, self.pin)
            except IndexNotFoundError:
                raise GenerationCollectedError(
                    f"generation {manifest.generation} of {self.root} was collected right after "
                    "it loaded (the writer moved on)"
                ) from None
        except BaseException:
            hold.release()
            raise
        return index, manifest, hold

    def refresh(self, index: Index, generation: int | None = None) -> Manifest:
        """Move an open index forward to a newer generation in place (near-real-time reopen)."""
        return refresh_index(self._generations, self._installer, index, generation)
