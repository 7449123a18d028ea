"""Publishing against the real embedded broker: every event acknowledged, or the failure reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from contracts.events import (
    DeleteEvent,
    ModelUpgrade,
    UpsertEvent,
    decode_control_event,
    decode_doc_event,
)
from contracts.settings import Settings
from contracts.topics import ensure_topics
from producers.publisher import BrokerUnreachableError, Publisher, PublishError
from semsearch.cli import main
from semsearch.embedded.broker import free_port


def test_publish_docs_are_acknowledged_and_keyed(bootstrap: str, stream_settings: Settings, read_topic) -> None:  # type: ignore[no-untyped-def]
    events = [UpsertEvent(f"d{i}", 1, f"T{i}", f"text {i}") for i in range(12)]
    events += [UpsertEvent("d1", 2, "T1", "text 1 v2"), DeleteEvent("d2", 5), DeleteEvent("d3")]
    with Publisher(bootstrap) as publisher:
        report = publisher.publish_docs(stream_settings.docs_topic, events)
    assert (report.delivered, report.failed) == (15, 0)

    messages = read_topic(stream_settings.docs_topic, 15)
    assert len(messages) == 15
    decoded = [decode_doc_event(m.key(), m.value()) for m in messages]
    assert sorted(decoded, key=repr) == sorted(events, key=repr)
    # Every version of one document lands in one partition, in publish order.
    partitions_of: dict[str, set[int]] = {}
    for message in messages:
        partitions_of.setdefault(message.key().decode(), set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions_of.values())
    d1 = [decode_doc_event(m.key(), m.value()) for m in sorted(messages, key=lambda m: m.offset()) if m.key() == b"d1"]
    assert [e.version for e in d1] == [1, 2]
    assert sum(1 for m in messages if m.key() == b"d3" and m.value() is None) == 1  # real tombstone


def test_failures_are_counted_with_their_reason(bootstrap: str, stream_settings: Settings) -> None:
    with Publisher(bootstrap, config={"message.max.bytes": 2000}) as publisher:
        report = publisher.publish_docs(
            stream_settings.docs_topic,
            [UpsertEvent("small", 1, "", "fits"), UpsertEvent("huge", 1, "", "x" * 5000)],
        )
    assert (report.delivered, report.failed) == (1, 1)
    assert report.errors[0][0] == "huge"
    assert "too large" in report.errors[0][1].lower()
    assert "1 delivered, 1 failed: huge:" in report.summary()


def test_unreachable_broker_fails_fast_and_says_what_to_do() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as caught:
        Publisher(f"127.0.0.1:{free_port()}", connect_timeout_s=1.5)
    assert time.monotonic() - started < 10
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(caught.value) and "semsearch up" in str(caught.value)


def test_control_event_is_one_call(bootstrap: str, stream_settings: Settings, read_topic) -> None:  # type: ignore[no-untyped-def]
    with Publisher(bootstrap) as publisher:
        publisher.publish_control(stream_settings.control_topic, ModelUpgrade("/models/next", requested_at=1.0))
        assert publisher.report.delivered == 1
    [message] = read_topic(stream_settings.control_topic, 1)
    assert decode_control_event(message.value()) == ModelUpgrade("/models/next", requested_at=1.0)


def test_control_event_delivery_failure_raises(bootstrap: str, stream_settings: Settings) -> None:
    with Publisher(bootstrap, config={"message.max.bytes": 1000}) as publisher, pytest.raises(PublishError):
        publisher.publish_control(stream_settings.control_topic, ModelUpgrade("m" * 5000))


# -- the CLI ----------------------------------------------------------------------------------
def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings, bootstrap: str | None) -> None:
    if bootstrap is None:
        monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    else:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("SEMSEARCH_DOCS_TOPIC", settings.docs_topic)


def test_produce_and_delete_commands(  # type: ignore[no-untyped-def]
    tmp_path: Path, bootstrap: str, stream_settings: Settings, read_topic, monkeypatch, capsys
) -> None:
    _env(monkeypatch, stream_settings, bootstrap)
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"c{i}", "title": f"T{i}", "text": f"body {i}", "version": 10 + i} for i in range(5)]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    assert main(["produce", "--quiet", str(corpus)]) == 0
    out = capsys.readouterr()
    assert "5 event(s) acknowledged" in out.out
    assert "line 6: not valid JSON" in out.err

    assert main(["delete", "c1", "c2"]) == 0
    assert main(["delete", "--tombstone", "c3"]) == 0
    events = [decode_doc_event(m.key(), m.value()) for m in read_topic(stream_settings.docs_topic, 8)]
    assert len(events) == 8
    deletes = {e.doc_id: e for e in events if isinstance(e, DeleteEvent)}
    assert set(deletes) == {"c1", "c2", "c3"}
    assert deletes["c1"].version is not None and deletes["c1"].version > time.time_ns() - 60 * 10**9
    assert deletes["c3"].is_tombstone


def test_produce_without_a_broker_explains_how_to_get_one(  # type: ignore[no-untyped-def]
    tmp_path: Path, stream_settings: Settings, monkeypatch, capsys
) -> None:
    _env(monkeypatch, stream_settings, None)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n')
    assert main(["produce", str(corpus)]) == 1
    err = capsys.readouterr().err
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in err and "semsearch up" in err
    assert main(["delete", "a"]) == 1


def test_produce_creates_a_missing_docs_topic(  # type: ignore[no-untyped-def]
    tmp_path: Path, bootstrap: str, topic_prefix: str, read_topic, monkeypatch
) -> None:
    settings = Settings(docs_topic=f"{topic_prefix}.fresh")
    _env(monkeypatch, settings, bootstrap)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "x", "version": 1}\n')
    assert main(["produce", "-q", str(corpus)]) == 0
    assert len(read_topic(settings.docs_topic, 1)) == 1
    ensure_topics(bootstrap, {settings.docs_topic: 3})  # exists now: a no-op
