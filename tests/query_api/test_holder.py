"""IndexHolder, the composition, against a real embedded Redis and real snapshots: flips,
refusals, outages, NRT and drift as a request sees them (the parts: test_watcher, test_loader,
test_refresher, test_serving)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from migration_models import incident_variant, make_variant
from tests_support import wait_until

from contracts.documents import Document
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from query_api.holder import IndexHolder
from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    wait_until(condition, timeout_s, "the holder", poll_s=0.01)
    return time.monotonic() - started


def invalid_count(holder: IndexHolder, reason: str) -> float:
    value = holder.metrics.registry.get_sample_value("semsearch_pointer_invalid_total", {"reason": reason})
    return value or 0.0


def test_not_ready_until_an_index_is_loaded(holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document) -> None:
    holder.poll_once()
    assert holder.current is None and not holder.ready
    assert holder.status()["redis"]["up"] is True
    build_index("idx-a")
    assert pointer.set_if_unset("idx-a")
    holder.poll_once()
    assert holder.ready
    serving = holder.current
    assert serving is not None and serving.index_id == "idx-a" and serving.generation == 1
    assert holder.status()["pointer"] == "idx-a"


def test_flip_loads_the_new_index_before_swapping_and_reuses_the_model(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document
) -> None:
    build_index("idx-a")
    build_index("idx-b", docs=[extra_doc])
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    old = holder.current
    assert old is not None
    assert pointer.compare_and_set("idx-a", "idx-b")
    holder.poll_once()
    new = holder.current
    assert new is not None and new.index_id == "idx-b"
    assert [h.doc_id for h in new.index.search("antibiotic resistance", k=1)] == ["d11"]
    # A request that took the old Serving before the swap still completes on it.
    assert old.index.search("vitamin d bones", k=1)[0].doc_id == "d1"
    assert new.index.model is old.index.model, "same fingerprint must not reload the weights"


BAD_POINTERS = ("../escape", "ABSOLUTE", "idx-a/../../escape", "idx-a/../idx-b", "..", "idx-a\n", "")


def test_pointer_escaping_the_data_root_is_refused(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document,
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    index, _ = build_index("idx-a")
    build_index("idx-b", docs=[extra_doc])
    escape = settings.data_dir / "escape"
    SnapshotStore(escape).write(index)  # a perfectly loadable index, outside indexes/
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    for count, raw in enumerate(BAD_POINTERS, start=1):
        value = str(escape.resolve()) if raw == "ABSOLUTE" else raw
        pointer.client.set(settings.pointer_key, value)  # a hostile writer, bypassing validation
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="query_api.holder"):
            holder.poll_once()
            holder.poll_once()
        serving = holder.current
        assert serving is not None and serving.index_id == "idx-a", f"{value!r} must not be served"
        assert invalid_count(holder, "invalid_id") == count, f"{value!r} counted once"
        assert "not an index id" in (holder.last_error or ""), value
        assert sum("refusing to serve" in r.message for r in caplog.records) == 1, value


def test_symlink_out_of_the_data_root_is_refused(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document, settings: Settings
) -> None:
    index, _ = build_index("idx-a")
    outside = settings.data_dir.parent / "elsewhere"
    SnapshotStore(outside).write(index)
    (settings.indexes_dir / "sneaky").symlink_to(outside, target_is_directory=True)
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    assert pointer.compare_and_set("idx-a", "sneaky")  # a valid id; its directory escapes
    holder.poll_once()
    assert holder.current is not None and holder.current.index_id == "idx-a"
    assert "outside" in (holder.last_error or "")


def test_unknown_index_keeps_the_old_one_until_it_appears(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    assert pointer.compare_and_set("idx-a", "idx-later")
    for _ in range(3):
        holder.poll_once()
    assert holder.current is not None and holder.current.index_id == "idx-a"
    assert invalid_count(holder, "unknown_index") == 1
    assert "idx-later" in (holder.last_error or "")
    build_index("idx-later", docs=[extra_doc])
    holder.poll_once()
    assert holder.current is not None and holder.current.index_id == "idx-later"
    assert holder.last_error is None


def test_index_built_with_another_model_is_refused(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document
) -> None:
    build_index("idx-a")
    _, store = build_index("idx-other")
    manifest_path = store.root / "gen-000001" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["fingerprint"] = "0" * 64
    manifest["model"]["source"] = "/nonexistent/model"
    manifest_path.write_text(json.dumps(manifest))
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    assert pointer.compare_and_set("idx-a", "idx-other")
    holder.poll_once()
    assert holder.current is not None and holder.current.index_id == "idx-a"
    assert invalid_count(holder, "model_mismatch") == 1
    assert "000000000000" in (holder.last_error or ""), "the error must name the index's model"


def test_redis_outage_keeps_serving_and_is_reported(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document, redis_server: EmbeddedRedis
) -> None:
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    redis_server.stop()
    holder.poll_once()
    status = holder.status()
    assert status["ready"] is True and status["index_id"] == "idx-a"
    assert status["redis"]["up"] is False and status["redis"]["error"]
    assert holder.metrics.registry.get_sample_value("semsearch_redis_up") == 0.0
    assert holder.current is not None
    assert holder.current.index.search("vitamin d", k=1)[0].doc_id == "d1"
    with start_embedded_redis(redis_server.directory) as revived:  # same socket, same data
        assert revived.url == redis_server.url
        holder.poll_once()
        assert holder.status()["redis"]["up"] is True
        assert holder.metrics.registry.get_sample_value("semsearch_redis_up") == 1.0
        holder.stop()


def test_new_generations_are_visible_within_a_second(
    holder: IndexHolder, pointer: Pointer, build_index: BuildIndex, extra_doc: Document
) -> None:
    writer, store = build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.start()
    wait_for(lambda: holder.ready, 30)
    served = holder.current
    assert served is not None
    writer.apply([extra_doc])
    store.write(writer, {"docs": {0: 11}})
    written = time.monotonic()
    # The open index takes the new rows a moment before the holder publishes the Serving of
    # generation 2 (see query_api.serving), so "published" is the condition to wait on.
    wait_for(lambda: holder.current is not None and holder.current.generation == 2, 5)
    visible_after = time.monotonic() - written
    assert visible_after < 1.0, f"visible after {visible_after:.3f}s"
    current = holder.current
    assert current is not None and current.index.get("d11") is not None
    assert current.index is served.index, "a refresh updates the open index; it does not reload it"
    assert current.manifest.offsets == {"docs": {0: 11}}
    assert [h.doc_id for h in current.index.search("antibiotics", k=1, mode="bm25")] == ["d11"]


def test_pointer_notification_flips_without_waiting_for_the_poll(
    settings: Settings, pointer: Pointer, build_index: BuildIndex, extra_doc: Document
) -> None:
    build_index("idx-a")
    build_index("idx-b", docs=[extra_doc])
    pointer.set_if_unset("idx-a")
    slow_poll = IndexHolder(settings.with_overrides(refresh_ms=20_000), use_default_index=False)
    try:
        slow_poll.poll_once()
        slow_poll.start()
        # The watcher is subscribed (and so inside its 20 s wait) once Redis counts a subscriber.
        wait_until(
            lambda: any(count > 0 for _, count in pointer.client.pubsub_numsub(pointer.channel)),
            30,
            "the watcher to subscribe to pointer notifications",
        )
        assert pointer.compare_and_set("idx-a", "idx-b")
        took = wait_for(lambda: slow_poll.current is not None and slow_poll.current.index_id == "idx-b", 10)
        assert took < 5.0
    finally:
        slow_poll.stop()


def test_unset_pointer_serves_the_configured_models_index(
    settings: Settings, build_index: BuildIndex, extra_doc: Document, model: object
) -> None:
    index_id = model.index_id  # type: ignore[attr-defined]
    build_index(index_id)
    fallback = IndexHolder(settings)
    try:
        fallback.poll_once()
        assert fallback.current is not None and fallback.current.index_id == index_id
        assert fallback.current.origin == "default"
    finally:
        fallback.stop()



def test_a_model_drifting_under_the_process_stops_being_served(
    settings: Settings, pointer: Pointer, embedding_cache: EmbeddingCache, extra_doc: Document, tmp_path: Path
) -> None:
    """indexer.drift.DriftMonitor re-proves the served model every drift_check_s; on "no" the
    API stops answering (rather than search another space) and says so in status and metrics."""
    models = tmp_path / "models"
    variant = make_variant(models, "all-minilm-l6-v2")  # its own copy: the test changes it
    configured = settings.with_overrides(model=str(variant), drift_check_s=0.0)
    built = EmbeddingModel(variant)
    index = Index.create(built, configured, embedding_cache)
    index.apply([extra_doc])
    SnapshotStore(index_dir(configured, index.index_id)).write(index)
    pointer.set_if_unset(index.index_id)
    holder = IndexHolder(configured, use_default_index=False)
    try:
        holder.poll_once()
        serving = holder.current
        assert serving is not None and serving.index_id == index.index_id
        mismatch = {"index_id": index.index_id}
        assert holder.metrics.registry.get_sample_value("semsearch_model_mismatch", mismatch) == 0.0
        holder.poll_once()
        assert holder.current is serving, "a model that still matches keeps being served"
        other = EmbeddingModel(incident_variant(models))
        serving.index.model._model[0].processor = other._model[0].processor  # the library changed
        holder.poll_once()
        assert holder.current is None
        assert "model_mismatch" in (holder.last_error or "")
        assert invalid_count(holder, "model_mismatch") == 1
        assert holder.metrics.registry.get_sample_value("semsearch_model_mismatch", mismatch) == 1.0
        assert not list((serving.store.root / "pins").glob("*.*.*")), "its pin is released"
    finally:
        holder.stop()
