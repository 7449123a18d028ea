"""The committed docs/CONFIGURATION.md and docs/schemas/ are what the models say today."""

from __future__ import annotations

import json

from contracts.events import Flip, UpsertEvent, encode_control_event, encode_doc_event
from contracts.publish import published


def test_committed_files_match_the_models() -> None:
    stale = [
        str(path)
        for path, text in published().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"regenerate with `python -m contracts.publish`: {stale}"


def test_the_schemas_describe_what_is_encoded() -> None:
    schemas = {path.name: json.loads(text) for path, text in published().items() if path.suffix == ".json"}
    docs, control = schemas["events.schema.json"], schemas["control.schema.json"]
    _key, value = encode_doc_event(UpsertEvent("d1", 1, "", "text"))
    assert value is not None
    upsert = docs["$defs"]["UpsertEvent"]
    assert set(json.loads(value)) == set(upsert["properties"])
    assert set(upsert["required"]) == {"op", "doc_id", "version", "text"}
    _key, flip = encode_control_event(Flip(from_index="a", to_index="b", at=1.0))
    assert set(json.loads(flip)) == set(control["$defs"]["Flip"]["properties"])
    assert set(control["discriminator"]["mapping"]) == {"model-upgrade", "rollback", "gate-report", "flip"}


def test_every_variable_is_documented() -> None:
    text = next(t for p, t in published().items() if p.name == "CONFIGURATION.md")
    for variable in ("SEMSEARCH_DRAIN_TIMEOUT_S", "SEMSEARCH_KAFKA_FETCH_WAIT_MS", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        assert f"| `{variable}` |" in text
