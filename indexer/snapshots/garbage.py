"""Garbage collection: old generations, the shared files no kept generation references, and
what interrupted writes left behind.

Kept: the newest `keep` generations and every pinned one (a reader loading or serving it). A
shared file is removed only when no kept manifest references it and it is older than a grace
period: a writer may have just written it for a generation it has not published yet.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from contracts.errors import IndexNotFoundError, SnapshotError
from indexer import live_store
from indexer.lexical_store import LexicalStore
from indexer.snapshots.document_connection import DocumentConnection
from indexer.snapshots.generations import Generations
from indexer.snapshots.layout import (
    DOOMED_GENERATIONS,
    TMP_GENERATIONS,
    doomed_gen_dir,
    gen_dir,
    segments_dir,
)
from indexer.snapshots.manifest import segment_files

_STALE_TMP_S = 60


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except OSError:
        return False


class GarbageCollector:
    def __init__(self, generations: Generations, documents: DocumentConnection, keep: int) -> None:
        self.root = generations.root
        self.generations = generations
        self.documents = documents
        self.keep = keep

    def collect(self) -> None:
        """Keep the newest `keep` generations, every pinned one, and the segments they reference."""
        now = time.time()
        segments = segments_dir(self.root)
        with self.generations.pins.collecting() as pinned:
            generations = self.generations.generations()
            kept = set(generations[-self.keep :]) | (pinned & set(generations))
            for old in generations:
                if old not in kept:
                    # Renamed first: a reader never sees a half-deleted generation as one.
                    doomed = doomed_gen_dir(self.root, old)
                    try:
                        os.rename(gen_dir(self.root, old), doomed)
                    except OSError:
                        continue
                    shutil.rmtree(doomed, ignore_errors=True)
            referenced = self._referenced(kept)
            LexicalStore(self.root).collect_garbage(referenced)
            live_store.collect_garbage(self.root, referenced)
            if kept and self.documents.path.is_file():
                # Under the pins lock: no reader can pin a generation older than `kept` now.
                self.documents.store(writer=True).collect(min(kept))
            if segments.is_dir():
                for path in [*segments.glob("*.faiss"), *segments.glob("*.vectors")]:
                    rel = f"{segments.name}/{path.name}"
                    if rel not in referenced and _older_than(path, now - _STALE_TMP_S):
                        path.unlink(missing_ok=True)
                        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
                for stale in segments.glob(".tmp-*"):
                    if _older_than(stale, now - _STALE_TMP_S):
                        stale.unlink(missing_ok=True)
        for pattern in (TMP_GENERATIONS, DOOMED_GENERATIONS):
            for stale in self.root.glob(pattern):
                if _older_than(stale, now - _STALE_TMP_S):
                    shutil.rmtree(stale, ignore_errors=True)

    def _referenced(self, kept: set[int]) -> set[str]:
        """Every shared file a kept generation's manifest names (an unreadable one names none)."""
        referenced: set[str] = set()
        for generation in sorted(kept):
            try:
                manifest = self.generations.read_manifest(generation)
            except (SnapshotError, IndexNotFoundError):
                continue
            referenced.update(segment_files(manifest.segments))
            if manifest.quantizer:
                referenced.add(manifest.quantizer["file"])
            referenced.update(LexicalStore.files(manifest.lexical))
            referenced.update(live_store.files(manifest.live))
        return referenced
