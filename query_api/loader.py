"""IndexLoader: from an index id to a complete, verified `Serving` - or a refusal saying why.

Loading is all-or-nothing and swaps nothing: checksums, the model's fingerprint and canaries
(SnapshotStore.load → indexer.compatibility) are verified before the caller ever sees the
result, so a flip can keep serving the old index until the new one is whole. Models are cached
per process by fingerprint: a flip between indexes of the same model reuses its weights.
"""

from __future__ import annotations

import time

from contracts.errors import (
    IndexNotFoundError,
    InvalidIndexIdError,
    ModelMismatchError,
    SemsearchError,
    SnapshotError,
)
from contracts.ids import validate_index_id
from contracts.settings import Settings
from indexer.compatibility import model_for_manifest
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import Manifest, SnapshotStore, index_dir
from query_api.metrics import ApiMetrics
from query_api.serving import Serving

# What a load can fail with, short of a bug: the caller refuses the index and keeps serving.
LOAD_ERRORS: tuple[type[Exception], ...] = (SemsearchError, OSError, ValueError, KeyError)


def refusal(exc: Exception) -> tuple[str, str]:
    """(reason, message) for a failed load: the reason labels semsearch_pointer_invalid."""
    if isinstance(exc, InvalidIndexIdError):
        return "invalid_id", str(exc)
    if isinstance(exc, IndexNotFoundError):
        return "unknown_index", str(exc)
    if isinstance(exc, ModelMismatchError):
        return "model_mismatch", str(exc)
    if isinstance(exc, (SnapshotError, OSError, ValueError, KeyError)):
        return "snapshot_error", f"{type(exc).__name__}: {exc}"
    return "load_error", str(exc)


class IndexLoader:
    """Loads generations of indexes under `settings.indexes_dir` with the model each was built with."""

    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    def default_index_id(self) -> str | None:
        """The configured model's index, if it has a generation (served while the pointer is
        unset, e.g. after `semsearch build`). Raises SemsearchError if that model cannot load."""
        model = load_model(self.settings.model, memory_mb=self.settings.embed_memory_mb)
        root = self.settings.indexes_dir / model.index_id
        return model.index_id if SnapshotStore(root).latest_generation() is not None else None

    def latest_generation_of(self, index_id: str) -> int | None:
        try:
            return SnapshotStore(index_dir(self.settings, index_id)).latest_generation()
        except (SemsearchError, OSError):
            return None

    def load(self, index_id: str, origin: str = "pointer") -> Serving:
        """Load and verify an index completely; nothing is swapped (the caller does that).

        Serves the newest generation that LOADS: a truncated manifest or a corrupt file makes it
        fall back to an older generation, logged and counted (semsearch_generations_skipped).
        The generation whose manifest picks the model is pinned meanwhile, so the writer's GC
        cannot remove it while the model loads; the returned Serving keeps a pin on the generation
        it serves (`Serving.hold`) until it is refreshed past it, flipped away from or stopped.
        A reader never repairs anything.
        """
        validate_index_id(index_id)
        store = SnapshotStore(index_dir(self.settings, index_id), keep=self.settings.keep_generations)
        skipped: dict[int, str] = {}
        try:
            index, manifest, hold = store.load_held(
                self._model_for, self.settings, on_skip=skipped.setdefault
            )
        finally:
            self.metrics.count_skipped(index_id, skipped)
        if index.index_id != index_id:
            hold.release()
            raise SnapshotError(
                f"{store.root} holds index {index.index_id!r}, not {index_id!r}; the directory was "
                "renamed or copied - rebuild it or point at its real id"
            )
        return Serving(index, manifest, store, time.time(), origin, hold)

    def _model_for(self, manifest: Manifest) -> EmbeddingModel:
        """The model an index was built with (load_model keeps one instance per process, so a
        flip between indexes of the same model reuses its weights); SnapshotStore.load still
        verifies whichever is picked."""
        return model_for_manifest(
            manifest.model, self.settings.model, memory_mb=self.settings.embed_memory_mb
        )
