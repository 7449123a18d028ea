"""Prometheus metrics of one API process: what queries cost and what is being served.

Each API instance gets its own CollectorRegistry (not the global default) so that tests and
benchmarks can create several apps in one process. Gauges that describe the served index are
computed at scrape time from the holder (a custom collector reading the `ServedState` protocol),
so they can never disagree with what /index and /readyz report. This module is the bottom of
query_api: it imports nothing of the package, the holder and its parts import it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from indexer.index import Index

log = logging.getLogger(__name__)

# Embedding one query costs ~10-30 ms on two cores; BM25 alone is sub-millisecond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESULT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
SIMILARITY_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ServedIndex(Protocol):
    """What a scrape reads of the index being served (query_api.serving.Serving is one)."""

    @property
    def index(self) -> Index: ...

    @property
    def index_id(self) -> str: ...

    @property
    def generation(self) -> int: ...

    @property
    def model_fingerprint(self) -> str: ...

    def snapshot_age_s(self) -> float: ...


class ServedState(Protocol):
    """What a scrape reads of the process's serving state (query_api.holder.IndexHolder is one)."""

    @property
    def current(self) -> ServedIndex | None: ...

    @property
    def redis_up(self) -> bool: ...

    @property
    def pointer_value(self) -> str | None: ...


class ApiMetrics:
    """The counters, histograms and gauges the API and the holder's parts update."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.query_seconds = Histogram(
            "semsearch_query_seconds",
            "Search latency inside the API (embedding + retrieval), by mode",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.query_results = Histogram(
            "semsearch_query_results",
            "Results returned per successful search",
            buckets=RESULT_BUCKETS,
            registry=self.registry,
        )
        self.top_similarity = Histogram(
            "semsearch_top_similarity",
            "Cosine similarity of the top hit (vector and hybrid modes): drift shows here first",
            buckets=SIMILARITY_BUCKETS,
            registry=self.registry,
        )
        self.query_errors = Counter(
            "semsearch_query_errors",
            "Requests that were not answered with results, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.pointer_invalid = Counter(
            "semsearch_pointer_invalid",
            "Pointer values that could not be served (bad id, unknown index, model mismatch...)",
            ["reason"],
            registry=self.registry,
        )
        self.index_loads = Counter(
            "semsearch_index_loads",
            "Indexes loaded (flip) and generations applied in place (refresh)",
            ["kind"],
            registry=self.registry,
        )
        self.generations_skipped = Counter(
            "semsearch_generations_skipped",
            "Snapshot generations the API could not load or apply (corrupt, truncated) and skipped",
            ["index_id"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "semsearch_redis_errors",
            "Failed attempts to read the pointer from Redis",
            registry=self.registry,
        )
        # Same name and help as indexer.drift.mismatch_gauge (the indexer's, in the process
        # registry): one alert rule covers both. The API sets it through DriftMonitor(gauge=).
        self.model_mismatch = Gauge(
            "semsearch_model_mismatch",
            "1 while the loaded model does not reproduce the index's vector space "
            "(fingerprint or canaries differ from the manifest); the process refuses the index",
            ["index_id"],
            registry=self.registry,
        )

    def count_skipped(self, index_id: str, skipped: Mapping[int, str]) -> None:
        """Generations that could not be loaded or applied: counted, and logged with why."""
        for generation in sorted(skipped):
            self.generations_skipped.labels(index_id).inc()
            log.warning("%s: generation %d skipped: %s", index_id, generation, skipped[generation])

    def attach(self, state: ServedState) -> None:
        """Export the serving state (served index, sizes, Redis) at every scrape."""
        self.registry.register(_ServedCollector(state))


class _ServedCollector(Collector):
    def __init__(self, state: ServedState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        serving = self.state.current
        redis_up = GaugeMetricFamily("semsearch_redis_up", "1 if the last pointer read reached Redis")
        redis_up.add_metric([], 1.0 if self.state.redis_up else 0.0)
        yield redis_up
        ready = GaugeMetricFamily("semsearch_ready", "1 while an index is loaded and verified")
        ready.add_metric([], 1.0 if serving is not None else 0.0)
        yield ready
        info = GaugeMetricFamily(
            "semsearch_serving_index_info",
            "The index being served (value 1), labelled with its id and model fingerprint",
            labels=["index_id", "model_fingerprint"],
        )
        pointer = InfoMetricFamily("semsearch_pointer", "The pointer value last read from Redis")
        pointer.add_metric([], {"value": self.state.pointer_value or ""})
        yield pointer
        if serving is None:
            yield info
            return
        info.add_metric([serving.index_id, serving.model_fingerprint], 1.0)
        yield info
        counts = serving.index.count()
        for name, value, help_text in (
            ("documents", counts.documents, "Live documents in the served index"),
            ("chunks", counts.chunks, "Live chunks (vectors) in the served index"),
            ("sealed_segments", counts.sealed_segments, "Sealed IVF segments in the served index"),
            ("live_chunks", counts.live_chunks, "Vectors in the live (flat) segment"),
            ("deleted_chunks", counts.deleted_chunks, "Tombstoned vectors awaiting compaction"),
            ("generation", serving.generation, "Snapshot generation being served"),
        ):
            gauge = GaugeMetricFamily(f"semsearch_index_{name}", help_text)
            gauge.add_metric([], float(value))
            yield gauge
        age = GaugeMetricFamily(
            "semsearch_index_snapshot_age_seconds", "Age of the served generation's snapshot"
        )
        age.add_metric([], max(0.0, serving.snapshot_age_s()))
        yield age
