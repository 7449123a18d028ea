"""Drift detection: a long-running process re-proves, every few seconds, that its model is still
the model its index was built with.

Loading checks this once (SnapshotStore.load → ensure_compatible). But the 3 AM incident was a
library upgrade: a process can load fine and a later one - or the same one after a hot reload,
a thread-count change that alters numerics, a swapped tokenizer - may embed into another space
while every file on disk is unchanged. So the indexer and the API keep asking, and on "no" they
stop (the worker refuses to embed, the API refuses to answer) and export
`semsearch_model_mismatch{index_id}` = 1, which an alert can page on.

Usage (one call per loop iteration; cheap when not due):

    monitor = DriftMonitor.for_index(index, manifest, interval_s=settings.drift_check_s)
    monitor.maybe_check()        # raises ModelMismatchError naming both models

The one implementation of the periodic check: the indexer's worker and the API's holder both
use it. The API passes its own gauge (query_api.metrics) since its metrics live in its registry.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from contracts.errors import ModelMismatchError
from indexer.canaries import CanaryComparison, CanaryProbe
from indexer.compatibility import ensure_compatible
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots.manifest import Manifest

log = logging.getLogger(__name__)

# Keyed by the registry object itself (weakly): an id() could be reused by a later registry.
_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()
_GAUGES_LOCK = threading.Lock()


def mismatch_gauge(registry: CollectorRegistry | None = None) -> Gauge:
    """`semsearch_model_mismatch{index_id}` in `registry` (default: the process registry).

    One gauge per registry: the indexer uses the default one, tests their own, and a registry
    refuses the same metric name twice. (The API defines its own, in query_api.metrics.)
    """
    target = registry if registry is not None else REGISTRY
    with _GAUGES_LOCK:
        gauge = _GAUGES.get(target)
        if gauge is None:
            gauge = Gauge(
                "semsearch_model_mismatch",
                "1 while the loaded model does not reproduce the index's vector space "
                "(fingerprint or canaries differ from the manifest); the process refuses the index",
                ["index_id"],
                registry=target,
            )
            _GAUGES[target] = gauge
        return gauge


class DriftMonitor:
    """Periodic re-verification of one loaded model against one index's recorded identity."""

    def __init__(
        self,
        model: EmbeddingModel,
        recorded: dict[str, Any],
        canaries: CanaryProbe,
        index_id: str,
        *,
        interval_s: float,
        registry: CollectorRegistry | None = None,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`gauge` (labelled index_id) is set 0/1 by each check; default: mismatch_gauge(registry)."""
        self.model = model
        self.recorded = recorded
        self.canaries = canaries
        self.index_id = index_id
        self.interval_s = max(0.0, interval_s)
        self.error: str | None = None
        self._gauge = (gauge if gauge is not None else mismatch_gauge(registry)).labels(index_id)
        self._clock = clock
        self._last_check = clock()
        self._gauge.set(0)

    @classmethod
    def for_manifest(
        cls,
        model: EmbeddingModel,
        manifest: Manifest,
        *,
        interval_s: float,
        registry: CollectorRegistry | None = None,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> DriftMonitor:
        """Watch `model` against what `manifest` recorded (the API's case: it loaded a snapshot)."""
        return cls(
            model,
            manifest.model,
            CanaryProbe.from_json(manifest.canaries),
            manifest.index_id,
            interval_s=interval_s,
            registry=registry,
            gauge=gauge,
            clock=clock,
        )

    @classmethod
    def for_index(
        cls,
        index: Index,
        manifest: Manifest | None = None,
        *,
        interval_s: float,
        registry: CollectorRegistry | None = None,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> DriftMonitor:
        """Watch an open index's model (the worker's case). Without a manifest (a brand-new
        index) the reference is the model's own identity and canaries at creation."""
        recorded = manifest.model if manifest is not None else index.model.info.to_json()
        canaries = (
            CanaryProbe.from_json(manifest.canaries) if manifest is not None else index.canaries
        )
        return cls(
            index.model,
            recorded,
            canaries,
            index.index_id,
            interval_s=interval_s,
            registry=registry,
            gauge=gauge,
            clock=clock,
        )

    @property
    def mismatched(self) -> bool:
        return self.error is not None

    def due(self) -> bool:
        return self._clock() - self._last_check >= self.interval_s

    def check(self) -> CanaryComparison:
        """Verify now; raise ModelMismatchError (and set the gauge to 1) on a mismatch."""
        self._last_check = self._clock()
        try:
            comparison = ensure_compatible(self.model, self.recorded, self.canaries, self.index_id)
        except ModelMismatchError as exc:
            if self.error is None:
                log.error("model drift on index %s: %s", self.index_id, exc)
            self.error = str(exc)
            self._gauge.set(1)
            raise
        if self.error is not None:
            log.info("index %s: the model matches its manifest again", self.index_id)
        self.error = None
        self._gauge.set(0)
        return comparison

    def maybe_check(self) -> CanaryComparison | None:
        """Check if `interval_s` has passed since the last check; None when not due."""
        if not self.due():
            return None
        return self.check()
