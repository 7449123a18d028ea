"""Dead-letter queue: events the index cannot take are parked with their reason, not retried.

A poison event (bad JSON, missing or invalid fields, an empty or oversized document) would fail
the same way on every retry, so blocking the partition on it would stop indexing for everyone.
Instead the original key and value are republished unchanged to the DLQ topic, with headers in
the Kafka Connect style naming the reason and where the event came from (topic, partition,
offset), so an operator can fix the source and replay it.

Delivery to the DLQ is confirmed *before* the offsets past the poison event can enter a snapshot,
so a crash never loses one; it may, rarely, publish one twice (at-least-once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from consumers.record import Record
from contracts.errors import SemsearchError

log = logging.getLogger(__name__)

HEADER_REASON = "semsearch.dlq.reason"
HEADER_TOPIC = "semsearch.dlq.topic"
HEADER_PARTITION = "semsearch.dlq.partition"
HEADER_OFFSET = "semsearch.dlq.offset"
HEADER_INDEX = "semsearch.dlq.index_id"
DELIVERY_TIMEOUT_S = 60.0


class DeadLetterError(SemsearchError):
    """The DLQ topic did not acknowledge a poison event; the indexer must not move past it."""


@dataclass(frozen=True)
class PoisonEvent:
    record: Record
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ record read back (by tools and tests)."""

    key: bytes | None
    value: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int
    index_id: str | None


def read_dead_letter(message: Message) -> DeadLetter:
    raw_headers = message.headers() or []
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers = {
        str(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "") for k, v in pairs
    }
    key, value = message.key(), message.value()
    return DeadLetter(
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        reason=headers.get(HEADER_REASON, ""),
        topic=headers.get(HEADER_TOPIC, ""),
        partition=int(headers.get(HEADER_PARTITION, "-1")),
        offset=int(headers.get(HEADER_OFFSET, "-1")),
        index_id=headers.get(HEADER_INDEX),
    )


class DeadLetterQueue:
    """Publishes poison events to the DLQ topic and waits until the broker has them."""

    def __init__(self, bootstrap: str, topic: str, index_id: str) -> None:
        self.topic = topic
        self.index_id = index_id
        self._failures: list[str] = []
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                # The original record already passed the broker's size limit on its way in.
                "message.max.bytes": 64 * 1024 * 1024,
            }
        )

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(error.str())

    def send(self, poison: Sequence[PoisonEvent]) -> None:
        """Publish and confirm; raises DeadLetterError if any event is not acknowledged."""
        if not poison:
            return
        self._failures = []
        for item in poison:
            record = item.record
            log.warning(
                "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, item.reason
            )
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADER_REASON, item.reason.encode("utf-8")),
                (HEADER_TOPIC, record.topic.encode("utf-8")),
                (HEADER_PARTITION, str(record.partition).encode()),
                (HEADER_OFFSET, str(record.offset).encode()),
                (HEADER_INDEX, self.index_id.encode("utf-8")),
            ]
            self._producer.produce(
                self.topic, key=record.key, value=record.value, headers=headers, on_delivery=self._on_delivery
            )
        remaining = self._producer.flush(DELIVERY_TIMEOUT_S)
        if remaining or self._failures:
            raise DeadLetterError(
                f"the dead-letter topic {self.topic!r} did not acknowledge {remaining + len(self._failures)} "
                f"event(s) ({'; '.join(self._failures[:3]) or 'timed out'}); the indexer stops here so "
                "they are not lost - check the broker and restart"
            )

    def close(self) -> None:
        self._producer.flush(DELIVERY_TIMEOUT_S)
