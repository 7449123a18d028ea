"""Private, pinned copies of an index's newest snapshot: what a migration reads and replays.

The serving index belongs to another worker and never stops moving, so a migration bootstraps
from, and gates against, a copy of its newest generation that nobody else writes to. The copy
reads its documents from documents.sqlite at that generation for the whole migration (hours at
1M chunks) while the index's own worker keeps snapshotting and collecting old generations, so
every copy holds a pin on its generation until the migration ends (`release`).
"""

from __future__ import annotations

import logging

from consumers.migration.errors import MigrationError
from contracts.errors import GenerationCollectedError
from contracts.settings import Settings
from indexer.compatibility import model_for_manifest
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.pins import StandingPin
from indexer.snapshots import Manifest, SnapshotStore, index_dir

log = logging.getLogger(__name__)


class PrivateCopies:
    """Loads pinned copies for one migration and releases every pin at its end."""

    def __init__(self, settings: Settings, cache: EmbeddingCache | None) -> None:
        self.settings = settings
        self.cache = cache
        self._holds: list[StandingPin] = []

    def store_of(self, index_id: str) -> SnapshotStore:
        return SnapshotStore(index_dir(self.settings, index_id), keep=self.settings.keep_generations)

    def of_serving(self, live_id: str) -> tuple[Index, Manifest]:
        """A copy of the serving index, with the model its manifest names."""
        live, manifest = self.load(self.store_of(live_id), None)
        log.info(
            "migration: private copy of the serving index %s, generation %d (%d documents, offsets %s)",
            live_id,
            manifest.generation,
            manifest.counts.get("documents", 0),
            manifest.offsets,
        )
        return live, manifest

    def load(self, store: SnapshotStore, model: EmbeddingModel | None) -> tuple[Index, Manifest]:
        """A copy of `store`'s newest loadable generation, pinned until `release`. The pin is
        taken before the model loads (`model` None: the one the manifest names)."""
        def model_for(newest: Manifest) -> EmbeddingModel:
            if model is not None:
                return model
            return model_for_manifest(
                newest.model, self.settings.model, memory_mb=self.settings.embed_memory_mb
            )

        try:
            index, manifest, hold = store.load_held(model_for, self.settings, self.cache)
        except GenerationCollectedError as exc:
            raise MigrationError(f"{exc}; publish the upgrade again") from None
        self._holds.append(hold)
        return index, manifest

    def release(self) -> None:
        for hold in self._holds:
            hold.release()
        self._holds.clear()
