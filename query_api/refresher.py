"""Refresher: keeps one load of an index at its newest generation, near real time.

New generations are files the writer seals, not Redis events, so they are found by polling the
store. `SnapshotStore.refresh` applies one in place - it reads only the new sealed segments and
swaps the rest under the index's writer lock - and the refresher returns a new `Serving` at that
generation for the holder to swap in. A generation that fails to apply is skipped (counted,
logged) and not retried; the served one stays as it is until a newer one applies. One Refresher
follows one load: a flip starts a new one.
"""

from __future__ import annotations

import logging

from contracts.errors import IndexNotFoundError, SemsearchError
from query_api.metrics import ApiMetrics
from query_api.serving import Serving

log = logging.getLogger(__name__)


class Refresher:
    """Follows the generations of the load it is given; remembers those that failed to apply."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics
        self._bad_generations: set[int] = set()

    def refresh(self, serving: Serving) -> Serving | None:
        """`serving` at the newest newer generation that applies; None when there is none.

        The refreshed generation is pinned before the old pin goes (if it was collected in the
        meantime, the old pin stays: it protects the newer generation's rows as well).
        """
        newer = [
            g
            for g in serving.store.generations()
            if g > serving.generation and g not in self._bad_generations
        ]
        for generation in reversed(newer):
            try:
                manifest = serving.store.refresh(serving.index, generation)
            except IndexNotFoundError:
                continue  # collected meanwhile; the others are still candidates
            except (SemsearchError, OSError, ValueError, KeyError) as exc:
                self._bad_generations.add(generation)
                self.metrics.count_skipped(serving.index_id, {generation: f"{type(exc).__name__}: {exc}"})
                continue
            break
        else:
            return None
        serving.hold.move_to(manifest.generation, serving.store.pin)
        self._bad_generations = {g for g in self._bad_generations if g > manifest.generation}
        self.metrics.index_loads.labels(kind="refresh").inc()
        log.debug("refreshed %s to generation %d", serving.index_id, manifest.generation)
        return serving.at(manifest)
