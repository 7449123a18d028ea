"""`run_indexer`: everything `semsearch index` (and `semsearch up`) needs around one IndexWorker.

Kept separate from the CLI so that `semsearch up` can run the indexer in a thread of its own
process: signals are the caller's business; this function only watches `stop_event`.
"""

from __future__ import annotations

import logging
import threading

from consumers.metrics import metrics_port_from_env, serve_metrics
from consumers.migration_service import start_migrations
from consumers.worker import IndexWorker
from indexer.embedding_cache import EmbeddingCache
from indexer.model import load_model
from semsearch.embedded.broker import ensure_topics, resolve_bootstrap, topic_layout
from semsearch.settings import Settings

log = logging.getLogger(__name__)


def run_indexer(settings: Settings, stop_event: threading.Event) -> None:
    """Index `docs` into the index of `settings.model` until `stop_event` is set.

    With KAFKA_BOOTSTRAP_SERVERS unset an embedded broker is started for the duration (and its
    address logged, since producers need it). On stop the current batch is finished and a final
    snapshot written before returning.
    """
    bootstrap, broker = resolve_bootstrap(settings)
    cache: EmbeddingCache | None = None
    try:
        if broker is not None:
            log.warning(
                "KAFKA_BOOTSTRAP_SERVERS is not set: started an embedded broker (memory only) at %s; "
                "publish to it with: KAFKA_BOOTSTRAP_SERVERS=%s semsearch produce FILE.jsonl",
                bootstrap,
                bootstrap,
            )
        else:
            ensure_topics(bootstrap, topic_layout(settings))
        model = load_model(settings.model, memory_mb=settings.embed_memory_mb)
        cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
        serve_metrics(metrics_port_from_env(), settings.api_host)
        if stop_event.is_set():
            return
        # SEMSEARCH_GROUP_ID names this index's group only: every other index (shadow builds,
        # rollback targets) needs a group of its own, `semsearch-<index id>`.
        worker = IndexWorker.open(model, settings, bootstrap=bootstrap, cache=cache, group_id=settings.group_id)
        # Model migrations (issue 5, consumers/migration_service.py): control events, shadow
        # builds, and a worker per servable index other than this one. Off without REDIS_URL.
        migrations = start_migrations(
            settings, bootstrap=bootstrap, cache=cache, owned_index_id=model.index_id, stop=stop_event
        )
        try:
            worker.run(stop_event)
        finally:
            if migrations is not None:
                migrations.join()
    finally:
        if cache is not None:
            cache.close()
        if broker is not None:
            broker.stop()
