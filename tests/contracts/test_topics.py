"""Topics are created the same way by every stage, and existing ones are never changed."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from contracts.errors import BrokerError
from contracts.settings import Settings, SettingsError
from contracts.topics import ensure_topics, topic_layout
from semsearch.embedded.broker import free_port


def test_ensure_topics_is_idempotent(bootstrap: str, topic_prefix: str) -> None:
    topics = {f"{topic_prefix}.a": 3, f"{topic_prefix}.b": 1}
    ensure_topics(bootstrap, topics)
    ensure_topics(bootstrap, topics)  # existing topics are left alone, no error
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert {name: len(metadata.topics[name].partitions) for name in topics} == topics


def test_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(BrokerError, match="KAFKA_BOOTSTRAP_SERVERS"):
        ensure_topics(f"127.0.0.1:{port}", {"x": 1}, timeout_s=1.0)


def test_layout_splits_only_the_docs_topic() -> None:
    settings = Settings(docs_topic="d", control_topic="c", dlq_topic="q", docs_partitions=5)
    assert topic_layout(settings) == {"d": 5, "c": 1, "q": 1}
    assert topic_layout(Settings())["docs"] == 3


def test_bad_partition_setting_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMSEARCH_DOCS_PARTITIONS", "zero")
    with pytest.raises(SettingsError, match="SEMSEARCH_DOCS_PARTITIONS"):
        Settings.from_env()
