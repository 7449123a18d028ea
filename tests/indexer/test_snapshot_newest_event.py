"""Manifest.newest_event_ms: written beside the offsets, and optional for manifests written
before it existed (they load unchanged, the age is then unknown)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import MANIFEST, SnapshotStore


def test_newest_event_is_written_and_read_back(make_index: Callable[..., Index], tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "idx")
    written = store.write(make_index(), {"docs": {0: 8}}, newest_event_ms=1_700_000_000_123)
    assert written.newest_event_ms == 1_700_000_000_123
    assert store.read_manifest().newest_event_ms == 1_700_000_000_123
    assert store.write(make_index(), {"docs": {0: 8}}).newest_event_ms is None  # unknown: not 0


def test_a_manifest_without_the_field_loads(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    store.write(make_index(), {"docs": {0: 8}}, newest_event_ms=1_700_000_000_123)
    path = store.root / "gen-000001" / MANIFEST
    data = json.loads(path.read_text())
    del data["newest_event_ms"]  # as every manifest written before the field existed
    path.write_text(json.dumps(data, indent=1))
    manifest = store.read_manifest()
    assert manifest.newest_event_ms is None and manifest.offsets == {"docs": {0: 8}}
    index, loaded = SnapshotStore(tmp_path / "idx").load(model, settings)
    assert loaded.generation == 1 and loaded.newest_event_ms is None
    assert index.count().documents == make_index().count().documents
