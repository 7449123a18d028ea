"""Record: one consumed event, detached from librdkafka.

Operators, the dead-letter queue and the migration replay need only these six fields; a
`confluent_kafka.Message` is tied to its consumer handle and cannot be built in a test.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message


@dataclass(frozen=True)
class Record:
    """One consumed event, detached from librdkafka (operators and the DLQ need only this)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    @classmethod
    def from_message(cls, message: Message) -> Record:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("a consumed message without topic/partition/offset")
        kind, stamp = message.timestamp()
        key = message.key()
        value = message.value()
        return cls(
            topic,
            partition,
            offset,
            key.encode("utf-8") if isinstance(key, str) else key,
            value.encode("utf-8") if isinstance(value, str) else value,
            stamp if kind else None,
        )
