"""Events the index could not store or tokenize are refused at decode time, with a reason.

Python's json accepts lone surrogate escapes ("\\ud800"), NaN/Infinity and "1e400" (inf); each
used to pass decoding and then stop all indexing (the tokenizer raised for the whole batch, or
every snapshot failed to encode the document table). Here each kind is refused where it enters,
with a reason that names the field and says how to fix the event, on the producer side too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumers.operators import split_batch
from consumers.record import Record
from contracts.documents import Document
from contracts.events import (
    MAX_NESTING,
    EventError,
    UpsertEvent,
    decode_doc_event,
    encode_doc_event,
)
from indexer.document_table import DocumentTable
from indexer.documents import ChunkRecord, DocumentRecord


def upsert(doc_id: str = "d1", **fields: Any) -> bytes:
    """A raw event whose JSON escapes are written by hand (json.dumps would escape surrogates)."""
    row: dict[str, Any] = {"op": "upsert", "doc_id": doc_id, "version": 1, "text": "vitamin d"}
    row.update(fields)
    return json.dumps(row).encode()


def nested(levels: int) -> Any:
    """`levels` objects inside each other, the innermost holding a string."""
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


SURROGATE = "\\ud800"  # as it appears in the raw JSON text


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"d1", upsert().replace(b"vitamin d", b"vitamin " + SURROGATE.encode() + b" d"), "'text' contains a lone surrogate U+D800 at character 8"),
        (b"d1", upsert(title="x").replace(b'"x"', b'"\\udfff"'), "'title' contains a lone surrogate U+DFFF"),
        (b"d1", upsert(metadata={"tag": "x"}).replace(b'"x"', b'"\\ud800"'), "'metadata.tag' contains a lone surrogate"),
        (b"d1", upsert(metadata={"x": 1}).replace(b'"x"', b'"\\ud800"'), "a key of 'metadata' contains a lone surrogate"),
        (b"d1", upsert(metadata={"tags": ["ok", "x"]}).replace(b'"x"', b'"\\udc00"'), "'metadata.tags[1]' contains a lone surrogate"),
        (None, upsert("x").replace(b'"x"', b'"a\\ud800"'), "'doc_id' contains a lone surrogate"),
        (b"d1", upsert(extra="x").replace(b'"x"', b'"\\ud800"'), "'extra' contains a lone surrogate"),
        (b"d1", upsert(metadata={"score": 1}).replace(b": 1}", b": NaN}"), "'metadata.score' is nan"),
        (b"d1", upsert(metadata={"score": 1}).replace(b": 1}", b": Infinity}"), "'metadata.score' is inf"),
        (b"d1", upsert(metadata={"s": [1]}).replace(b"[1]", b"[-Infinity]"), "'metadata.s[0]' is -inf"),
        (b"d1", upsert(metadata={"big": 1}).replace(b": 1}", b": 1e400}"), "numbers beyond ~1e308"),
        (b"d1", upsert(extra=1).replace(b'"extra": 1', b'"extra": NaN'), "'extra' is nan"),
        (b"d1", upsert().replace(b'"version": 1', b'"version": NaN'), "'version' is nan"),
        (b"d1", upsert(version=2**63), "signed 64-bit"),
        (b"d1", upsert(metadata=nested(MAX_NESTING + 1)), f"nests deeper than {MAX_NESTING} levels"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": 1, "text": "t", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nests too deeply to parse"),
        (b"d1", b'{"op": "upsert", "doc_id": "d1", "version": ' + b"9" * 5000 + b', "text": "t"}', "cannot be parsed"),
        (None, upsert("line\nbreak"), "control character U+000A at character 4"),
        (None, upsert("nul\u0000"), "control character U+0000"),
        (None, upsert("x" * 513), "over the 512-character limit"),
        ("a\udc80", None, "the key contains a lone surrogate"),
        (b"tab\there", None, "the key of a tombstone contains the control character U+0009"),
        (None, b'{"op": "delete", "doc_id": "a\\ud800", "version": 3}', "'doc_id' contains a lone surrogate"),
    ],
)
def test_decode_refuses_what_cannot_be_stored_with_a_reason(
    key: bytes | str | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(EventError) as caught:
        decode_doc_event(key, value)
    assert reason in caught.value.reason, caught.value.reason


def test_reasons_say_how_to_fix_the_event() -> None:
    with pytest.raises(EventError) as surrogate:
        decode_doc_event(b"d1", upsert().replace(b"vitamin d", b"\\ud800"))
    assert "high+low pair" in surrogate.value.reason and "republish" in surrogate.value.reason
    with pytest.raises(EventError) as nan:
        decode_doc_event(b"d1", upsert(metadata={"s": 1}).replace(b": 1}", b": NaN}"))
    assert "send a finite number, or null" in nan.value.reason
    with pytest.raises(EventError) as deep:
        decode_doc_event(b"d1", upsert(metadata=nested(40)))
    assert "flatten it" in deep.value.reason


def test_what_can_be_stored_still_decodes() -> None:
    """A surrogate *pair* is one real character; 32 levels of metadata are allowed; big finite
    floats, non-ASCII keys and printable unicode ids are fine."""
    raw = upsert("idé-1", metadata={"deep": nested(MAX_NESTING - 1), "ключ": 1.5e308}).replace(
        b"vitamin d", b"vitamin \\ud83d\\ude00 d"
    )
    event = decode_doc_event("idé-1".encode(), raw)
    assert isinstance(event, UpsertEvent)
    assert event.text == "vitamin \U0001f600 d"
    assert event.metadata["ключ"] == 1.5e308
    assert decode_doc_event(b"d1", None).doc_id == "d1"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"text": "vitamin \ud800 d"}, "'text' contains a lone surrogate"),
        ({"text": "t", "title": "\udfff"}, "'title' contains a lone surrogate"),
        ({"text": "t", "metadata": {"k": "\ud800"}}, "'metadata.k' contains a lone surrogate"),
        ({"text": "t", "metadata": {"\ud800": 1}}, "a key of 'metadata'"),
        ({"text": "t", "metadata": {"score": float("nan")}}, "'metadata.score' is nan"),
        ({"text": "t", "metadata": {"x": [float("inf")]}}, "'metadata.x[0]' is inf"),
        ({"text": "t", "metadata": nested(MAX_NESTING + 1)}, f"nests deeper than {MAX_NESTING}"),
        ({"text": "t", "metadata": {1: "x"}}, "is not a string"),
        ({"text": "t", "metadata": {"s": {1, 2}}}, "'metadata.s' is a set, which JSON cannot hold"),
        ({"doc_id": "a\ud800", "text": "t"}, "'doc_id' contains a lone surrogate"),
        ({"doc_id": "a\rb", "text": "t"}, "control character U+000D"),
        ({"text": "t", "version": 2**64}, "signed 64-bit"),
    ],
)
def test_build_refuses_the_same_so_producers_cannot_publish_it(fields: dict[str, Any], reason: str) -> None:
    arguments: dict[str, Any] = {"doc_id": "d1", "version": 1}
    arguments.update(fields)
    with pytest.raises(EventError) as caught:
        UpsertEvent.build(**arguments)
    assert reason in caught.value.reason, caught.value.reason


def test_encode_refuses_events_built_without_build() -> None:
    """A producer that constructs the dataclass directly gets an EventError, not a crash in
    .encode('utf-8') or a NaN on the wire."""
    for event in (
        UpsertEvent("d1", 1, "", "vitamin \ud800 d"),
        UpsertEvent("d1", 1, "", "t", {"x": float("nan")}),
        UpsertEvent("a\ud800", 1, "", "t"),
    ):
        with pytest.raises(EventError):
            encode_doc_event(event)
    key, value = encode_doc_event(UpsertEvent("d1", 1, "", "vitamin \U0001f600 d", {"x": 0.5}))
    assert key == b"d1" and value is not None
    assert decode_doc_event(key, value) == UpsertEvent("d1", 1, "", "vitamin \U0001f600 d", {"x": 0.5})


def test_split_batch_dead_letters_them_and_keeps_the_record_of_every_change() -> None:
    records = [
        Record("docs", 0, 0, b"d1", upsert("d1")),
        Record("docs", 0, 1, b"d2", upsert("d2").replace(b"vitamin d", b"\\ud800")),
        Record("docs", 0, 2, None, upsert("x").replace(b'"x"', b'"\\udc00"')),
        Record("docs", 0, 3, b"d3", upsert("d3", metadata={"s": 1}).replace(b": 1}", b": NaN}")),
        Record("docs", 0, 4, b"d4", upsert("d4")),
    ]
    batch = split_batch(records, lambda doc: None)
    assert [c.doc_id for c in batch.changes] == ["d1", "d4"]
    assert [p.record.offset for p in batch.poison] == [1, 2, 3]
    assert all(p.reason.startswith("invalid event: ") for p in batch.poison)
    assert "'text' contains a lone surrogate" in batch.poison[0].reason
    assert "'doc_id' contains a lone surrogate" in batch.poison[1].reason
    assert "'metadata.s' is nan" in batch.poison[2].reason
    assert [batch.record_of(c).offset for c in batch.changes] == [0, 4]
    [poison] = batch.rejected_poison([batch.changes[1]], ["the model produced NaN"])
    assert poison.record is records[4] and poison.reason == "rejected by the index: the model produced NaN"
    with pytest.raises(KeyError):
        batch.record_of(Document("d1", "", "vitamin d", 1))


def test_document_table_dump_cannot_fail_on_a_record_that_got_in(tmp_path: Path) -> None:
    """Defence in depth: if a lone surrogate ever reaches the table, the snapshot still writes
    (that record with ASCII escapes) and loads back to the same strings."""
    table = DocumentTable()
    table.put(DocumentRecord("good", 1, "Café", "naïve text", {"k": "é"}, (ChunkRecord(0, 0, 4, "h0"),)))
    table.put(DocumentRecord("bad\ud800", 2, "t", "x \udfff y", {"m\ud800": "v\udc00"}, (ChunkRecord(1, 0, 1, "h1"),)))
    table.remove("gone\ud800", 3)
    path = tmp_path / "documents.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        table.dump(handle)
    loaded = DocumentTable.load(path)
    assert {r.doc_id: r for r in loaded} == {r.doc_id: r for r in table}
    assert loaded.deleted_versions == {"gone\ud800": 3}
    assert "Café" in path.read_text(encoding="utf-8")  # good records stay readable UTF-8
