"""LogResets: noticing that the log under a running consumer started over, and following it.

Positions are only meaningful in the log they were taken from, and that log can start over under
a running consumer: a new broker at the same address (the embedded Tansu is memory-only), a
topic deleted and recreated, an unclean leader election. Three signals reveal it, each on Apache
Kafka and on Tansu alike: another cluster id (`check_cluster`), a position beyond a partition's
high watermark (`check_log_ends`), a fetcher that moved back on its own (`fetcher_moved_back`).
Each logs a warning, is counted (semsearch_log_reset_total, through the `on_reset` hook) and
moves the affected positions back to the log start. Replaying a log is harmless (the index
ignores versions it already holds); skipping one is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.cluster_id import CLUSTER_LOOKUP_TIMEOUT_S, START_LOOKUP_TIMEOUT_S, read_cluster_id
from consumers.record import Record
from contracts.offsets import Offsets

log = logging.getLogger(__name__)

# The cluster id costs a metadata round trip, so it is re-read on assignment, after connection
# errors, and every CLUSTER_CHECK_S; cached watermarks cost nothing and are compared more often.
CLUSTER_CHECK_S = 5.0
CLUSTER_RETRY_S = 1.0
WATERMARK_CHECK_S = 1.0

# Reasons of a log reset (label `reason` of semsearch_log_reset_total).
CLUSTER_CHANGED = "cluster_changed"
BEYOND_LOG_END = "beyond_log_end"
OFFSET_RESET = "offset_reset"

ResetHook = Callable[[str], None]


def describe_positions(positions: dict[tuple[str, int], int]) -> str:
    """`topic[partition]@offset, ...`: the form every warning names positions in."""
    return ", ".join(f"{topic}[{partition}]@{offset}" for (topic, partition), offset in sorted(positions.items()))


class LogResets:
    """The log-reset checks of one consumer, acting on its positions, assignment and the
    messages it has fetched but not handed out (the consumer's own objects, changed in place)."""

    def __init__(
        self,
        consumer: Consumer,
        topics: Sequence[str],
        group_id: str,
        *,
        positions: Offsets,
        assigned: set[tuple[str, int]],
        pending: list[Message],
        cluster_id: str | None,
        on_reset: ResetHook | None,
    ) -> None:
        """`cluster_id`: the cluster `positions` were taken in (None: not known; then the first
        cluster that answers is assumed). `on_reset(reason)` is told of every log reset."""
        self._consumer = consumer
        self._topics = list(topics)
        self._group_id = group_id
        self._positions = positions
        self._assigned = assigned
        self._pending = pending
        self._on_reset = on_reset
        # The cluster whose log `positions` point into; None until one has been seen.
        self.cluster: str | None = cluster_id if positions else None
        self._cluster_check_at = 0.0  # monotonic time of the next cluster-id lookup; 0 = now
        self._watermark_check_at = 0.0

    def recheck_cluster_soon(self) -> None:
        """After a client error that may mean another broker: the next `maybe_check` asks."""
        self._cluster_check_at = 0.0

    def recheck_log_ends_soon(self) -> None:
        self._watermark_check_at = 0.0

    def maybe_check(self) -> None:
        """The checks that are due; called before each batch."""
        now = time.monotonic()
        if now >= self._cluster_check_at:
            self.check_cluster()
        if now >= self._watermark_check_at:
            self._watermark_check_at = now + WATERMARK_CHECK_S
            self.check_log_ends()

    def check_cluster(self, timeout_s: float = CLUSTER_LOOKUP_TIMEOUT_S, *, seek: bool = True) -> None:
        """Re-read the cluster id; another cluster's log means every position is void.

        A failed lookup changes nothing but the time of the next attempt: the positions still
        belong to the last cluster known, and only an id that is known and different resets.
        """
        # A broker that is down fails every re-check; the client logs the outage itself.
        quiet = self.cluster is not None and timeout_s < START_LOOKUP_TIMEOUT_S
        level = logging.DEBUG if quiet else logging.WARNING
        current = read_cluster_id(self._consumer, self._topics[0], timeout_s, failure_level=level)
        now = time.monotonic()
        if current is None:
            self._cluster_check_at = now + CLUSTER_RETRY_S
            return
        self._cluster_check_at = now + CLUSTER_CHECK_S
        if current == self.cluster:
            return
        previous, self.cluster = self.cluster, current
        old = {(t, p): o for t, parts in self._positions.items() for p, o in parts.items()}
        if previous is None or not old:
            if previous is not None:
                log.info("group %s: now on Kafka cluster %s (was %s)", self._group_id, current, previous)
            return
        log.warning(
            "group %s: Kafka cluster changed from %s to %s, a new log; positions %s point into the "
            "old one: consuming %s from the beginning (replaying is harmless, skipping is not)",
            self._group_id,
            previous,
            current,
            describe_positions(old),
            ", ".join(self._topics),
        )
        self._rewind(set(old) | self._assigned, CLUSTER_CHANGED, seek=seek)

    def check_log_ends(self) -> None:
        """A position beyond a partition's high watermark: that log started over (or was
        truncated), and what it holds now lies below where we stand. Uses the watermarks cached
        from fetch responses (exact on Tansu and Apache Kafka; Tansu's ListOffsets is not), and
        Tansu answers a fetch past the end with nothing, so without this it would wait forever."""
        beyond: dict[tuple[str, int], int] = {}
        for topic, partition in sorted(self._assigned):
            position = self._positions.get(topic, {}).get(partition)
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
            beyond = {tp: o for tp, o in beyond.items() if self._positions.get(tp[0], {}).get(tp[1]) == o}
        if beyond:
            log.warning(
                "group %s: positions %s lie beyond the end of their partition's log (it started "
                "over: topic recreated, log truncated?); consuming those partitions from the beginning",
                self._group_id,
                describe_positions(beyond),
            )
            self._rewind(set(beyond), BEYOND_LOG_END)

    def out_of_range(self, message: Message, error: KafkaError) -> None:
        """A fetch error saying our position is not in the partition's log."""
        topic, partition = message.topic(), message.partition()
        if topic is None or partition is None:
            log.warning("consumer error: %s", error)
            return
        position = self._positions.get(topic, {}).get(partition)
        log.warning(
            "group %s: %s is not in the log of %s[%d] (%s); consuming it from the beginning",
            self._group_id,
            "position" if position is None else describe_positions({(topic, partition): position}),
            topic,
            partition,
            error,
        )
        self._rewind({(topic, partition)}, OFFSET_RESET)

    def fetcher_moved_back(self, record: Record) -> None:
        """A record below our position: the fetcher itself went back to the log start
        (librdkafka's auto.offset.reset after OFFSET_OUT_OF_RANGE). Our own seeks never go
        back, so this can only mean the log we were reading is gone."""
        position = self._positions.get(record.topic, {}).get(record.partition)
        if position is None or record.offset >= position:
            return
        log.warning(
            "group %s: the consumer moved %s back to offset %d (its log started over, or our "
            "position left it); following from there",
            self._group_id,
            describe_positions({(record.topic, record.partition): position}),
            record.offset,
        )
        if self._on_reset is not None:
            self._on_reset(OFFSET_RESET)

    def _rewind(self, partitions: set[tuple[str, int]], reason: str, *, seek: bool = True) -> None:
        """Forget the positions of `partitions` (the snapshot then records "from the start")
        and make the consumer fetch them from the beginning of their log."""
        for topic, partition in partitions:
            parts = self._positions.get(topic)
            if parts is not None:
                parts.pop(partition, None)
                if not parts:
                    del self._positions[topic]
        # Fetched at the old positions: read again from the start, in order.
        self._pending[:] = [m for m in self._pending if (m.topic(), m.partition()) not in partitions]
        targets = sorted(partitions & self._assigned) if seek else []
        try:
            for topic, partition in targets:
                self._consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
        except KafkaException as exc:  # not fetching yet (just assigned): assign from the start
            log.debug("seek to the beginning failed (%s); re-assigning", exc)
            self._consumer.assign(
                [
                    TopicPartition(t, p, self._positions.get(t, {}).get(p, OFFSET_BEGINNING))
                    for t, p in sorted(self._assigned)
                ]
            )
        if self._on_reset is not None:
            self._on_reset(reason)
