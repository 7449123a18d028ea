"""The topics semsearch uses and how they are laid out, created the same way by every stage.

`docs` is keyed by doc_id and may be split over partitions (SEMSEARCH_DOCS_PARTITIONS): order
matters per document only. `control` and the dead-letter topic keep one partition, so their
events stay in the order they were published. Topics that exist are never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from contracts.errors import BrokerError
from contracts.settings import Settings

log = logging.getLogger(__name__)


def topic_layout(settings: Settings) -> dict[str, int]:
    """Partitions per topic: `docs` is keyed by doc_id and may be split; control/DLQ keep order."""
    return {settings.docs_topic: settings.docs_partitions, settings.control_topic: 1, settings.dlq_topic: 1}


def ensure_topics(bootstrap: str, topics: Mapping[str, int], *, timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet; existing ones are left exactly as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap} ({exc}); check KAFKA_BOOTSTRAP_SERVERS or start "
            "the stack with `semsearch up`"
        ) from None
    wanted = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items() if name not in existing]
    if not wanted:
        return
    futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result()
            log.info("created topic %s (%d partitions)", name, topics[name])
        except KafkaException as exc:
            error = exc.args[0]
            if getattr(error, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue  # created concurrently by another process: fine
            raise BrokerError(f"cannot create topic {name!r} on {bootstrap}: {error}") from None
