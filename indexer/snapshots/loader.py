"""Loading an Index from a generation: pinned, verified, refused for a different model.

A reader serves exactly what a manifest describes or nothing: every file's checksum, the
model's fingerprint and canary vectors, and the document store's row counts are checked before
the index is handed out. The writer (`repair=True`, under the WriterLock) may go further,
because it can publish: it migrates a format-1 generation, rebuilds corrupt shared vector files
(indexer/snapshots/repair.py) and republishes BM25 rebuilt from the documents when a lexical
segment is corrupt.
"""

from __future__ import annotations

import logging

from contracts.errors import SnapshotError
from indexer import live_store
from indexer.canaries import CanaryProbe
from indexer.compatibility import ensure_compatible
from indexer.config import IndexConfig, IndexSettings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.lexical_store import LexicalStore
from indexer.model import EmbeddingModel
from indexer.snapshots import checksums
from indexer.snapshots.document_connection import DocumentConnection
from indexer.snapshots.generations import Generations, NoneLoadable, OnSkip
from indexer.snapshots.install import Installer
from indexer.snapshots.manifest import Manifest, segment_files
from indexer.snapshots.repair import RepairReport, repair_vectors
from indexer.snapshots.writer import GenerationWriter

log = logging.getLogger(__name__)

# In an error, the files whose corruption the writer repairs rather than skips past.
_SHARED = ("segments/seg-", f"{live_store.DIRECTORY}/live-")


class Loader:
    def __init__(
        self,
        generations: Generations,
        documents: DocumentConnection,
        installer: Installer,
        writer: GenerationWriter,
    ) -> None:
        self.root = generations.root
        self.generations = generations
        self.documents = documents
        self.installer = installer
        self.writer = writer
        self.last_repair: RepairReport | None = None
        self.migrated_from: int | None = None  # the format-1 generation the writer migrated

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
        """`SnapshotStore.load`, which documents the flags (the facade forwards them here)."""
        if generation is not None:
            return self._load(model, settings, cache, generation, repair)
        try:
            return self.generations.newest_loadable(
                lambda candidate: self._load(model, settings, cache, candidate, repair),
                fallback=fallback,
                on_skip=on_skip,
            )
        except NoneLoadable as exc:
            errors = exc.errors
            hint = ""
            if any(any(c in e for c in _SHARED) and "checksum" in e for e in errors) and not repair:
                hint = (
                    " - a sealed segment or live-segment file is corrupt; start the indexer of "
                    "this index (`semsearch index`), which rebuilds it from the document table "
                    "and the embedding cache"
                )
            raise SnapshotError(
                f"no loadable generation in {self.root}{hint}: " + "; ".join(errors)
            ) from None

    def _load(
        self,
        model: EmbeddingModel,
        settings: IndexSettings,
        cache: EmbeddingCache | None,
        generation: int,
        repair: bool = False,
    ) -> tuple[Index, Manifest]:
        with self.generations.pin(generation):
            manifest = self.generations.read_manifest(generation)
            canaries = CanaryProbe.from_json(manifest.canaries)
            ensure_compatible(model, manifest.model, canaries, manifest.index_id)
            bad = checksums.corrupt_files(self.root, manifest.generation, manifest.files)
            sealed_files = set(segment_files(manifest.segments))
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
                self.documents.open_for_writer(self.generations.latest_generation)
            index = Index(model, config, cache, canaries=canaries)
            index.index_id = manifest.index_id
            self.installer.install(index, manifest, sealed={}, skip=corrupt, writer=repair)
        if manifest.documents is None:
            manifest = self._migrate(index, manifest)
        if corrupt & sealed_files:
            manifest, self.last_repair = repair_vectors(
                self.writer, index, manifest, sorted(corrupt & sealed_files)
            )
        elif corrupt:
            log.error(
                "generation %d of %s: lexical segment(s) %s fail their checksum; BM25 was rebuilt "
                "from the document store, publishing it",
                manifest.generation,
                self.root,
                ", ".join(sorted(corrupt)),
            )
            manifest = self.writer.write(index, manifest.offsets, manifest.extra, manifest.newest_event_ms)
        return index, manifest

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
        published = self.writer.write(index, manifest.offsets, manifest.extra, manifest.newest_event_ms)
        self.migrated_from = manifest.generation
        return published

