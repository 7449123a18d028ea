"""KafkaSource: the consumer side of the pipeline, in batches sized for the embedding model.

Offsets belong to the index, not to Kafka: the snapshot manifest records the next offset of every
partition whose events it contains, and on (re)assignment every partition is sought to the
position of what the in-memory index already holds (at start: the manifest's offsets; otherwise
the beginning of the partition). Auto-commit is off; offsets are committed to Kafka after each
snapshot only so that `kafka-consumer-groups` and lag dashboards see progress.

Events are gathered for a short window (SEMSEARCH_BATCH_WINDOW_MS) after the first one arrives,
up to SEMSEARCH_BATCH_MAX_EVENTS, because one embedding call over many chunks is several times
faster than many calls over few; the window bounds what that costs in freshness.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from semsearch.settings import SettingsError

log = logging.getLogger(__name__)

Offsets = dict[str, dict[int, int]]

# A batch also stops growing at this many value bytes, so huge documents cannot make one
# embedding call (and thus one poll interval) unbounded.
BATCH_MAX_BYTES = 16 * 1024 * 1024
IDLE_POLL_S = 0.25


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


def copy_offsets(offsets: Offsets) -> Offsets:
    return {topic: dict(parts) for topic, parts in offsets.items()}


@dataclass(frozen=True)
class ConsumerTuning:
    """Group and fetch timing.

    Defaults suit Apache Kafka (whose minimum session timeout is 6 s) and keep a group join on
    the embedded broker at a few seconds; a long embedding batch must never look like a dead
    consumer, hence the generous poll interval. Tansu does not answer a waiting fetch when new
    data arrives, so an event waits up to `fetch.wait.max.ms` (librdkafka default 500) before
    the indexer sees it: 50 ms keeps that out of the freshness budget at the cost of ~20 tiny
    fetch requests a second when idle (Apache Kafka answers at once either way).
    """

    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    max_poll_interval_ms: int = 900_000
    fetch_wait_max_ms: int = 50

    @classmethod
    def from_env(cls) -> ConsumerTuning:
        def read(name: str, default: int) -> int:
            raw = os.environ.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or int(raw) <= 0:
                raise SettingsError(f"{name}={raw!r} must be a positive number of milliseconds")
            return int(raw)

        session = read("SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS", cls.session_timeout_ms)
        return cls(
            session_timeout_ms=session,
            heartbeat_interval_ms=read("SEMSEARCH_KAFKA_HEARTBEAT_MS", min(cls.heartbeat_interval_ms, session // 3)),
            max_poll_interval_ms=read("SEMSEARCH_KAFKA_MAX_POLL_INTERVAL_MS", cls.max_poll_interval_ms),
            fetch_wait_max_ms=read("SEMSEARCH_KAFKA_FETCH_WAIT_MS", cls.fetch_wait_max_ms),
        )


class KafkaSource:
    """A consumer-group member whose positions are the index's, handing out message batches."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        start_offsets: Offsets | None = None,
        *,
        window_ms: int,
        max_events: int,
        max_bytes: int = BATCH_MAX_BYTES,
        tuning: ConsumerTuning | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        tuning = tuning or ConsumerTuning.from_env()
        self.topics = list(topics)
        self.group_id = group_id
        self.window_s = window_ms / 1000
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Next offset to hand out per partition == next offset the in-memory index lacks.
        self.positions: Offsets = copy_offsets(start_offsets or {})
        self.assigned: set[tuple[str, int]] = set()
        self._pending: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": tuning.session_timeout_ms,
                "heartbeat.interval.ms": tuning.heartbeat_interval_ms,
                "max.poll.interval.ms": tuning.max_poll_interval_ms,
                "fetch.wait.max.ms": tuning.fetch_wait_max_ms,
                "error_cb": self._on_error,
                **(config or {}),
            }
        )
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)

    # -- group membership -------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = self.positions.get(tp.topic, {}).get(tp.partition, OFFSET_BEGINNING)
            self.assigned.add((tp.topic, tp.partition))
        consumer.assign(partitions)
        log.info(
            "group %s assigned %s",
            self.group_id,
            ", ".join(f"{tp.topic}[{tp.partition}]@{'start' if tp.offset < 0 else tp.offset}" for tp in partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
        log.info("group %s revoked %d partition(s)", self.group_id, len(partitions))

    @staticmethod
    def _on_error(error: KafkaError) -> None:
        if error.fatal():
            log.error("fatal consumer error: %s", error)
        else:
            log.debug("consumer: %s", error)

    def wait_for_assignment(self, timeout_s: float = 30.0) -> bool:
        """Poll (without consuming) until the group has given us partitions; for startup/tests."""
        deadline = time.monotonic() + timeout_s
        while not self.assigned and time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is not None:  # a record arrived while we waited: hand it out next
                self._pending.append(message)
        return bool(self.assigned)

    def cluster_id(self, timeout_s: float = 10.0) -> str | None:
        """The Kafka cluster id: offsets are only meaningful within the cluster that assigned them."""
        try:
            return self._consumer.list_topics(timeout=timeout_s).cluster_id
        except KafkaException as exc:
            log.warning("could not read the Kafka cluster id: %s", exc)
            return None

    # -- consuming --------------------------------------------------------------------------
    def poll_batch(self, idle_timeout_s: float = IDLE_POLL_S) -> list[Record]:
        """Wait up to `idle_timeout_s` for a first event, then gather for the window."""
        batch: list[Record] = []
        size = 0
        deadline: float | None = None
        timeout = idle_timeout_s
        while len(batch) < self.max_events and size < self.max_bytes:
            if self._pending:
                messages, self._pending = self._pending, []
            elif deadline is None:
                # consume(n) would wait for n messages or the whole timeout: poll returns the
                # first message as soon as it arrives, which is what opens the window.
                first = self._consumer.poll(max(0.0, timeout))
                messages = [first] if first is not None else []
            else:
                messages = self._consumer.consume(self.max_events - len(batch), timeout=max(0.0, timeout))
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error on %s[%s]: %s", message.topic(), message.partition(), error)
                    continue
                record = Record.from_message(message)
                batch.append(record)
                size += len(record.value or b"")
                self.positions.setdefault(record.topic, {})[record.partition] = record.offset + 1
            now = time.monotonic()
            if batch and deadline is None:
                deadline = now + self.window_s
            if deadline is None:
                if not messages:
                    break  # idle: give the caller its turn (stop flag, snapshot timer)
                continue
            timeout = deadline - now
            if timeout <= 0:
                break
        return batch

    def commit(self, offsets: Offsets) -> None:
        """Tell Kafka what the newest snapshot contains (visibility only; never read back)."""
        partitions = [
            TopicPartition(topic, partition, offset)
            for topic, parts in offsets.items()
            for partition, offset in parts.items()
            if (topic, partition) in self.assigned
        ]
        if not partitions:
            return
        try:
            self._consumer.commit(offsets=partitions, asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit failed (lag metrics only; resume uses the snapshot): %s", exc)

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: high watermark - next offset the index lacks.

        Uses the watermarks cached from fetch responses: a broker round trip per partition per
        batch would be wasteful, and Tansu answers explicit watermark queries incorrectly.
        """
        lags: dict[tuple[str, int], int] = {}
        for topic, partition in sorted(self.assigned):
            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            position = self.positions.get(topic, {}).get(partition, low if low >= 0 else 0)
            lags[(topic, partition)] = max(0, high - position)
        return lags

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self._consumer.close()
