"""Kafka consumers: turn document-change events into index changes, with offsets in snapshots."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from consumers.cluster_id import lookup_cluster_id, read_cluster_id
    from consumers.dead_letter import DeadLetterQueue, PoisonEvent, read_dead_letter
    from consumers.operators import split_batch
    from consumers.record import Record
    from consumers.service import run_indexer
    from consumers.source import KafkaSource
    from consumers.tuning import ConsumerTuning
    from consumers.worker import CLUSTER_KEY, IndexWorker, StepReport, default_group_id
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "consumers.cluster_id": ("lookup_cluster_id", "read_cluster_id"),
            "consumers.dead_letter": ("DeadLetterQueue", "PoisonEvent", "read_dead_letter"),
            "consumers.operators": ("split_batch",),
            "consumers.record": ("Record",),
            "consumers.service": ("run_indexer",),
            "consumers.source": ("KafkaSource",),
            "consumers.tuning": ("ConsumerTuning",),
            "consumers.worker": ("CLUSTER_KEY", "IndexWorker", "StepReport", "default_group_id"),
        },
    )

__all__ = [
    "CLUSTER_KEY",
    "ConsumerTuning",
    "DeadLetterQueue",
    "IndexWorker",
    "KafkaSource",
    "PoisonEvent",
    "Record",
    "StepReport",
    "default_group_id",
    "lookup_cluster_id",
    "read_cluster_id",
    "read_dead_letter",
    "run_indexer",
    "split_batch",
]
