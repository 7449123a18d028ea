"""The pipeline end to end against the embedded broker: events in, exactly the latest state out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY
from tests_support import chunk_ids_consistent, wait_until

from consumers.dead_letter import read_dead_letter
from consumers.worker import CLUSTER_KEY, IndexWorker
from contracts.documents import Document
from contracts.errors import ModelMismatchError
from contracts.events import DeleteEvent, UpsertEvent
from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher
from semsearch.embedded.broker import EmbeddedBroker

from .conftest import Publish, consumed, drain

TEXTS = {
    "d1": ("Vitamin D", "Vitamin D deficiency is associated with bone loss and fractures."),
    "d2": ("Heart disease", "Statins lower LDL cholesterol and reduce cardiovascular events."),
    "d3": ("Sleep", "Short sleep duration impairs memory consolidation in adolescents."),
    "d4": ("Malaria", "Artemisinin resistance in Plasmodium falciparum is spreading in Asia."),
    "d5": ("Diabetes", "Metformin improves insulin sensitivity in type 2 diabetes patients."),
    "d6": ("Exercise", "Aerobic exercise increases hippocampal volume in older adults."),
    "d7": ("Invoice", "Invoice INV-2024-00917 for ACME GmbH is overdue; please pay soon."),
    "d8": ("Invoice", "Invoice INV-2024-00918 for Globex was paid in full last week."),
    "d9": ("Smoking", "Smoking cessation lowers the risk of lung cancer within a decade."),
    "d10": ("Coffee", "Moderate coffee intake is linked to lower mortality in cohorts."),
    "d11": ("Antibiotics", "Overuse of antibiotics drives resistant bacterial infections."),
    "d12": ("Obesity", "Bariatric surgery produces durable weight loss in severe obesity."),
}


def upsert(doc_id: str, version: int, text: str | None = None) -> UpsertEvent:
    title, body = TEXTS[doc_id]
    return UpsertEvent(doc_id, version, title, text or body, {"v": version})


def state(index: Index) -> dict[str, tuple[int, str, int]]:
    return {r.doc_id: (r.version, r.text, len(r.chunks)) for r in index.documents}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def assert_same_as_clean_build(index: Index, expected: list[Document], model: EmbeddingModel, settings: Settings) -> None:
    """The streamed index equals an index built in one go from the final documents."""
    clean = Index.create(model, settings)  # no cache: vectors are computed afresh
    clean.apply(expected)
    assert state(index) == state(clean)
    assert index.count().documents == clean.count().documents
    assert index.count().chunks == clean.count().chunks
    assert chunk_ids_consistent(index), "a chunk is missing from, or duplicated in, a leg of the index"
    for record in clean.documents:
        mine = index.get(record.doc_id)
        assert mine is not None and mine.metadata == record.metadata
        got = index.vectors.vectors_of([c.chunk_id for c in mine.chunks])
        want = clean.vectors.vectors_of([c.chunk_id for c in record.chunks])
        np.testing.assert_allclose(
            np.vstack([got[c.chunk_id] for c in mine.chunks]),
            np.vstack([want[c.chunk_id] for c in record.chunks]),
            atol=1e-5,
        )
    for query in ("vitamin deficiency and bones", "INV-2024-00918", "weight loss surgery"):
        assert [h.doc_id for h in index.search(query, k=5)] == [h.doc_id for h in clean.search(query, k=5)]


def test_updates_deletes_out_of_order_and_duplicates_end_in_the_latest_state(
    open_worker: Callable[..., IndexWorker], publish: Publish, model: EmbeddingModel, stream_settings: Settings
) -> None:
    worker = open_worker()
    assert worker.group_id == stream_settings.group_id
    # Without an explicit group (shadow builds, rollback targets) each index has its own.
    other = stream_settings.with_overrides(data_dir=stream_settings.data_dir / "other")
    assert open_worker(other, group_id=None).group_id == f"semsearch-{model.index_id}"
    first = [upsert(doc_id, 1) for doc_id in TEXTS]
    publish(first)
    drain(worker, len(first))
    assert {doc_id: v for doc_id, (v, _, _) in state(worker.index).items()} == dict.fromkeys(TEXTS, 1)

    changes = [
        upsert("d1", 2, "Vitamin D supplements reduce fractures only in deficient older adults."),
        upsert("d1", 2, "a duplicate of version 2 with different text must not win"),
        upsert("d2", 3, "Statins are now generic and cheap."),
        upsert("d3", 5, "Sleep v5: naps do not replace night sleep."),
        upsert("d3", 4, "Sleep v4 arrives late and must be ignored."),
        upsert("d4", 1),  # replay of the original event
        DeleteEvent("d5", 2),
        upsert("d5", 1),  # a late, older upsert must not resurrect it
        DeleteEvent("d6"),  # tombstone: delete whatever is held
        DeleteEvent("d7", 1),  # a delete not newer than the held version is stale
        upsert("d8", 3, "Invoice INV-2024-00918 was refunded."),
        DeleteEvent("d8", 2),  # older delete arriving after a newer upsert
        upsert("d9", 2, "Smoking v2"),
        DeleteEvent("d9", 3),
        upsert("d9", 4, "Smoking v4: back after its deletion with a newer version."),
    ]
    publish(changes)
    drain(worker, len(first) + len(changes))

    final = {
        "d1": (2, "Vitamin D supplements reduce fractures only in deficient older adults."),
        "d2": (3, "Statins are now generic and cheap."),
        "d3": (5, "Sleep v5: naps do not replace night sleep."),
        "d4": (1, TEXTS["d4"][1]),
        "d7": (1, TEXTS["d7"][1]),
        "d8": (3, "Invoice INV-2024-00918 was refunded."),
        "d9": (4, "Smoking v4: back after its deletion with a newer version."),
        "d10": (1, TEXTS["d10"][1]),
        "d11": (1, TEXTS["d11"][1]),
        "d12": (1, TEXTS["d12"][1]),
    }
    expected = [Document(d, TEXTS[d][0], text, v, {"v": v}) for d, (v, text) in final.items()]
    assert {d: (v, t) for d, (v, t, _) in state(worker.index).items()} == final
    assert_same_as_clean_build(worker.index, expected, model, stream_settings)
    # The newest snapshot holds exactly the same, with the offsets of everything consumed.
    reloaded, manifest = worker.store.load(model, stream_settings)
    assert state(reloaded) == state(worker.index)
    assert sum(o for parts in manifest.offsets.values() for o in parts.values()) == len(first) + len(changes)
    assert set(manifest.offsets) == {stream_settings.docs_topic}


def test_the_same_changes_in_one_batch_give_the_same_state(
    open_worker: Callable[..., IndexWorker], publish: Publish, model: EmbeddingModel, stream_settings: Settings
) -> None:
    """Within one batch apply() dedupes per document; the outcome must not depend on batching."""
    events = [
        upsert("d1", 1),
        upsert("d1", 3, "third"),
        upsert("d1", 2, "second, late"),
        upsert("d2", 1),
        DeleteEvent("d2", 2),
        upsert("d2", 1),
        upsert("d3", 1),
        upsert("d3", 1),
        upsert("d4", 1),
        upsert("d4", 2, "d4 v2"),
        DeleteEvent("d4"),  # tombstone: deletes v2 ...
        upsert("d4", 2, "d4 v2"),  # ... so a replay of v2 must stay deleted
    ]
    publish(events)
    worker = open_worker()
    drain(worker, len(events))
    assert {d: (v, t) for d, (v, t, _) in state(worker.index).items()} == {
        "d1": (3, "third"),
        "d3": (1, TEXTS["d3"][1]),
    }
    assert chunk_ids_consistent(worker.index)


def test_poison_events_go_to_the_dlq_with_their_reason_and_the_pipeline_continues(
    open_worker: Callable[..., IndexWorker],
    publish: Publish,
    stream_settings: Settings,
    bootstrap: str,
    read_topic: Callable[..., list],
) -> None:
    settings = stream_settings.with_overrides(max_doc_bytes=600)
    worker = open_worker(settings)
    index_id = worker.index.index_id
    dead_before = metric("semsearch_events_total", index_id=index_id, outcome="dead_lettered")
    producer = Producer({"bootstrap.servers": bootstrap})
    poison = {
        b"bad-json": (b"bad-json", b'{"op": "upsert", "doc_id": '),
        b"no-text": (b"no-text", b'{"op": "upsert", "doc_id": "no-text", "version": 1}'),
        b"bad-version": (b"bad-version", b'{"op": "upsert", "doc_id": "bad-version", "version": "x", "text": "t"}'),
        b"empty": (b"empty", b'{"op": "upsert", "doc_id": "empty", "version": 1, "title": "", "text": "   "}'),
        b"huge": (b"huge", b'{"op": "upsert", "doc_id": "huge", "version": 1, "text": "' + b"y" * 1000 + b'"}'),
        b"not-utf8": (b"not-utf8", b"\xff\xfe\x00"),
        b"mismatch": (b"mismatch", b'{"op": "upsert", "doc_id": "other", "version": 1, "text": "t"}'),
        b"bad-op": (b"bad-op", b'{"op": "merge", "doc_id": "bad-op", "version": 1, "text": "t"}'),
    }
    publish([upsert("d1", 1), upsert("d2", 1)])
    for key, value in poison.values():
        producer.produce(settings.docs_topic, key=key, value=value)
    producer.produce(settings.docs_topic, key=None, value=None)  # a tombstone without a key
    assert producer.flush(10) == 0
    publish([upsert("d3", 1), upsert("d4", 1)])
    total = 2 + len(poison) + 1 + 2
    drain(worker, total)

    assert sorted(state(worker.index)) == ["d1", "d2", "d3", "d4"]
    letters = [read_dead_letter(m) for m in read_topic(settings.dlq_topic, len(poison) + 1)]
    assert len(letters) == len(poison) + 1
    by_key = {letter.key: letter for letter in letters}
    for key, (_, value) in poison.items():
        letter = by_key[key]
        assert letter.value == value  # the original record, unchanged, for replay after a fix
        assert letter.topic == settings.docs_topic and letter.offset >= 0 and letter.partition >= 0
        assert letter.index_id == index_id
    assert "not valid JSON" in by_key[b"bad-json"].reason
    assert "'text' is missing" in by_key[b"no-text"].reason
    assert "'version' must be a non-negative integer" in by_key[b"bad-version"].reason
    assert "no text to index" in by_key[b"empty"].reason
    assert "over the 600-byte limit" in by_key[b"huge"].reason
    assert "not UTF-8" in by_key[b"not-utf8"].reason
    assert "differs from doc_id" in by_key[b"mismatch"].reason
    assert "'op' must be" in by_key[b"bad-op"].reason
    assert "without a key" in by_key[None].reason
    assert metric("semsearch_events_total", index_id=index_id, outcome="dead_lettered") - dead_before == len(poison) + 1
    # Offsets moved past the poison: a restart does not dead-letter them a second time.
    assert sum(o for parts in worker.snapshot_offsets.values() for o in parts.values()) == total


def test_restart_resumes_from_the_snapshot_offsets_without_reapplying(
    open_worker: Callable[..., IndexWorker], publish: Publish, model: EmbeddingModel, stream_settings: Settings
) -> None:
    first = open_worker()
    publish([upsert(f"d{i}", 1) for i in range(1, 7)])
    drain(first, 6)
    first.close()  # clean stop
    generation = first.generation

    publish([upsert("d7", 1), upsert("d8", 1), upsert("d1", 2, "Vitamin D, revised.")])
    second = open_worker()
    assert second.generation == generation
    assert len(second.index.documents) == 6
    reports = drain(second, 9)
    applied = [r.apply for r in reports if r.apply is not None]
    assert sum(r.events for r in reports) == 3  # only what the snapshot did not contain
    assert sum(a.upserted for a in applied) == 3 and sum(a.stale for a in applied) == 0
    assert state(second.index)["d1"][:2] == (2, "Vitamin D, revised.")
    assert len(second.index.documents) == 8
    assert chunk_ids_consistent(second.index)


def test_a_crash_before_the_snapshot_replays_those_events_harmlessly(
    open_worker: Callable[..., IndexWorker],
    publish: Publish,
    model: EmbeddingModel,
    stream_settings: Settings,
    cache: EmbeddingCache,
) -> None:
    settings = stream_settings.with_overrides(snapshot_interval_ms=3_600_000, snapshot_events=10_000)
    first = open_worker(settings)
    publish([upsert(f"d{i}", 1) for i in range(1, 5)])
    while consumed(first) < 4:
        first.step()
    assert first.dirty and first.generation == 1  # applied in memory, never snapshotted
    first.close(final_snapshot=False)  # what kill -9 leaves behind

    embedded_before = cache.count(model.info.fingerprint)
    second = open_worker(settings)
    assert len(second.index.documents) == 0
    reports = drain(second, 4)
    assert sum(r.events for r in reports) == 4
    assert sorted(state(second.index)) == ["d1", "d2", "d3", "d4"]
    # The embeddings survived the crash in the cache: nothing is embedded twice.
    assert sum(r.apply.chunks_embedded for r in reports if r.apply) == 0
    assert cache.count(model.info.fingerprint) == embedded_before


def test_shadow_worker_tails_from_given_offsets(
    open_worker: Callable[..., IndexWorker],
    publish: Publish,
    model: EmbeddingModel,
    stream_settings: Settings,
    bootstrap: str,
    tmp_path: Path,
) -> None:
    live = open_worker()
    publish([upsert(f"d{i}", 1) for i in range(1, 5)])
    drain(live, 4)
    offsets = live.snapshot_offsets

    # A shadow index bootstrapped from the live index's document table, in its own directory.
    shadow_settings = stream_settings.with_overrides(data_dir=tmp_path / "shadow")
    shadow_index = Index.create(model, shadow_settings)
    shadow_index.apply(
        [Document(r.doc_id, r.title, r.text, r.version, r.metadata) for r in live.index.documents]
    )
    shadow = IndexWorker.from_index(
        shadow_index, shadow_settings, bootstrap=bootstrap, start_offsets=offsets, group_id="shadow-test"
    )
    try:
        assert shadow.store.root == index_dir(shadow_settings, model.index_id)
        publish([upsert("d5", 1), DeleteEvent("d1", 2)])
        reports = drain(shadow, 6)
        assert sum(r.events for r in reports) == 2  # only the tail, not the bootstrap events
        assert sorted(state(shadow.index)) == ["d2", "d3", "d4", "d5"]
        manifest = SnapshotStore(shadow.store.root).read_manifest()
        assert sum(o for parts in manifest.offsets.values() for o in parts.values()) == 6
    finally:
        shadow.close()


def test_run_stops_on_the_event_with_a_final_snapshot(
    open_worker: Callable[..., IndexWorker], publish: Publish, stream_settings: Settings
) -> None:
    settings = stream_settings.with_overrides(snapshot_interval_ms=3_600_000)
    worker = open_worker(settings)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    publish([upsert("d1", 1), upsert("d2", 1)])
    wait_until(lambda: consumed(worker) >= 2, 60, "the running worker to consume 2 events")
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    manifest = worker.store.read_manifest()
    assert manifest.counts["documents"] == 2
    assert sum(o for parts in manifest.offsets.values() for o in parts.values()) == 2


def test_lag_per_partition_and_metrics(
    open_worker: Callable[..., IndexWorker], publish: Publish, stream_settings: Settings
) -> None:
    settings = stream_settings.with_overrides(batch_max_events=1, snapshot_interval_ms=3_600_000)
    publish([upsert(f"d{i}", 1) for i in range(1, 7)])
    worker = open_worker(settings)
    while consumed(worker) == 0:
        worker.step()
    lags = worker.source.lag()
    assert set(lags) == {(settings.docs_topic, p) for p in range(3)}
    assert sum(lags.values()) == 6 - consumed(worker) == 5
    index_id = worker.index.index_id
    for (topic, partition), lag in lags.items():
        assert metric("semsearch_consumer_lag", index_id=index_id, topic=topic, partition=str(partition)) == lag
    while consumed(worker) < 6:
        worker.step()
    assert not worker.caught_up()  # consumed, but not yet in a snapshot
    worker.snapshot()
    assert worker.caught_up()
    assert worker.source.lag() == {(settings.docs_topic, p): 0 for p in range(3)}
    assert metric("semsearch_index_documents", index_id=index_id) == 6
    assert metric("semsearch_snapshot_generation", index_id=index_id) == worker.generation
    assert metric("semsearch_snapshot_bytes", index_id=index_id) > 0


def test_a_model_mismatch_refuses_to_resume(
    open_worker: Callable[..., IndexWorker], model: EmbeddingModel, stream_settings: Settings
) -> None:
    worker = open_worker()
    worker.close()
    manifest_path = worker.store.root / f"gen-{worker.generation:06d}" / "manifest.json"
    text = manifest_path.read_text().replace(model.info.fingerprint, "0" * 64)
    manifest_path.write_text(text)
    with pytest.raises(ModelMismatchError):
        open_worker()


def test_offsets_from_another_kafka_cluster_are_not_trusted(
    open_worker: Callable[..., IndexWorker],
    publish: Publish,
    model: EmbeddingModel,
    stream_settings: Settings,
    cache: EmbeddingCache,
    tmp_path: Path,
) -> None:
    """A restarted embedded broker is empty: the index must not wait for offsets it remembers."""
    first = open_worker()
    publish([upsert(f"d{i}", 1) for i in range(1, 6)])
    drain(first, 5)
    first.close()
    assert first.store.read_manifest().extra[CLUSTER_KEY] == first.cluster_id

    with EmbeddedBroker(log_path=tmp_path / "second-broker.log") as second_broker:
        assert second_broker.cluster_id != first.cluster_id
        ensure_topics(second_broker.bootstrap, {stream_settings.docs_topic: 3, stream_settings.dlq_topic: 1})
        with Publisher(second_broker.bootstrap) as publisher:
            publisher.publish_docs(stream_settings.docs_topic, [upsert("d6", 1), upsert("d1", 2, "Vitamin D v2")])
        worker = IndexWorker.open(model, stream_settings, bootstrap=second_broker.bootstrap, cache=cache)
        try:
            assert worker.offsets == {}  # the remembered offsets point into the old log
            drain(worker, 2)
            assert {d: v for d, (v, _, _) in state(worker.index).items()} == {
                "d1": 2, "d2": 1, "d3": 1, "d4": 1, "d5": 1, "d6": 1
            }
            manifest = worker.store.read_manifest()
            assert manifest.extra[CLUSTER_KEY] == second_broker.cluster_id
        finally:
            worker.close()


def test_snapshot_spacing_grows_with_snapshot_cost(
    open_worker: Callable[..., IndexWorker], publish: Publish, stream_settings: Settings
) -> None:
    """Generations of a big index are expensive; writing them must not crowd out embedding."""
    worker = open_worker(stream_settings.with_overrides(snapshot_interval_ms=3_600_000, snapshot_events=10_000))
    publish([upsert("d1", 1)])
    while consumed(worker) < 1:
        worker.step()
    assert worker.dirty and not worker.snapshot_due()
    worker.settings = worker.settings.with_overrides(snapshot_interval_ms=10)
    worker._last_snapshot_seconds = 0.5  # as if the last generation took 0.5 s to write
    worker._last_snapshot = time.monotonic()
    assert not worker.snapshot_due()  # 4 x 0.5 s must pass, not just the 10 ms interval
    worker._last_snapshot -= 2.1
    assert worker.snapshot_due()
    assert worker.maybe_snapshot() is not None and not worker.dirty
