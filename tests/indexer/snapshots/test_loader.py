"""Loading: a corrupt generation is refused (or skipped with `fallback`), another model refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.documents import Document
from contracts.errors import ModelMismatchError, SnapshotError
from contracts.settings import Settings
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore


def test_corruption_is_detected(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    index = make_index()
    store = SnapshotStore(tmp_path / "idx")
    store.write(index)
    index.apply([Document("d9", "Later", "a later document", 1)])
    second = store.write(index)
    assert second.live is not None and second.live["files"][-1]["kind"] == "delta"
    live = store.root / second.live["files"][-1]["file"]  # generation 2's own live file
    data = bytearray(live.read_bytes())
    data[len(data) // 2] ^= 0xFF
    live.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        store.load(model, settings)
    loaded, manifest = store.load(model, settings, fallback=True)
    assert manifest.generation == 1 and loaded.count().documents == len(index.documents) - 1


def test_a_different_model_is_refused_naming_both(
    make_index: Callable[..., Index], model: EmbeddingModel, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    store.write(make_index())
    manifest_path = tmp_path / "idx" / "gen-000001" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["model"]["fingerprint"] = "f" * 64
    data["model"]["name"] = "some/other-model"
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ModelMismatchError) as err:
        store.load(model, settings)
    assert "some/other-model" in str(err.value) and "all-MiniLM-L6-v2" in str(err.value)
