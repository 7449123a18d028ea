"""`run_indexer`: everything `semsearch index` (and `semsearch up`) needs around one IndexWorker.

Kept separate from the CLI so that `semsearch up` can run the indexer in a thread of its own
process: signals are the caller's business; this function only watches `stop_event` (and
`abort_drain`, a second Ctrl-C).

Failures: this function raises. `semsearch index` then exits non-zero and its orchestrator
(systemd, Kubernetes, compose `restart:`) restarts it - it resumes from its newest snapshot, and
with Apache Kafka nothing is lost. `semsearch up` instead restarts it in-process
(semsearch/stack.py), because there the broker, the dead-letter topic and the API live in the
same process and an embedded broker's events would die with it.
"""

from __future__ import annotations

import logging
import threading

from consumers.metrics import serve_metrics
from consumers.migration.service import start_migrations
from consumers.worker import IndexWorker
from contracts.settings import Settings, SettingsError
from contracts.topics import ensure_topics, topic_layout
from indexer.embedding_cache import EmbeddingCache
from indexer.model import load_model

log = logging.getLogger(__name__)

_metrics_served = False  # one endpoint per process, however often `up` restarts the indexer


def run_indexer(
    settings: Settings,
    stop_event: threading.Event,
    *,
    memory_only_broker: bool = False,
    abort_drain: threading.Event | None = None,
) -> None:
    """Index `docs` of the broker at `settings.kafka_bootstrap` into the index of `settings.model`
    until `stop_event` is set.

    The caller resolves the broker (`semsearch index` and `semsearch up` start an embedded one when
    KAFKA_BOOTSTRAP_SERVERS is unset). On stop the current batch is finished and a final
    snapshot written before returning. When the broker is memory-only (`memory_only_broker`:
    an embedded one) the stop first drains the log into the index (see
    IndexWorker.drain), for at most SEMSEARCH_DRAIN_TIMEOUT_S; Apache Kafka keeps the log, so
    there a stop just finishes the batch.
    """
    global _metrics_served
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        raise SettingsError(
            "run_indexer needs KAFKA_BOOTSTRAP_SERVERS; `semsearch index` starts an embedded broker "
            "when it is unset"
        )
    drain_timeout_s = settings.drain_timeout_s
    drain = memory_only_broker and drain_timeout_s > 0
    cache: EmbeddingCache | None = None
    try:
        ensure_topics(bootstrap, topic_layout(settings))
        model = load_model(settings.model, memory_mb=settings.embed_memory_mb)
        cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
        if not _metrics_served:
            _metrics_served = serve_metrics(settings.indexer_metrics_port, settings.api_host)
        if stop_event.is_set() and not drain:  # stopped while starting; a drain still runs
            return
        # SEMSEARCH_GROUP_ID names this index's group only: every other index (shadow builds,
        # rollback targets) needs a group of its own, `semsearch-<index id>`.
        worker = IndexWorker.open(model, settings, bootstrap=bootstrap, cache=cache, group_id=settings.group_id)
        # Model migrations (issue 5, consumers/migration/service.py): control events, shadow
        # builds, and a worker per servable index other than this one. Off without REDIS_URL.
        migrations = start_migrations(
            settings, bootstrap=bootstrap, cache=cache, owned_index_id=model.index_id, stop=stop_event
        )
        try:
            worker.run(stop_event, drain_timeout_s=drain_timeout_s if drain else None, abort_drain=abort_drain)
        finally:
            if migrations is not None:
                migrations.join()
    finally:
        if cache is not None:
            cache.close()
