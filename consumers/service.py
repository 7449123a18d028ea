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
import os
import threading

from consumers.metrics import metrics_port_from_env, serve_metrics
from consumers.migration.service import start_migrations
from consumers.worker import IndexWorker
from indexer.embedding_cache import EmbeddingCache
from indexer.model import load_model
from semsearch.embedded.broker import ensure_topics, resolve_bootstrap, topic_layout
from semsearch.settings import Settings, SettingsError

log = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT_S = 300.0
_metrics_served = False  # one endpoint per process, however often `up` restarts the indexer


def drain_timeout_from_env() -> float:
    """SEMSEARCH_DRAIN_TIMEOUT_S (300): how long a clean stop may drain a memory-only broker.

    At ~8 chunks/s of CPU embedding, 300 s index some 2,400 short documents; raise it when you
    publish bulk loads into `semsearch up` and stop it right after.
    """
    raw = os.environ.get("SEMSEARCH_DRAIN_TIMEOUT_S", "").strip()
    if not raw:
        return DEFAULT_DRAIN_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise SettingsError(
            f"SEMSEARCH_DRAIN_TIMEOUT_S={raw!r} must be a number of seconds >= 0 (0 = do not drain)"
        )
    return value


def run_indexer(
    settings: Settings,
    stop_event: threading.Event,
    *,
    memory_only_broker: bool = False,
    abort_drain: threading.Event | None = None,
) -> None:
    """Index `docs` into the index of `settings.model` until `stop_event` is set.

    With KAFKA_BOOTSTRAP_SERVERS unset an embedded broker is started for the duration (and its
    address logged, since producers need it). On stop the current batch is finished and a final
    snapshot written before returning. When the broker is memory-only (the one started here, or
    `memory_only_broker`: `semsearch up`'s) the stop first drains the log into the index (see
    IndexWorker.drain), for at most SEMSEARCH_DRAIN_TIMEOUT_S; Apache Kafka keeps the log, so
    there a stop just finishes the batch.
    """
    global _metrics_served
    drain_timeout_s = drain_timeout_from_env()  # a bad value fails before anything starts
    bootstrap, broker = resolve_bootstrap(settings)
    drain = (memory_only_broker or broker is not None) and drain_timeout_s > 0
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
        if not _metrics_served:
            _metrics_served = serve_metrics(metrics_port_from_env(), settings.api_host)
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
        if broker is not None:
            broker.stop()
