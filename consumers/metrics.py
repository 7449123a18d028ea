"""Prometheus metrics of the indexer, labelled by index id so several workers share one process.

The metric objects are module-level (a prometheus registry refuses a name twice); `WorkerMetrics`
binds them to one index id so the worker code reads as plain calls.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from indexer.index import ApplyReport, IndexCounts

log = logging.getLogger(__name__)


EVENTS = Counter(
    "semsearch_events_total",
    "Document events consumed, by outcome (applied / stale / deleted / dead_lettered).",
    ["index_id", "outcome"],
)
EMBED_SECONDS = Histogram(
    "semsearch_embed_seconds",
    "Wall time of one batched embedding call.",
    ["index_id"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80),
)
EMBED_BATCH_CHUNKS = Histogram(
    "semsearch_embed_batch_chunks",
    "Chunks sent to the model in one batched embedding call.",
    ["index_id"],
    buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
CHUNKS_EMBEDDED = Counter("semsearch_chunks_embedded", "Chunks embedded by the model.", ["index_id"])
CACHE_HITS = Counter(
    "semsearch_embed_cache_hits", "Chunks whose vector came from the embedding cache.", ["index_id"]
)
CONSUMER_LAG = Gauge(
    "semsearch_consumer_lag",
    "Events in a partition not yet contained in the index (high watermark - next offset).",
    ["index_id", "topic", "partition"],
)
SNAPSHOT_SECONDS = Histogram(
    "semsearch_snapshot_seconds",
    "Time to write one snapshot generation.",
    ["index_id"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SNAPSHOT_BYTES = Gauge(
    "semsearch_snapshot_bytes", "Bytes of the newest snapshot generation (all its files).", ["index_id"]
)
SNAPSHOT_FAILURES = Counter(
    "semsearch_snapshot_failures",
    "Snapshot generations that could not be written (disk full, I/O errors); retried with backoff.",
    ["index_id"],
)
SNAPSHOT_GENERATION = Gauge(
    "semsearch_snapshot_generation", "Newest snapshot generation written.", ["index_id"]
)
INDEX_DOCUMENTS = Gauge("semsearch_index_documents", "Live documents in the index.", ["index_id"])
INDEX_CHUNKS = Gauge("semsearch_index_chunks", "Live chunks in the index.", ["index_id"])
INDEX_SEGMENTS = Gauge("semsearch_index_segments", "Sealed segments in the index.", ["index_id"])
LOG_RESETS = Counter(
    "semsearch_log_reset_total",
    "Times the consumer found that the Kafka log its positions point into started over (reason: "
    "cluster_changed / beyond_log_end / offset_reset) and replayed it from the start.",
    ["index_id", "reason"],
)


class WorkerMetrics:
    """The metrics of one index."""

    def __init__(self, index_id: str) -> None:
        self.index_id = index_id

    def events(self, outcome: str, count: int) -> None:
        if count:
            EVENTS.labels(self.index_id, outcome).inc(count)

    def applied(self, report: ApplyReport) -> None:
        self.events("applied", report.upserted)
        self.events("deleted", report.deleted)
        self.events("stale", report.stale)
        if report.chunks_embedded:
            EMBED_SECONDS.labels(self.index_id).observe(report.embed_seconds)
            EMBED_BATCH_CHUNKS.labels(self.index_id).observe(report.chunks_embedded)
            CHUNKS_EMBEDDED.labels(self.index_id).inc(report.chunks_embedded)
        if report.chunks_cached:
            CACHE_HITS.labels(self.index_id).inc(report.chunks_cached)

    def dead_lettered(self, count: int) -> None:
        self.events("dead_lettered", count)

    def log_reset(self, reason: str) -> None:
        LOG_RESETS.labels(self.index_id, reason).inc()

    def lag(self, lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), value in lags.items():
            CONSUMER_LAG.labels(self.index_id, topic, str(partition)).set(value)

    def snapshot(self, seconds: float, size: int, generation: int) -> None:
        SNAPSHOT_SECONDS.labels(self.index_id).observe(seconds)
        SNAPSHOT_BYTES.labels(self.index_id).set(size)
        SNAPSHOT_GENERATION.labels(self.index_id).set(generation)

    def snapshot_failed(self) -> None:
        SNAPSHOT_FAILURES.labels(self.index_id).inc()

    def counts(self, counts: IndexCounts) -> None:
        INDEX_DOCUMENTS.labels(self.index_id).set(counts.documents)
        INDEX_CHUNKS.labels(self.index_id).set(counts.chunks)
        INDEX_SEGMENTS.labels(self.index_id).set(counts.sealed_segments)


def serve_metrics(port: int, host: str) -> bool:
    """Start the /metrics endpoint; a busy port is logged, not fatal (indexing matters more).

    `host` is SEMSEARCH_API_HOST (127.0.0.1 by default; 0.0.0.0 in containers) so that one knob
    decides what the stack exposes.
    """
    if port == 0:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics endpoint not started on port %d: %s (set SEMSEARCH_INDEXER_METRICS_PORT)", port, exc)
        return False
    log.info("indexer metrics on http://%s:%d/metrics", host, port)
    return True
