"""The shared event schema: what producers write is exactly what consumers read, and nothing else."""

from __future__ import annotations

import json
import time

import pytest
from pydantic.dataclasses import dataclass

from contracts.documents import Deletion, Document
from contracts.events import (
    ControlEvent,
    DeleteEvent,
    EventError,
    Flip,
    GateReportEvent,
    ModelUpgrade,
    Rollback,
    UpsertEvent,
    control_event,
    control_kinds,
    decode_control_event,
    decode_doc_event,
    encode_control_event,
    encode_doc_event,
)


def test_upsert_round_trip_and_conversion() -> None:
    event = UpsertEvent("d1", 7, "Title", "Body text", {"lang": "en", "tags": ["a"]})
    key, value = encode_doc_event(event)
    assert key == b"d1"
    assert json.loads(value or b"") == {
        "op": "upsert",
        "doc_id": "d1",
        "version": 7,
        "title": "Title",
        "text": "Body text",
        "metadata": {"lang": "en", "tags": ["a"]},
    }
    assert decode_doc_event(key, value) == event
    assert event.to_change() == Document("d1", "Title", "Body text", 7, {"lang": "en", "tags": ["a"]})


def test_versioned_delete_and_tombstone() -> None:
    key, value = encode_doc_event(DeleteEvent("d1", 9))
    assert decode_doc_event(key, value) == DeleteEvent("d1", 9)
    assert DeleteEvent("d1", 9).to_change() == Deletion("d1", 9)

    key, value = encode_doc_event(DeleteEvent("d2"))
    assert (key, value) == (b"d2", None)  # a real Kafka tombstone: compaction drops the key
    decoded = decode_doc_event(b"d2", None)
    assert isinstance(decoded, DeleteEvent) and decoded.is_tombstone
    assert decoded.to_change() == Deletion("d2", None)


def test_non_ascii_text_survives() -> None:
    event = UpsertEvent("Ω-1", 1, "Größe", "naïve café — 東京", {})
    assert decode_doc_event(*encode_doc_event(event)) == event


def test_build_without_version_stamps_now() -> None:
    before = time.time_ns()
    event = UpsertEvent.build("d1", "t", "x")
    assert before <= event.version <= time.time_ns()
    later = UpsertEvent.build("d1", "t", "x")
    assert later.version >= event.version
    assert UpsertEvent.build(42, None, "x", version=3).doc_id == "42"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"d1", b"{not json", "not valid JSON"),
        (b"d1", b"\xff\xfe", "not UTF-8"),
        (b"d1", b"[1, 2]", "must be a JSON object"),
        (b"d1", b'{"doc_id": "d1", "version": 1, "text": "x"}', "'op' is missing"),
        (b"d1", b'{"op": "replace", "doc_id": "d1", "version": 1, "text": "x"}', "'op' must be"),
        (b"d1", b'{"op": "upsert", "version": 1, "text": "x"}', "'doc_id' is missing"),
        (b"", b'{"op": "upsert", "doc_id": "", "version": 1, "text": "x"}', "'doc_id' must be"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "text": "x"}', "'version' is missing"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": -1, "text": "x"}', "non-negative"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": "3", "text": "x"}', "non-negative"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": true, "text": "x"}', "non-negative"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": 1}', "'text' is missing"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": 1, "text": 5}', "'text' must be a string"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": 1, "text": "x", "metadata": []}', "'metadata'"),
        (b"other", b'{"op": "upsert", "doc_id": "d1", "version": 1, "text": "x"}', "differs from doc_id"),
        (None, None, "tombstone (null value) without a key"),
    ],
)
def test_schema_violations_name_the_problem(key: bytes | None, value: bytes | None, reason: str) -> None:
    with pytest.raises(EventError) as caught:
        decode_doc_event(key, value)
    assert reason in caught.value.reason


def test_keyless_json_event_is_refused() -> None:
    """A key is how Kafka partitions: without one, versions of a document scatter over partitions."""
    for value in (
        b'{"op": "delete", "doc_id": "d1", "version": 4}',
        b'{"op": "upsert", "doc_id": "d1", "version": 4, "text": "x"}',
    ):
        with pytest.raises(EventError, match="no key; publish with key = doc_id"):
            decode_doc_event(None, value)
    assert decode_doc_event(b"d1", b'{"op": "delete", "doc_id": "d1", "version": 4}') == DeleteEvent("d1", 4)


def test_control_events_round_trip() -> None:
    for event in (
        ModelUpgrade("/models/e5-small", requested_at=1.0, reason="better recall"),
        Rollback(to_index="all-minilm-l6-v2-abc", requested_at=2.0),
        GateReportEvent("e5-small-123", passed=False, reason="nDCG dropped", metrics={"ndcg@10": 0.61}, at=3.0),
        Flip(from_index="a", to_index="b", at=4.0),
    ):
        _key, value = encode_control_event(event)
        assert json.loads(value)["type"] == event.TYPE
        assert decode_control_event(value) == event
    assert {"model-upgrade", "rollback", "gate-report", "flip"} <= set(control_kinds())


def test_control_event_errors() -> None:
    with pytest.raises(EventError, match="unknown control event type 'reindex'"):
        decode_control_event(b'{"type": "reindex"}')
    with pytest.raises(EventError, match="missing 'model'"):
        decode_control_event(b'{"type": "model-upgrade"}')
    with pytest.raises(EventError, match="'model' must name"):
        decode_control_event(b'{"type": "model-upgrade", "model": ""}')
    with pytest.raises(EventError, match="no value"):
        decode_control_event(None)
    # Unknown extra fields from a newer producer are ignored, not fatal.
    newer = decode_control_event(b'{"type": "rollback", "to_index": "x", "future_field": 1}')
    assert isinstance(newer, Rollback) and newer.to_index == "x"


def test_new_control_kinds_register_without_touching_the_decoder() -> None:
    @control_event("test-compact")
    @dataclass(frozen=True)
    class Compact(ControlEvent):
        index_id: str

    _key, value = encode_control_event(Compact("idx"))
    assert decode_control_event(value) == Compact("idx")
    with pytest.raises(ValueError, match="registered twice"):

        @control_event("test-compact")
        @dataclass(frozen=True)
        class Other(ControlEvent):
            pass
