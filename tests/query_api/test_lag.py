"""GET /index and /metrics report how far the served generation is behind the Kafka log.

Real broker and Redis throughout: events are published, partly indexed by a real IndexWorker,
and the API's background poller reads the log end from the broker. The expected lag is counted
from the records themselves (read back from the topic), not from the code under test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests_support import wait_until

from consumers.worker import IndexWorker
from contracts.events import UpsertEvent
from contracts.pointer import Pointer
from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher
from query_api.app import create_app
from query_api.holder import IndexHolder
from semsearch.embedded.broker import EmbeddedBroker, free_port
from semsearch.embedded.redis import EmbeddedRedis

from .conftest import DOCS

log = logging.getLogger(__name__)
ReadTopic = Callable[..., list[Any]]


def upsert(n: int) -> UpsertEvent:
    doc = DOCS[n % len(DOCS)]
    return UpsertEvent(f"doc-{n}", 1, doc.title, f"{doc.text} (copy {n})", {})


@pytest.fixture
def lag_settings(stream_settings: Settings, redis_server: EmbeddedRedis) -> Settings:
    return stream_settings.with_overrides(redis_url=redis_server.url, refresh_ms=50, lag_poll_s=0.2)


@pytest.fixture
def publisher(bootstrap: str) -> Iterator[Publisher]:
    handle = Publisher(bootstrap)
    yield handle
    handle.close()


def publish(publisher: Publisher, topic: str, events: list[UpsertEvent]) -> None:
    report = publisher.publish_docs(topic, events)
    assert report.failed == 0, report.summary()


def drain(worker: IndexWorker, topic: str, total: int, timeout_s: float = 60.0) -> None:
    """Step until `total` events of the fresh topic are consumed and snapshotted."""
    deadline = time.monotonic() + timeout_s
    while sum(worker.offsets.get(topic, {}).values()) < total or worker.dirty:
        assert time.monotonic() < deadline, f"worker consumed {worker.offsets} of {total} in {timeout_s}s"
        worker.step()


def index_info(client: TestClient) -> dict[str, Any]:
    """GET /index once it is served (503 while the holder loads); the last one is logged."""
    response = client.get("/index")
    info = response.json() if response.status_code == 200 else {"lag": client.get("/readyz").text}
    log.info("GET /index: %s", {k: info.get(k) for k in ("generation", "offsets", "lag", "lag_error")})
    return info


def expected_lag(read_topic: ReadTopic, topic: str, total: int, offsets: dict[int, int]) -> dict[str, int]:
    """Per partition: the records at or past the generation's offset, counted from the log."""
    behind = {p: 0 for p in range(3)}
    for message in read_topic(topic, total):
        if message.offset() >= offsets.get(message.partition(), 0):
            behind[message.partition()] += 1
    return {str(p): n for p, n in behind.items()}


def test_lag_per_partition_then_zero_after_catching_up(
    lag_settings: Settings,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    bootstrap: str,
    publisher: Publisher,
    read_topic: ReadTopic,
) -> None:
    topic = lag_settings.docs_topic
    worker = IndexWorker.open(model, lag_settings, bootstrap=bootstrap, cache=cache, group_id=lag_settings.group_id)
    assert lag_settings.redis_url
    pointer = Pointer.from_url(lag_settings.redis_url, lag_settings.pointer_key)
    try:
        publish(publisher, topic, [upsert(n) for n in range(6)])
        drain(worker, topic, 6)
        indexed = dict(worker.offsets[topic])
        publish(publisher, topic, [upsert(n) for n in range(6, 15)])  # published, not indexed
        want = expected_lag(read_topic, topic, 15, indexed)
        assert sum(want.values()) == 9

        pointer.set_if_unset(model.index_id)
        holder = IndexHolder(lag_settings, use_default_index=False)
        holder.poll_once()  # loaded here: on a busy machine the load can outlast the waits below
        assert holder.ready, holder.status()
        with TestClient(create_app(lag_settings, holder)) as client:  # lifespan: holder + poller
            info = wait_until(
                lambda: (i := index_info(client))["lag"] == {topic: want} and i,
                30,
                f"GET /index to report lag {want}",
            )
            assert info["offsets"] == {topic: {str(p): o for p, o in indexed.items()}}
            assert info["lag_error"] is None and 0 <= info["lag_read_age_s"] < 30
            newest = worker.store.read_manifest().newest_event_ms
            assert newest is not None and info["newest_event_at"] == newest / 1000
            assert 0 <= info["newest_event_age_s"] < 120
            metrics = client.get("/metrics").text
            for partition, behind in want.items():
                assert (
                    f'semsearch_index_lag_events{{partition="{partition}",topic="{topic}"}} {float(behind)}'
                    in metrics
                )
            assert "semsearch_index_lag_known 1.0" in metrics
            assert "semsearch_index_newest_event_age_seconds " in metrics

            drain(worker, topic, 15)  # the indexer catches up; the API refreshes to it
            caught_up = wait_until(
                lambda: (i := index_info(client))["lag"] == {topic: {"0": 0, "1": 0, "2": 0}} and i,
                30,
                "GET /index to report lag 0 after catching up",
            )
            assert caught_up["generation"] > info["generation"]
            assert caught_up["newest_event_at"] >= info["newest_event_at"]
            assert sum(int(o) for o in caught_up["offsets"][topic].values()) == 15
    finally:
        pointer.close()
        worker.close(final_snapshot=False)


def test_broker_down_makes_lag_unknown_and_search_keeps_working(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    model: EmbeddingModel,
    cache: EmbeddingCache,
) -> None:
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    try:
        topic, address = "lag-down.docs", broker.bootstrap
        ensure_topics(broker.bootstrap, {topic: 1})
        own = Publisher(broker.bootstrap)
        try:
            assert own.publish_docs(topic, [upsert(n) for n in range(5)]).failed == 0
        finally:
            own.close()
        settings = Settings(
            data_dir=tmp_path / "data",
            redis_url=redis_server.url,
            kafka_bootstrap=broker.bootstrap,
            docs_topic=topic,
            lag_poll_s=0.2,
        )
        index = Index.create(model, settings, cache)
        index.apply(DOCS[:3])
        SnapshotStore(index_dir(settings, index.index_id)).write(index, {topic: {0: 3}})
        holder = IndexHolder(settings, use_default_index=False)
        pointer = Pointer.from_url(redis_server.url, settings.pointer_key)
        pointer.set_if_unset(index.index_id)
        pointer.close()
        client = TestClient(create_app(settings, holder))  # no lifespan: the test drives the poll
        holder.poll_once()
        holder.lag_poller.poll_once()
        info = client.get("/index").json()
        assert info["lag"] == {topic: {"0": 2}} and info["lag_error"] is None
        # An old manifest (no newest_event_ms): the age is unknown, not an error.
        assert info["newest_event_at"] is None and info["newest_event_age_s"] is None
    finally:
        broker.stop()

    started = time.monotonic()
    holder.lag_poller.poll_once()  # the broker is gone: bounded by the probe timeout
    assert time.monotonic() - started < holder.lag_poller.probe_timeout_s + 5
    info = client.get("/index")
    assert info.status_code == 200
    assert info.json()["lag"] is None and info.json()["lag_read_age_s"] is None
    assert "lag unknown" in info.json()["lag_error"] and address in info.json()["lag_error"]
    hits = client.get("/search", params={"q": "vitamin d bones"})
    assert hits.status_code == 200 and hits.json()["results"][0]["doc_id"] == "d1"
    metrics = client.get("/metrics").text
    assert "semsearch_index_lag_known 0.0" in metrics
    assert "semsearch_index_lag_events{" not in metrics
    holder.stop()


def test_lag_is_unknown_with_a_reason_without_a_broker_setting(
    settings: Settings, holder: IndexHolder, pointer: Pointer, build_index: Callable[..., object]
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    info = TestClient(create_app(settings, holder)).get("/index").json()
    assert info["lag"] is None and "KAFKA_BOOTSTRAP_SERVERS" in info["lag_error"]
    off = IndexHolder(settings.with_overrides(kafka_bootstrap="127.0.0.1:1", lag_poll_s=0), use_default_index=False)
    off.poll_once()
    lag = off.lag()
    assert lag is not None and lag.events is None and "SEMSEARCH_LAG_POLL_S=0" in str(lag.reason)
    off.stop()
