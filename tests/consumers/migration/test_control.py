"""The control consumer against the real broker and Redis: each request accepted once.

A rollback is carried out by the loop itself (pointer moved, outcome in the ledger, a `flip`
event announced); a model upgrade is only accepted (pending in the ledger, handed on); a
request already in the ledger and a malformed event are skipped, and all are committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from tests_support import wait_until

from consumers.migration.control import CONTROL_GROUP, ControlConsumer
from consumers.migration.flip import flip
from consumers.migration.ledger import RequestLedger, request_key
from contracts.events import Flip, ModelUpgrade, Rollback, decode_control_event
from contracts.pointer import Pointer
from contracts.settings import Settings
from producers.publisher import Publisher

OLD = "minilm-aaaaaaaaaaaa"
NEW = "minilm-bbbbbbbbbbbb"


@pytest.fixture
def running(
    stream_settings: Settings, bootstrap: str, pointer: Pointer
) -> Iterator[tuple[ControlConsumer, list[str], list[int]]]:
    accepted: list[str] = []
    rescans: list[int] = []
    control = ControlConsumer(
        stream_settings,
        bootstrap=bootstrap,
        pointer=pointer,
        ledger=RequestLedger(pointer),
        accept=accepted.append,
        every_rescan=lambda: rescans.append(1),
    )
    stop = threading.Event()
    control.start(stop)
    yield control, accepted, rescans
    stop.set()
    control.join(30)
    assert not control.alive


def _committed(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": CONTROL_GROUP})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def test_requests_are_handled_once_and_every_event_is_committed(
    running: tuple[ControlConsumer, list[str], list[int]],
    stream_settings: Settings,
    bootstrap: str,
    pointer: Pointer,
    read_topic: object,
) -> None:
    control, accepted, rescans = running
    ledger = control.ledger
    pointer.set_if_unset(OLD)
    flip(pointer, OLD, NEW)
    rollback = Rollback(requested_at=1.0)
    upgrade = ModelUpgrade(model="/models/x", requested_at=2.0)
    topic = stream_settings.control_topic
    with Publisher(bootstrap) as publisher:
        publisher.publish_control(topic, rollback)
        publisher.publish_control(topic, upgrade)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"not a control event")
    producer.flush(10)
    with Publisher(bootstrap) as publisher:
        publisher.publish_control(topic, rollback)  # the same request again
        publisher.publish_control(topic, upgrade)

    wait_until(lambda: _committed(bootstrap, topic) == 5, 60, "all five events committed")
    assert pointer.get() == OLD  # rolled back once, not twice
    assert ledger.outcome(request_key(rollback)) == {
        "outcome": "rolled-back",
        "from_index": NEW,
        "to_index": OLD,
    }
    assert accepted == [request_key(upgrade)]  # handed on once
    assert ledger.pending() == [request_key(upgrade)]  # and left for the executor
    assert rescans  # the keeper is asked to look again (every RESCAN_S and after a rollback)
    messages = read_topic(topic, 6)  # type: ignore[operator]
    events = [decode_control_event(m.value()) for m in messages if m.value() != b"not a control event"]
    flips = [e for e in events if isinstance(e, Flip)]
    assert [(f.from_index, f.to_index) for f in flips] == [(NEW, OLD)]


def test_a_refused_rollback_is_recorded_and_moves_nothing(
    running: tuple[ControlConsumer, list[str], list[int]],
    stream_settings: Settings,
    bootstrap: str,
    pointer: Pointer,
) -> None:
    control, _, _ = running
    pointer.set_if_unset(OLD)
    refused = Rollback(to_index=NEW, requested_at=3.0)  # never validated
    with Publisher(bootstrap) as publisher:
        publisher.publish_control(stream_settings.control_topic, refused)
    outcome = wait_until(
        lambda: control.ledger.outcome(request_key(refused)), 60, "the rollback's outcome"
    )
    assert outcome["outcome"] == "refused" and "never passed validation" in outcome["message"]
    assert pointer.get() == OLD
