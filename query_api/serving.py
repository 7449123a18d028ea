"""Serving: the one value a request reads - a loaded, verified index at one generation.

A request takes `holder.current` once and uses only that object, so a flip or a refresh must
never change a Serving a request may hold: they build a new one and swap the holder's single
reference (one assignment, atomic for the readers). Hence frozen and slotted: no field can be
reassigned, and none added.

What is shared, on purpose, between the Servings of one load: the open `Index` (a refresh
applies new generations to it in place, under its writer lock - searches see the old or the new
generation, never a mix) and the `StandingPin` (it follows the generation served; see
indexer.pins).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from indexer.index import Index
from indexer.pins import StandingPin
from indexer.snapshots import Manifest, SnapshotStore


@dataclass(frozen=True, slots=True)
class Serving:
    """One loaded, verified index and the manifest of the generation it holds."""

    index: Index
    manifest: Manifest
    store: SnapshotStore
    loaded_at: float
    origin: str  # "pointer", or "default" when the pointer was unset/unreadable at start
    # The pin on the served generation (shared by the copies of one load): queries read
    # documents.sqlite at that generation, so the writer's GC must keep its rows.
    hold: StandingPin = field(default_factory=StandingPin, compare=False)

    @property
    def index_id(self) -> str:
        return self.index.index_id

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def model_fingerprint(self) -> str:
        return str(self.index.model.info.fingerprint)

    def snapshot_age_s(self) -> float:
        return time.time() - float(self.manifest.created_at)

    def with_origin(self, origin: str) -> Serving:
        """The same load, now reached another way (the default index the pointer came to name)."""
        return replace(self, origin=origin)

    def at(self, manifest: Manifest) -> Serving:
        """The same load after its index was refreshed to `manifest`'s generation."""
        return replace(self, manifest=manifest)
