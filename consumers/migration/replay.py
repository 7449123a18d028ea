"""Bounded replay: apply exactly the `docs` events between two offset maps to an index.

The migration gate must compare the shadow and the live index *at the same stream position*.
The live index belongs to another worker and never stops moving, so a migration takes its own
copy (the snapshot it bootstrapped from, at offsets O) and replays O → S, where S is where the
shadow stands. Both then contain exactly the events before S, and "same documents" is a plain
comparison of the two document tables.

No consumer group: partitions are assigned explicitly from the start offsets, every partition is
paused once it reaches its end offset, and nothing is committed, so a replay can never disturb a
real worker's group or its lag.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.operators import split_batch
from consumers.record import Record
from consumers.worker import CLUSTER_KEY
from contracts.errors import SemsearchError
from contracts.offsets import Offsets, copy_offsets
from indexer.index import ApplyReport, Index
from indexer.snapshots import Manifest

log = logging.getLogger(__name__)

REPLAY_BATCH = 256
REPLAY_TIMEOUT_S = 300.0


class ReplayError(SemsearchError):
    """The events between two offsets could not all be read back from Kafka."""


@dataclass
class ReplayReport:
    """What a replay read and applied; `reached` is where every partition stands afterwards."""

    reached: Offsets
    events: int = 0
    poison: int = 0
    applied: ApplyReport = field(default_factory=ApplyReport)


def offsets_in(manifest: Manifest, cluster: str | None) -> Offsets:
    """A manifest's offsets if they point into `cluster`'s log, else {} (the beginning).

    A restarted embedded broker is a new, empty log: old offsets would skip its events.
    Reading it from the start instead is harmless, since versions make replays idempotent;
    the worker (IndexWorker, CLUSTER_KEY) applies the same rule, so both sides stay equal.
    """
    recorded = manifest.extra.get(CLUSTER_KEY)
    if recorded and cluster and recorded != cluster:
        return {}
    return copy_offsets(manifest.offsets)


def replay(
    index: Index,
    bootstrap: str,
    start: Offsets,
    end: Offsets,
    *,
    timeout_s: float = REPLAY_TIMEOUT_S,
) -> ReplayReport:
    """Apply every event at offsets [start, end) per partition to `index`, in partition order.

    A partition missing from `start` is read from offset 0. Poison events are skipped (the
    worker that owns the topic dead-letters them; a replay only mirrors what it applied).
    """
    report = ReplayReport(reached=copy_offsets(start))
    remaining: dict[tuple[str, int], int] = {}
    assignments: list[TopicPartition] = []
    for topic, parts in end.items():
        for partition, stop in parts.items():
            begin = start.get(topic, {}).get(partition, 0)
            if stop > begin:
                remaining[(topic, partition)] = stop
                assignments.append(TopicPartition(topic, partition, begin))
    if not remaining:
        return report
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"semsearch-replay-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign(assignments)
        while remaining:
            if time.monotonic() > deadline:
                raise ReplayError(
                    f"replay did not reach {end} within {timeout_s:.0f}s (still missing "
                    f"{ {f'{t}[{p}]': o for (t, p), o in remaining.items()} }); is the broker "
                    "reachable and the topic's retention longer than the migration?"
                )
            records: list[Record] = []
            for message in consumer.consume(REPLAY_BATCH, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("replay: %s", error)
                    continue
                record = Record.from_message(message)
                end_offset = remaining.get((record.topic, record.partition))
                if end_offset is None or record.offset >= end_offset:
                    continue  # past the end of a finished partition: not ours to apply
                records.append(record)
                report.reached.setdefault(record.topic, {})[record.partition] = record.offset + 1
                if record.offset + 1 >= end_offset:
                    del remaining[(record.topic, record.partition)]
                    consumer.pause([TopicPartition(record.topic, record.partition)])
            if records:
                _apply(index, records, report)
    finally:
        consumer.close()
    return report


def _apply(index: Index, records: list[Record], report: ReplayReport) -> None:
    batch = split_batch(records, index.validate_document)  # exactly as the worker decodes
    report.events += len(records)
    report.poison += len(batch.poison)
    report.applied.add(index.apply(batch.changes))
