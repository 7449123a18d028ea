"""Each generation records the Kafka timestamp of the newest event it contains (issue 11 part 6):
GET /index turns it into the age of the freshest searchable event, so it must be exactly the
newest timestamp among the records behind the offsets, and survive a restart of the indexer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.worker import IndexWorker
from contracts.events import UpsertEvent
from contracts.settings import Settings

from .conftest import Publish, drain


def upsert(n: int) -> UpsertEvent:
    return UpsertEvent(f"doc-{n}", 1, f"Title {n}", f"Document number {n} about vitamin D and bones.", {})


def newest_timestamp(read_topic: Callable[..., list[Any]], topic: str, total: int) -> int:
    return max(message.timestamp()[1] for message in read_topic(topic, total))


def test_newest_event_timestamp_is_recorded_and_survives_reload(
    open_worker: Callable[..., IndexWorker],
    publish: Publish,
    stream_settings: Settings,
    read_topic: Callable[..., list[Any]],
) -> None:
    topic = stream_settings.docs_topic
    worker = open_worker()
    assert worker.store.read_manifest().newest_event_ms is None  # generation 1: nothing consumed
    publish([upsert(n) for n in range(5)])
    drain(worker, 5)
    first = newest_timestamp(read_topic, topic, 5)
    assert worker.newest_event_ms == first
    assert worker.store.read_manifest().newest_event_ms == first  # as written to disk
    worker.close()

    reopened = open_worker()  # resumes the newest generation: the timestamp comes with it
    assert reopened.newest_event_ms == first
    publish([upsert(n) for n in range(5, 8)])
    drain(reopened, 8)
    second = newest_timestamp(read_topic, topic, 8)
    assert second >= first
    manifest = reopened.store.read_manifest()
    assert manifest.newest_event_ms == second == reopened.newest_event_ms
    assert sum(manifest.offsets[topic].values()) == 8
