"""`run_indexer` in a thread, against the session broker."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY
from tests_support import wait_until

from consumers.service import run_indexer
from contracts.events import UpsertEvent
from contracts.settings import Settings, SettingsError
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher

_wait_for = wait_until


def _documents_in_latest(store: SnapshotStore) -> int:
    if store.latest_generation() is None:
        return -1
    return int(store.read_manifest().counts["documents"])


def test_run_indexer_until_stop_event(
    stream_settings: Settings, model: EmbeddingModel, bootstrap: str
) -> None:
    settings = stream_settings.with_overrides(
        snapshot_interval_ms=3_600_000, indexer_metrics_port=0  # only the final snapshot
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_indexer(settings, stop)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    store = SnapshotStore(index_dir(settings, model.index_id))
    _wait_for(lambda: store.latest_generation() is not None, 60, "the initial generation")

    def applied() -> float:
        labels = {"index_id": model.index_id, "outcome": "applied"}
        return REGISTRY.get_sample_value("semsearch_events_total", labels) or 0.0

    before = applied()
    with Publisher(bootstrap) as publisher:
        publisher.publish_docs(settings.docs_topic, [UpsertEvent("a", 1, "A", "alpha particles"), UpsertEvent("b", 1, "B", "beta decay")])
    _wait_for(lambda: applied() - before == 2, 60, "both events applied in memory")
    assert store.read_manifest().counts["documents"] == 0  # applied, not yet snapshotted
    stop.set()
    thread.join(60)
    assert not thread.is_alive() and not errors
    manifest = store.read_manifest()
    assert manifest.counts["documents"] == 2
    assert sum(o for parts in manifest.offsets.values() for o in parts.values()) == 2


def test_run_indexer_needs_a_broker_address(model: EmbeddingModel) -> None:
    """Starting an embedded broker is the caller's business (`semsearch index`, `semsearch up`)."""
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS"):
        run_indexer(Settings(), threading.Event())
