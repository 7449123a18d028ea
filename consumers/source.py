"""KafkaSource: the consumer side of the pipeline, in batches sized for the embedding model.

Offsets belong to the index, not to Kafka: the snapshot manifest records the next offset of every
partition whose events it contains, and on (re)assignment every partition is sought to the
position of what the in-memory index already holds (at start: the manifest's offsets; otherwise
the beginning of the partition). Auto-commit is off; offsets are committed to Kafka after each
snapshot only so that `kafka-consumer-groups` and lag dashboards see progress.

Events are gathered for a short window (SEMSEARCH_BATCH_WINDOW_MS) after the first one arrives,
up to SEMSEARCH_BATCH_MAX_EVENTS, because one embedding call over many chunks is several times
faster than many calls over few; the window bounds what that costs in freshness.

Positions are only meaningful in the log they were taken from, and that log can start over under
a running consumer: a new broker at the same address (the embedded Tansu is memory-only), a
topic deleted and recreated, an unclean leader election. Three signals reveal it, each on Apache
Kafka and on Tansu alike: another cluster id (`check_cluster`), a position beyond a partition's
high watermark (`check_log_ends`), a fetcher that moved back on its own (`_fetcher_moved_back`).
Each logs a warning, is counted (semsearch_log_reset_total) and moves the affected positions back
to the log start. Replaying a log is harmless (the index ignores versions it already holds);
skipping one is not.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
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

from contracts.offsets import Offsets, copy_offsets
from contracts.settings import Settings

log = logging.getLogger(__name__)

# A batch also stops growing at this many value bytes, so huge documents cannot make one
# embedding call (and thus one poll interval) unbounded.
BATCH_MAX_BYTES = 16 * 1024 * 1024
IDLE_POLL_S = 0.25

# The cluster id costs a metadata round trip, so it is re-read on assignment, after connection
# errors, and every CLUSTER_CHECK_S; cached watermarks cost nothing and are compared more often.
CLUSTER_CHECK_S = 5.0
CLUSTER_RETRY_S = 1.0
CLUSTER_LOOKUP_TIMEOUT_S = 2.0
START_LOOKUP_TIMEOUT_S = 10.0
WATERMARK_CHECK_S = 1.0
# Client errors after which the broker we talk to may be another one.
_RECONNECT_ERRORS = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError.UNKNOWN_MEMBER_ID}
)
# Fetch errors that mean our position is not in the partition's log (librdkafka resets on its
# own with auto.offset.reset=earliest; these arrive only where it could not).
_OUT_OF_RANGE_ERRORS = frozenset({KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET})

# Reasons of a log reset (label `reason` of semsearch_log_reset_total).
CLUSTER_CHANGED = "cluster_changed"
BEYOND_LOG_END = "beyond_log_end"
OFFSET_RESET = "offset_reset"

ResetHook = Callable[[str], None]


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


def _describe(positions: dict[tuple[str, int], int]) -> str:
    return ", ".join(f"{topic}[{partition}]@{offset}" for (topic, partition), offset in sorted(positions.items()))


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
    def from_settings(cls, settings: Settings) -> ConsumerTuning:
        """SEMSEARCH_KAFKA_*; an unset heartbeat is a third of the session timeout, at most 2 s."""
        session = settings.kafka_session_timeout_ms
        heartbeat = settings.kafka_heartbeat_ms
        return cls(
            session_timeout_ms=session,
            heartbeat_interval_ms=heartbeat or min(cls.heartbeat_interval_ms, session // 3),
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            fetch_wait_max_ms=settings.kafka_fetch_wait_ms,
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
        # The cluster whose log `positions` point into; None until one has been seen.
        self.cluster: str | None = cluster_id if self.positions else None
        self._on_reset = on_reset
        self._cluster_check_at = 0.0  # monotonic time of the next cluster-id lookup; 0 = now
        self._watermark_check_at = 0.0
        self._pending: list[Message] = []
        self._closing = False
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
        # Before any assignment: positions from another cluster's log must never be sought to.
        self.check_cluster(START_LOOKUP_TIMEOUT_S)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)

    # -- group membership -------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            # A rebalance finishing inside close(): a metadata request from a closing handle
            # can wait forever (seen as a hung close under load), and nothing will be consumed.
            return
        # A (re)assignment often follows a broker restart: make sure the positions we are about
        # to seek to belong to this cluster's log (one metadata request per rebalance).
        self.check_cluster(CLUSTER_LOOKUP_TIMEOUT_S, seek=False)  # the offsets below suffice
        self._watermark_check_at = 0.0
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
            self._cluster_check_at = 0.0

    def wait_for_assignment(self, timeout_s: float = 30.0) -> bool:
        """Poll (without consuming) until the group has given us partitions; for startup/tests."""
        deadline = time.monotonic() + timeout_s
        while not self.assigned and time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is not None:  # a record arrived while we waited: hand it out next
                self._pending.append(message)
        return bool(self.assigned)

    # -- log resets --------------------------------------------------------------------------
    def check_cluster(self, timeout_s: float = CLUSTER_LOOKUP_TIMEOUT_S, *, seek: bool = True) -> None:
        """Re-read the cluster id; another cluster's log means every position is void.

        A failed lookup changes nothing but the time of the next attempt: the positions still
        belong to the last cluster known, and only an id that is known and different resets.
        """
        # A broker that is down fails every re-check; the client logs the outage itself.
        quiet = self.cluster is not None and timeout_s < START_LOOKUP_TIMEOUT_S
        level = logging.DEBUG if quiet else logging.WARNING
        current = read_cluster_id(self._consumer, self.topics[0], timeout_s, failure_level=level)
        now = time.monotonic()
        if current is None:
            self._cluster_check_at = now + CLUSTER_RETRY_S
            return
        self._cluster_check_at = now + CLUSTER_CHECK_S
        if current == self.cluster:
            return
        previous, self.cluster = self.cluster, current
        old = {(t, p): o for t, parts in self.positions.items() for p, o in parts.items()}
        if previous is None or not old:
            if previous is not None:
                log.info("group %s: now on Kafka cluster %s (was %s)", self.group_id, current, previous)
            return
        log.warning(
            "group %s: Kafka cluster changed from %s to %s, a new log; positions %s point into the "
            "old one: consuming %s from the beginning (replaying is harmless, skipping is not)",
            self.group_id,
            previous,
            current,
            _describe(old),
            ", ".join(self.topics),
        )
        self._rewind(set(old) | self.assigned, CLUSTER_CHANGED, seek=seek)

    def check_log_ends(self) -> None:
        """A position beyond a partition's high watermark: that log started over (or was
        truncated), and what it holds now lies below where we stand. Uses the watermarks cached
        from fetch responses (exact on Tansu and Apache Kafka; Tansu's ListOffsets is not), and
        Tansu answers a fetch past the end with nothing, so without this it would wait forever."""
        beyond: dict[tuple[str, int], int] = {}
        for topic, partition in sorted(self.assigned):
            position = self.positions.get(topic, {}).get(partition)
            if position is None:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high is not None and 0 <= high < position:
                beyond[(topic, partition)] = position
        if beyond:
            # A log that started over may be a whole new cluster: that resets every position.
            self.check_cluster()
            beyond = {tp: o for tp, o in beyond.items() if self.positions.get(tp[0], {}).get(tp[1]) == o}
        if beyond:
            log.warning(
                "group %s: positions %s lie beyond the end of their partition's log (it started "
                "over: topic recreated, log truncated?); consuming those partitions from the beginning",
                self.group_id,
                _describe(beyond),
            )
            self._rewind(set(beyond), BEYOND_LOG_END)

    def _maybe_check(self) -> None:
        now = time.monotonic()
        if now >= self._cluster_check_at:
            self.check_cluster()
        if now >= self._watermark_check_at:
            self._watermark_check_at = now + WATERMARK_CHECK_S
            self.check_log_ends()

    def _rewind(self, partitions: set[tuple[str, int]], reason: str, *, seek: bool = True) -> None:
        """Forget the positions of `partitions` (the snapshot then records "from the start")
        and make the consumer fetch them from the beginning of their log."""
        for topic, partition in partitions:
            parts = self.positions.get(topic)
            if parts is not None:
                parts.pop(partition, None)
                if not parts:
                    del self.positions[topic]
        # Fetched at the old positions: read again from the start, in order.
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in partitions]
        targets = sorted(partitions & self.assigned) if seek else []
        try:
            for topic, partition in targets:
                self._consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
        except KafkaException as exc:  # not fetching yet (just assigned): assign from the start
            log.debug("seek to the beginning failed (%s); re-assigning", exc)
            self._consumer.assign(
                [
                    TopicPartition(t, p, self.positions.get(t, {}).get(p, OFFSET_BEGINNING))
                    for t, p in sorted(self.assigned)
                ]
            )
        if self._on_reset is not None:
            self._on_reset(reason)

    def _out_of_range(self, message: Message, error: KafkaError) -> None:
        topic, partition = message.topic(), message.partition()
        if topic is None or partition is None:
            log.warning("consumer error: %s", error)
            return
        position = self.positions.get(topic, {}).get(partition)
        log.warning(
            "group %s: %s is not in the log of %s[%d] (%s); consuming it from the beginning",
            self.group_id,
            "position" if position is None else _describe({(topic, partition): position}),
            topic,
            partition,
            error,
        )
        self._rewind({(topic, partition)}, OFFSET_RESET)

    def _fetcher_moved_back(self, record: Record) -> None:
        """A record below our position: the fetcher itself went back to the log start
        (librdkafka's auto.offset.reset after OFFSET_OUT_OF_RANGE). Our own seeks never go
        back, so this can only mean the log we were reading is gone."""
        position = self.positions.get(record.topic, {}).get(record.partition)
        if position is None or record.offset >= position:
            return
        log.warning(
            "group %s: the consumer moved %s back to offset %d (its log started over, or our "
            "position left it); following from there",
            self.group_id,
            _describe({(record.topic, record.partition): position}),
            record.offset,
        )
        if self._on_reset is not None:
            self._on_reset(OFFSET_RESET)

    # -- consuming --------------------------------------------------------------------------
    def poll_batch(self, idle_timeout_s: float = IDLE_POLL_S) -> list[Record]:
        """Wait up to `idle_timeout_s` for a first event, then gather for the window."""
        batch: list[Record] = []
        size = 0
        deadline: float | None = None
        timeout = idle_timeout_s
        self._maybe_check()
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
                    if error.code() in _OUT_OF_RANGE_ERRORS:
                        self._out_of_range(message, error)
                    elif error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error on %s[%s]: %s", message.topic(), message.partition(), error)
                    continue
                record = Record.from_message(message)
                self._fetcher_moved_back(record)
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
