"""The manifest: a generation's commit record, and the JSON every existing index holds.

A pydantic model (the disk is a boundary: a manifest that parses as JSON but holds a string
where a generation number belongs is refused at load, with the field named, so `fallback` skips
it like a torn one). Serialized field by field in declaration order (`json.dumps(indent=1)`),
so the bytes are exactly what earlier versions wrote and read. A new field needs a default, or
the manifests of existing indexes stop loading; an optional one left unset is not written, so
older readers can still read it, and a reader ignores fields it does not know (an API that is
upgraded after its indexer keeps serving during the rollout). Kafka partitions are ints in
memory and strings in JSON (object keys are strings).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.offsets import Offsets

# 2: documents in documents.sqlite (1: gen-*/documents.jsonl, migrated by the writer on open).
FORMAT_VERSION = 2


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    index_id: str
    generation: int
    created_at: float
    model: dict[str, Any]
    canaries: dict[str, Any]
    settings: dict[str, Any]
    counts: dict[str, int]
    next_chunk_id: int
    quantizer: dict[str, Any] | None
    segments: list[dict[str, Any]]
    offsets: Offsets
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = Field(default_factory=dict)
    format: int = FORMAT_VERSION
    # The document store generation this manifest reads (StoreStats.to_json); None in format 1.
    documents: dict[str, Any] | None = None
    # The lexical segments (LexicalStore.persist's section); None: rebuilt from the documents.
    lexical: dict[str, Any] | None = None
    # The live segment's base + deltas (indexer/live_store.py); None: GEN/live.npz (before deltas).
    live: dict[str, Any] | None = None
    # Kafka timestamp (ms) of the newest event the offsets cover: GET /index reports its age.
    # None: unknown (no event consumed yet, no timestamp, or a manifest written before it).
    newest_event_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump()
        data["offsets"] = {
            t: {str(p): o for p, o in parts.items()} for t, parts in self.offsets.items()
        }
        if data["newest_event_ms"] is None:  # unknown: written as before the field existed
            del data["newest_event_ms"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """ValueError (pydantic's ValidationError, naming the field) when `data` is not one."""
        return cls.model_validate(data)

    def dumps(self) -> str:
        """The text of `manifest.json`."""
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def loads(cls, text: str) -> Manifest:
        """Parse `manifest.json`; ValueError when it is not a manifest."""
        return cls.from_json(json.loads(text))


def segment_files(segments: list[dict[str, Any]]) -> list[str]:
    """The shared files of sealed segments: each faiss file, and a PQ segment's full vectors."""
    return [rel for s in segments for rel in (s["file"], s.get("vectors")) if rel]
