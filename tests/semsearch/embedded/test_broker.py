"""The embedded Tansu broker: starts on a free port, answers Kafka requests, stops cleanly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from contracts.errors import BrokerError
from contracts.settings import Settings
from contracts.topics import ensure_topics, topic_layout
from semsearch.embedded.broker import EmbeddedBroker, free_port, resolve_bootstrap, wait_until_ready


def test_start_produce_consume_stop(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    with broker:
        assert broker.running
        pid = broker.process.pid if broker.process else None
        ensure_topics(broker.bootstrap, {"roundtrip": 1})
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
        producer.produce("roundtrip", key=b"k", value=b"v", headers=[("h", b"1")])
        assert producer.flush(10) == 0
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g"})
        consumer.assign([TopicPartition("roundtrip", 0, 0)])
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            candidate = consumer.poll(0.2)
            if candidate is not None and candidate.error() is None:
                message = candidate
        consumer.close()
        assert message is not None
        assert (message.key(), message.value(), message.headers()) == (b"k", b"v", [("h", b"1")])
    assert not broker.running
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not left behind
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap


def test_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
        wait_until_ready(f"127.0.0.1:{port}", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_resolve_bootstrap_prefers_the_configured_broker(bootstrap: str) -> None:
    assert resolve_bootstrap(Settings(kafka_bootstrap=bootstrap)) == (bootstrap, None)


def test_resolve_bootstrap_starts_an_embedded_broker_with_the_topics(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, docs_topic="d", control_topic="c", dlq_topic="q", docs_partitions=2)
    address, broker = resolve_bootstrap(settings)
    assert broker is not None
    try:
        metadata = AdminClient({"bootstrap.servers": address}).list_topics(timeout=10)
        assert {n: len(metadata.topics[n].partitions) for n in ("d", "c", "q")} == {"d": 2, "c": 1, "q": 1}
        assert topic_layout(settings) == {"d": 2, "c": 1, "q": 1}
    finally:
        broker.stop()
    assert not broker.running
