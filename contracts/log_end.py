"""Where the log of a topic ends right now, read the one way that is right on Tansu too.

Why not ListOffsets / `get_watermark_offsets(cached=False)` / `offsets_for_times` / the admin
client's `list_offsets`: the embedded broker (Tansu) answers all of them with a wrong high
watermark (1 for every partition, however many records it holds). The watermarks that *fetch
responses* carry are right on Tansu and on Apache Kafka alike, so a short-lived probe consumer
fetches once from every partition and reads the watermarks cached from those responses. A fresh
consumer's first fetch happens after this call started, so every record the broker acknowledged
before the call is below the high watermark returned.

The probe is tiny on purpose (a few KiB fetched per partition, no group). Two callers, hence the
ground floor: the indexer's drain (once per stop) and the API's lag poller (once per
SEMSEARCH_LAG_POLL_S); the worker's lag metric keeps using its own consumer's cached watermarks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from contracts.errors import BrokerError

log = logging.getLogger(__name__)

_PROBE_POLL_S = 0.05


@dataclass(frozen=True)
class LogEnds:
    """(low, high) watermark per partition of one topic; `missing`: partitions the broker
    listed whose watermarks did not arrive in time."""

    topic: str
    ends: dict[int, tuple[int, int]]
    missing: list[int] = field(default_factory=list)


def read_log_ends(
    bootstrap: str,
    topic: str,
    positions: Mapping[int, int] | None = None,
    *,
    timeout_s: float = 30.0,
    abort: threading.Event | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> LogEnds:
    """The watermarks of every partition of `topic`, as of a fetch made after the call.

    `positions` (next offset per partition, e.g. a worker's or a manifest's) is where the probe
    fetches from, so it reads at most a few records of each; partitions without one are fetched
    from the start. Raises BrokerError (saying why) when the partitions cannot be listed at all;
    a partition whose watermarks did not arrive within `timeout_s` is in `missing`.
    `client_config` adds librdkafka properties (e.g. a quieter `log_level` for a poller).
    """
    positions = positions or {}
    deadline = time.monotonic() + timeout_s
    try:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                # Never joins: assign() below. The id only labels the connection in broker logs.
                "group.id": "semsearch-log-end-probe",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "max.partition.fetch.bytes": 4096,
                "queued.max.messages.kbytes": 64,
                "fetch.wait.max.ms": 50,
                **(client_config or {}),
            }
        )
    except KafkaException as exc:
        raise BrokerError(f"cannot create a Kafka client for {bootstrap}: {exc}") from None
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            raise BrokerError(f"cannot read the partitions of {topic} from {bootstrap}: {exc}") from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            why = getattr(described, "error", None) or "no such topic"
            raise BrokerError(f"topic {topic} is not known to the broker at {bootstrap} ({why})")
        partitions = sorted(described.partitions)
        consumer.assign([TopicPartition(topic, p, positions.get(p, OFFSET_BEGINNING)) for p in partitions])
        found: dict[int, tuple[int, int]] = {}
        while len(found) < len(partitions) and time.monotonic() < deadline:
            if abort is not None and abort.is_set():
                break
            consumer.poll(_PROBE_POLL_S)  # records are discarded: only the watermarks matter
            for partition in partitions:
                if partition in found:
                    continue
                with contextlib.suppress(KafkaException):
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                    if high is not None and high >= 0:
                        found[partition] = (max(0, low), high)
        return LogEnds(topic, found, [p for p in partitions if p not in found])
    finally:
        with contextlib.suppress(RuntimeError):
            consumer.close()


def log_end_offsets(
    bootstrap: str,
    topic: str,
    positions: Mapping[int, int] | None = None,
    *,
    timeout_s: float = 30.0,
    abort: threading.Event | None = None,
) -> dict[int, tuple[int, int]]:
    """read_log_ends for a caller that only logs what went wrong (the drain): {} when the
    partitions cannot be listed, missing partitions left out of the result."""
    try:
        read = read_log_ends(bootstrap, topic, positions, timeout_s=timeout_s, abort=abort)
    except BrokerError as exc:
        log.error("%s", exc)
        return {}
    if read.missing:
        log.error("no fetch response from %s partition(s) %s within %.0fs", topic, read.missing, timeout_s)
    return read.ends
