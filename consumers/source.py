"""KafkaSource: the consumer side of the pipeline, in batches sized for the embedding model.

Offsets belong to the index, not to Kafka: the snapshot manifest records the next offset of every
partition whose events it contains, and on (re)assignment every partition is sought to the
position of what the in-memory index already holds (at start: the manifest's offsets; otherwise
the beginning of the partition). Auto-commit is off; offsets are committed to Kafka after each
snapshot only so that `kafka-consumer-groups` and lag dashboards see progress.

Events are gathered for a short window (SEMSEARCH_BATCH_WINDOW_MS) after the first one arrives,
up to SEMSEARCH_BATCH_MAX_EVENTS, because one embedding call over many chunks is several times
faster than many calls over few; the window bounds what that costs in freshness.

The log under the positions can start over (another broker, a recreated topic): `LogResets`
(log_resets.py) notices and moves the affected positions back to the log start.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.cluster_id import CLUSTER_LOOKUP_TIMEOUT_S, START_LOOKUP_TIMEOUT_S
from consumers.log_resets import LogResets, ResetHook
from consumers.record import Record
from consumers.tuning import ConsumerTuning
from contracts.offsets import Offsets, copy_offsets

log = logging.getLogger(__name__)

# A batch also stops growing at this many value bytes, so huge documents cannot make one
# embedding call (and thus one poll interval) unbounded.
BATCH_MAX_BYTES = 16 * 1024 * 1024
IDLE_POLL_S = 0.25

# Client errors after which the broker we talk to may be another one.
_RECONNECT_ERRORS = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError.UNKNOWN_MEMBER_ID}
)
# Fetch errors that mean our position is not in the partition's log (librdkafka resets on its
# own with auto.offset.reset=earliest; these arrive only where it could not).
_OUT_OF_RANGE_ERRORS = frozenset({KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET})


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
        cluster_id: str | None = None,
        on_reset: ResetHook | None = None,
    ) -> None:
        """`cluster_id`: the cluster `start_offsets` were taken in (None: not known; then the
        first cluster that answers is assumed). `on_reset(reason)` is told of every log reset."""
        tuning = tuning or ConsumerTuning()
        self.topics = list(topics)
        self.group_id = group_id
        self.window_s = window_ms / 1000
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Next offset to hand out per partition == next offset the in-memory index lacks.
        self.positions: Offsets = copy_offsets(start_offsets or {})
        self.assigned: set[tuple[str, int]] = set()
        self._pending: list[Message] = []
        self._closing = False
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **tuning.consumer_config(),
                "error_cb": self._on_error,
                **(config or {}),
            }
        )
        self.resets = LogResets(
            self._consumer,
            self.topics,
            group_id,
            positions=self.positions,
            assigned=self.assigned,
            pending=self._pending,
            cluster_id=cluster_id,
            on_reset=on_reset,
        )
        # Before any assignment: positions from another cluster's log must never be sought to.
        self.resets.check_cluster(START_LOOKUP_TIMEOUT_S)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)

    @property
    def cluster(self) -> str | None:
        """The Kafka cluster whose log `positions` point into; None until one has been seen."""
        return self.resets.cluster

    # -- group membership -------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            # A rebalance finishing inside close(): a metadata request from a closing handle
            # can wait forever (seen as a hung close under load), and nothing will be consumed.
            return
        # A (re)assignment often follows a broker restart: make sure the positions we are about
        # to seek to belong to this cluster's log (one metadata request per rebalance).
        self.resets.check_cluster(CLUSTER_LOOKUP_TIMEOUT_S, seek=False)  # the offsets below suffice
        self.resets.recheck_log_ends_soon()
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

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("fatal consumer error: %s", error)
        else:
            log.debug("consumer: %s", error)
        if error.code() in _RECONNECT_ERRORS:
            # Served from poll(), so no lookup here: the next poll_batch re-reads the id.
            self.resets.recheck_cluster_soon()

    def wait_for_assignment(self, timeout_s: float = 30.0) -> bool:
        """Poll (without consuming) until the group has given us partitions; for startup/tests."""
        deadline = time.monotonic() + timeout_s
        while not self.assigned and time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is not None:  # a record arrived while we waited: hand it out next
                self._pending.append(message)
        return bool(self.assigned)

    # -- consuming --------------------------------------------------------------------------
    def poll_batch(self, idle_timeout_s: float = IDLE_POLL_S) -> list[Record]:
        """Wait up to `idle_timeout_s` for a first event, then gather for the window."""
        batch: list[Record] = []
        size = 0
        deadline: float | None = None
        timeout = idle_timeout_s
        self.resets.maybe_check()
        while len(batch) < self.max_events and size < self.max_bytes:
            if self._pending:
                messages = self._pending[:]
                self._pending.clear()  # in place: LogResets holds this list
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
                    if error.code() in _OUT_OF_RANGE_ERRORS:
                        self.resets.out_of_range(message, error)
                    elif error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error on %s[%s]: %s", message.topic(), message.partition(), error)
                    continue
                record = Record.from_message(message)
                self.resets.fetcher_moved_back(record)
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
        self._closing = True
        with contextlib.suppress(RuntimeError):  # already closed
            self._consumer.close()
