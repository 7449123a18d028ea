"""The Kafka cluster id: which log a set of offsets belongs to.

Offsets are only meaningful in the log they were taken from; the cluster id names that log's
cluster, so snapshots record it and consumers compare it before seeking (see log_resets).
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException

log = logging.getLogger(__name__)

# A lookup at start may wait for a broker that is still coming up; later ones must not stall
# the consumer loop.
START_LOOKUP_TIMEOUT_S = 10.0
CLUSTER_LOOKUP_TIMEOUT_S = 2.0


def read_cluster_id(
    client: Consumer,
    topic: str | None = None,
    timeout_s: float = START_LOOKUP_TIMEOUT_S,
    *,
    failure_level: int = logging.WARNING,
) -> str | None:
    """The id of the Kafka cluster `client` talks to, or None if it cannot be read now.

    Metadata of one topic is enough (every metadata response names the cluster), which keeps
    the request small on a cluster with many topics. None means "unknown", never "no cluster":
    callers must keep what they knew and ask again later.
    """
    try:
        return client.list_topics(topic, timeout=timeout_s).cluster_id or None
    except KafkaException as exc:
        log.log(failure_level, "could not read the Kafka cluster id: %s", exc)
        return None


def lookup_cluster_id(bootstrap: str, timeout_s: float = START_LOOKUP_TIMEOUT_S) -> str | None:
    """The Kafka cluster id at `bootstrap`, for a caller without a consumer of its own (a
    migration reading where its offsets point); None like read_cluster_id: unknown, not absent."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "semsearch-cluster-id"})
    try:
        return read_cluster_id(consumer, timeout_s=timeout_s)
    finally:
        consumer.close()
