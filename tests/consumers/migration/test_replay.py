"""Bounded replay against the real broker: exactly the events in [start, end), nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumers.migration.replay import ReplayError, offsets_in, replay
from consumers.worker import CLUSTER_KEY
from contracts.events import DeleteEvent, UpsertEvent, encode_doc_event
from contracts.offsets import Offsets
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore

from ..conftest import Publish

FIRST = [UpsertEvent.build(f"r{i}", "Replay", f"Replayed document {i}.", 1) for i in range(6)]
SECOND = [DeleteEvent("r0", 2), UpsertEvent.build("r1", "Replay", "Version two.", 2)]


def _state(index: Index) -> dict[str, int]:
    return {r.doc_id: r.version for r in index.documents}


def _ends(messages: list, keys: set[bytes] | None = None) -> Offsets:  # type: ignore[type-arg]
    """Per partition, the offset after the last message (of `keys`, if given)."""
    ends: dict[int, int] = {}
    for m in messages:
        if keys is None or m.key() in keys:
            ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return {messages[0].topic(): ends}


def test_replay_applies_exactly_the_events_between_two_offset_maps(
    model: EmbeddingModel,
    stream_settings: Settings,
    bootstrap: str,
    publish: Publish,
    read_topic: object,
) -> None:
    publish(FIRST)
    messages = read_topic(stream_settings.docs_topic, len(FIRST))  # type: ignore[operator]
    middle = _ends(messages)
    publish(SECOND)
    end = _ends(read_topic(stream_settings.docs_topic, len(FIRST) + len(SECOND)))  # type: ignore[operator]

    index = Index.create(model, stream_settings)
    first = replay(index, bootstrap, {}, middle, timeout_s=60)
    assert (first.events, first.applied.upserted, first.poison) == (6, 6, 0)
    assert first.reached == middle
    assert _state(index) == {f"r{i}": 1 for i in range(6)}

    rest = replay(index, bootstrap, middle, end, timeout_s=60)
    assert (rest.events, rest.applied.upserted, rest.applied.deleted) == (2, 1, 1)
    assert rest.reached == end
    expected = {f"r{i}": 1 for i in range(2, 6)} | {"r1": 2}
    assert _state(index) == expected

    assert replay(index, bootstrap, end, end).events == 0  # nothing to read: no consumer at all
    again = Index.create(model, stream_settings)
    replay(again, bootstrap, {}, end, timeout_s=60)
    assert _state(again) == expected  # one replay or two: the same index


def test_poison_events_are_skipped_and_counted(
    model: EmbeddingModel, stream_settings: Settings, bootstrap: str, read_topic: object
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(stream_settings.docs_topic, key=b"bad", value=b"{not json", partition=0)
    producer.produce(
        stream_settings.docs_topic,
        key=b"ok",
        value=encode_doc_event(UpsertEvent.build("ok", "T", "fine", 1))[1],
        partition=0,
    )
    producer.flush(10)
    end = _ends(read_topic(stream_settings.docs_topic, 2))  # type: ignore[operator]

    index = Index.create(model, stream_settings)
    report = replay(index, bootstrap, {}, end, timeout_s=60)
    assert (report.events, report.poison, report.applied.upserted) == (2, 1, 1)
    assert _state(index) == {"ok": 1}


def test_a_replay_that_cannot_reach_its_end_fails_naming_what_is_missing(
    model: EmbeddingModel, stream_settings: Settings, bootstrap: str
) -> None:
    index = Index.create(model, stream_settings)
    with pytest.raises(ReplayError, match=r"still missing"):
        replay(index, bootstrap, {}, {stream_settings.docs_topic: {0: 5}}, timeout_s=2)


def test_offsets_of_another_cluster_mean_from_the_beginning(
    model: EmbeddingModel, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = SnapshotStore(tmp_path / "index")
    manifest = store.write(Index.create(model, settings), {"docs": {0: 7}}, extra={CLUSTER_KEY: "A"})
    assert offsets_in(manifest, "A") == {"docs": {0: 7}}
    assert offsets_in(manifest, None) == {"docs": {0: 7}}  # unknown now: trusted
    assert offsets_in(manifest, "B") == {}
    unrecorded = store.write(Index.create(model, settings), {"docs": {0: 7}})
    assert offsets_in(unrecorded, "B") == {"docs": {0: 7}}
