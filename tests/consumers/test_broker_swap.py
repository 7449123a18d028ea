"""A Kafka log that starts over under a running indexer (a new broker at the same address, a
topic deleted and recreated, an unclean leader election) is detected, logged, counted, and
replayed from its start, instead of being skipped up to the positions the old log had reached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from prometheus_client import REGISTRY
from tests_support import wait_until

from consumers.source import KafkaSource
from consumers.worker import CLUSTER_KEY, IndexWorker
from contracts.events import UpsertEvent
from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.embedding_cache import EmbeddingCache
from indexer.model import EmbeddingModel
from producers.publisher import Publisher
from semsearch.embedded.broker import EmbeddedBroker, free_port

DOCS = [f"d{i}" for i in range(1, 11)]
TIMEOUT_S = 60.0


def upsert(doc_id: str, version: int) -> UpsertEvent:
    return UpsertEvent(doc_id, version, f"Title {doc_id}", f"Document {doc_id} at version {version}.", {})


def resets(index_id: str, reason: str) -> float:
    return REGISTRY.get_sample_value("semsearch_log_reset_total", {"index_id": index_id, "reason": reason}) or 0.0


def versions(worker: IndexWorker) -> dict[str, int]:
    return {record.doc_id: record.version for record in worker.index.documents}


def consumed(worker: IndexWorker) -> int:
    return sum(offset for parts in worker.offsets.values() for offset in parts.values())


def publish(bootstrap: str, settings: Settings, events: list[UpsertEvent]) -> None:
    with Publisher(bootstrap) as publisher:
        report = publisher.publish_docs(settings.docs_topic, events)
    assert report.failed == 0 and report.delivered == len(events), report.summary()


def step_until(worker: IndexWorker, what: str, condition: object) -> None:
    assert callable(condition)

    def stepped() -> bool:
        worker.step(0.1)
        return bool(condition())

    wait_until(stepped, TIMEOUT_S, what, poll_s=0.0)


class Swappable:
    """An embedded broker at a fixed address that can be replaced by a new, empty one."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        self.starts = 0
        self.broker: EmbeddedBroker | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, settings: Settings) -> EmbeddedBroker:
        self.starts += 1
        self.broker = EmbeddedBroker(port=self.port, log_path=self.tmp_path / f"tansu-{self.starts}.log").start()
        ensure_topics(self.bootstrap, {settings.docs_topic: 3, settings.control_topic: 1, settings.dlq_topic: 1})
        return self.broker

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


@pytest.fixture
def swappable(tmp_path: Path) -> Iterator[Swappable]:
    swap = Swappable(tmp_path)
    yield swap
    swap.stop()


@pytest.fixture
def swap_settings(stream_settings: Settings, swappable: Swappable) -> Settings:
    return stream_settings.with_overrides(kafka_bootstrap=swappable.bootstrap)


def test_a_broker_replaced_under_a_running_worker_is_replayed_from_its_start(
    swappable: Swappable,
    swap_settings: Settings,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = swappable.start(swap_settings)
    publish(first.bootstrap, swap_settings, [upsert(d, v) for v in (1, 2, 3) for d in DOCS])
    worker = IndexWorker.open(model, swap_settings, bootstrap=first.bootstrap, cache=cache, group_id=swap_settings.group_id)
    try:
        step_until(worker, "30 events in a snapshot", lambda: consumed(worker) == 30 and not worker.dirty)
        assert versions(worker) == dict.fromkeys(DOCS, 3)
        old_offsets = worker.offsets
        assert worker.store.read_manifest().extra[CLUSTER_KEY] == first.cluster_id
        before = resets(worker.index.index_id, "cluster_changed")

        swappable.stop()
        second = swappable.start(swap_settings)
        assert second.cluster_id != first.cluster_id
        # Each doc keeps its partition (keyed by doc id); the new log is 2/3 as long as the old
        # one, so every old position lies beyond the new log's end.
        publish(second.bootstrap, swap_settings, [upsert(d, v) for v in (4, 5) for d in DOCS])

        caplog.set_level(logging.WARNING, logger="consumers.log_resets")
        step_until(
            worker,
            "the 20 events of the new log in a snapshot",
            lambda: versions(worker) == dict.fromkeys(DOCS, 5) and consumed(worker) == 20 and not worker.dirty,
        )
        # Every event of the new log, not just the newest ones, went through the index.
        assert sum(worker.offsets[swap_settings.docs_topic].values()) == 20
        assert resets(worker.index.index_id, "cluster_changed") == before + 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(second.cluster_id in m and first.cluster_id in m for m in warnings), warnings
        topic = swap_settings.docs_topic
        for partition, offset in old_offsets[topic].items():  # the skipped-to positions are named
            assert any(f"{topic}[{partition}]@{offset}" in m for m in warnings), (partition, warnings)
        manifest = worker.store.read_manifest()
        assert manifest.extra[CLUSTER_KEY] == second.cluster_id
        assert manifest.offsets == worker.offsets
        assert worker.cluster_id == second.cluster_id
    finally:
        worker.close(final_snapshot=False)


def test_a_worker_started_while_kafka_is_down_still_notices_the_new_log(
    swappable: Swappable,
    swap_settings: Settings,
    model: EmbeddingModel,
    cache: EmbeddingCache,
) -> None:
    """The cluster id cannot be read at start: the check is deferred, not disabled."""
    first = swappable.start(swap_settings)
    publish(first.bootstrap, swap_settings, [upsert(d, v) for v in (1, 2, 3) for d in DOCS])
    worker = IndexWorker.open(model, swap_settings, bootstrap=first.bootstrap, cache=cache, group_id=swap_settings.group_id)
    try:
        step_until(worker, "30 events in a snapshot", lambda: consumed(worker) == 30 and not worker.dirty)
    finally:
        worker.close()
    assert worker.store.read_manifest().extra[CLUSTER_KEY] == first.cluster_id
    swappable.stop()

    # Nothing listens: the restarted worker cannot know which cluster it will talk to.
    restarted = IndexWorker.open(model, swap_settings, bootstrap=swappable.bootstrap, cache=cache, group_id=swap_settings.group_id)
    try:
        # Until proven otherwise, its offsets still belong to the first cluster.
        assert restarted.cluster_id == first.cluster_id
        assert consumed(restarted) == 30
        assert restarted.snapshot().extra[CLUSTER_KEY] == first.cluster_id  # not None
        second = swappable.start(swap_settings)
        publish(second.bootstrap, swap_settings, [upsert(d, v) for v in (4, 5) for d in DOCS])
        step_until(
            restarted,
            "the new log replayed from its start",
            lambda: versions(restarted) == dict.fromkeys(DOCS, 5) and consumed(restarted) == 20 and not restarted.dirty,
        )
        manifest = restarted.store.read_manifest()
        assert manifest.extra[CLUSTER_KEY] == second.cluster_id
        assert manifest.offsets == restarted.offsets
    finally:
        restarted.close(final_snapshot=False)


def _produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=partition)
    assert producer.flush(10) == 0


def test_a_position_beyond_the_log_end_restarts_that_partition(
    bootstrap: str, stream_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Same cluster, shorter log (topic recreated; Tansu answers such a fetch with nothing)."""
    topic = stream_settings.docs_topic
    _produce(bootstrap, topic, 0, 5)
    _produce(bootstrap, topic, 1, 2)
    seen: list[str] = []
    caplog.set_level(logging.WARNING, logger="consumers.log_resets")
    source = KafkaSource(
        bootstrap, f"{topic}.g-beyond", [topic], {topic: {0: 50, 1: 1}}, window_ms=50, max_events=100, on_reset=seen.append
    )
    try:
        values: list[str] = []

        def polled() -> bool:
            values.extend((r.value or b"").decode() for r in source.poll_batch(0.1))
            return source.positions.get(topic, {}).get(0) == 5 and len(values) >= 6

        wait_until(polled, TIMEOUT_S, "partition 0 read again from its start", poll_s=0.0)
        assert sorted(values) == sorted([f"v{i}" for i in range(5)] + ["v1"])  # partition 1 kept its place
        assert source.positions == {topic: {0: 5, 1: 2}}
        assert seen == ["beyond_log_end"]
        assert any(f"{topic}[0]@50" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        source.close()


def test_a_fetcher_that_moved_back_to_the_log_start_is_followed(
    bootstrap: str, stream_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """After OFFSET_OUT_OF_RANGE, librdkafka (auto.offset.reset=earliest) refetches from the
    start on its own; our positions, which the snapshot records, must follow and say so."""
    topic = stream_settings.docs_topic
    _produce(bootstrap, topic, 2, 4)
    seen: list[str] = []
    caplog.set_level(logging.WARNING, logger="consumers.log_resets")
    source = KafkaSource(bootstrap, f"{topic}.g-back", [topic], window_ms=50, max_events=100, on_reset=seen.append)
    try:
        count = [0]

        def polled(expect: int) -> bool:
            count[0] += len(source.poll_batch(0.1))
            return count[0] >= expect

        wait_until(lambda: polled(4), TIMEOUT_S, "the first read", poll_s=0.0)
        assert source.positions == {topic: {2: 4}} and seen == []
        # What librdkafka's own offset reset does (Tansu never answers OFFSET_OUT_OF_RANGE).
        source._consumer.seek(TopicPartition(topic, 2, 1))
        wait_until(lambda: polled(7), TIMEOUT_S, "the records read again", poll_s=0.0)
        assert source.positions == {topic: {2: 4}}
        assert seen == ["offset_reset"]
        assert any(f"{topic}[2]@4" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        source.close()
