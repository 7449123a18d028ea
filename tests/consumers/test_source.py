"""KafkaSource: batches bounded by count and window, positions seeded from a snapshot's offsets."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Producer

from consumers.source import KafkaSource
from contracts.settings import Settings


def _produce(bootstrap: str, topic: str, partition: int, count: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=partition)
    assert producer.flush(10) == 0


def _collect(source: KafkaSource, expect: int, timeout_s: float = 30) -> list[list[str]]:
    batches: list[list[str]] = []
    deadline = time.monotonic() + timeout_s
    while sum(map(len, batches)) < expect and time.monotonic() < deadline:
        batch = source.poll_batch(0.2)
        if batch:
            batches.append([(r.value or b"").decode() for r in batch])
    return batches


def test_batches_respect_max_events_and_positions_track_offsets(bootstrap: str, stream_settings: Settings) -> None:
    topic = stream_settings.docs_topic
    _produce(bootstrap, topic, 0, 7)
    _produce(bootstrap, topic, 2, 3)
    source = KafkaSource(bootstrap, "g-batches", [topic], window_ms=200, max_events=4)
    try:
        batches = _collect(source, 10)
        assert all(len(b) <= 4 for b in batches)
        values = [v for b in batches for v in b]
        assert sorted(values) == sorted([f"v{i}" for i in range(7)] + [f"v{i}" for i in range(3)])
        assert [v for v in values if v in {"v3", "v4", "v5", "v6"}] == ["v3", "v4", "v5", "v6"]  # in order
        assert source.positions == {topic: {0: 7, 2: 3}}
        assert source.poll_batch(0.2) == []  # idle: returns after the idle timeout, empty
    finally:
        source.close()


def test_window_gathers_events_that_arrive_shortly_after_the_first(bootstrap: str, stream_settings: Settings) -> None:
    topic = stream_settings.docs_topic
    source = KafkaSource(bootstrap, "g-window", [topic], window_ms=1500, max_events=100)
    try:
        assert source.wait_for_assignment(30)
        _produce(bootstrap, topic, 1, 1)
        # A second event 0.5 s later lands in the same batch: the window is still open.
        later = threading.Timer(0.5, _produce, args=(bootstrap, topic, 1, 1, 1))
        later.start()
        started = time.monotonic()
        batch = source.poll_batch(10)
        later.join()
        assert [(r.value or b"").decode() for r in batch] == ["v0", "v1"]
        assert 0.4 < time.monotonic() - started < 5
    finally:
        source.close()


def test_assignment_seeks_to_the_snapshot_offsets(bootstrap: str, stream_settings: Settings) -> None:
    topic = stream_settings.docs_topic
    _produce(bootstrap, topic, 0, 5)
    _produce(bootstrap, topic, 1, 2)
    source = KafkaSource(bootstrap, "g-seek", [topic], {topic: {0: 3}}, window_ms=50, max_events=100)
    try:
        values = sorted(v for b in _collect(source, 4) for v in b)
        assert values == ["v0", "v1", "v3", "v4"]  # partition 0 from offset 3; partition 1 from 0
        assert source.positions == {topic: {0: 5, 1: 2}}
    finally:
        source.close()
