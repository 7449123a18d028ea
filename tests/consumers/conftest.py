"""Helpers for pipeline tests: publish events, run a worker until it has consumed what was sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from consumers.worker import IndexWorker, StepReport
from contracts.events import DocEvent
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.model import EmbeddingModel
from producers.publisher import Publisher

Publish = Callable[[Sequence[DocEvent]], None]


@pytest.fixture
def publish(bootstrap: str, stream_settings: Settings) -> Iterator[Publish]:
    publisher = Publisher(bootstrap)

    def send(events: Sequence[DocEvent]) -> None:
        before = publisher.report.delivered
        report = publisher.publish_docs(stream_settings.docs_topic, events)
        assert report.failed == 0, report.summary()
        assert report.delivered - before == len(events)

    yield send
    publisher.close()


@pytest.fixture
def open_worker(
    model: EmbeddingModel, stream_settings: Settings, bootstrap: str, cache: EmbeddingCache
) -> Iterator[Callable[..., IndexWorker]]:
    """IndexWorker.open with the test's settings; every worker opened is closed at teardown."""
    opened: list[IndexWorker] = []

    def make(settings: Settings | None = None, **kwargs: object) -> IndexWorker:
        settings = settings or stream_settings
        kwargs.setdefault("group_id", settings.group_id)  # as run_indexer does: one group per test
        worker = IndexWorker.open(model, settings, bootstrap=bootstrap, cache=cache, **kwargs)  # type: ignore[arg-type]
        opened.append(worker)
        return worker

    yield make
    for worker in opened:
        worker.close(final_snapshot=False)


def consumed(worker: IndexWorker) -> int:
    """Events consumed so far on a fresh test topic (offsets start at 0 in every partition)."""
    return sum(offset for parts in worker.offsets.values() for offset in parts.values())


def drain(worker: IndexWorker, total: int, timeout_s: float = 60.0) -> list[StepReport]:
    """Step until `total` events are consumed, then until they are in a snapshot."""
    reports: list[StepReport] = []
    deadline = time.monotonic() + timeout_s
    while consumed(worker) < total or worker.dirty:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumed {consumed(worker)} of {total} events in {timeout_s}s")
        reports.append(worker.step())
    return reports
