"""IndexLoader against real snapshots: complete loads, refusals with their reasons, the model cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from contracts.documents import Document
from contracts.errors import (
    IndexNotFoundError,
    InvalidIndexIdError,
    ModelMismatchError,
    SnapshotError,
)
from contracts.settings import Settings
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore
from query_api.loader import LOAD_ERRORS, IndexLoader, refusal
from query_api.metrics import ApiMetrics

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]
BAD_IDS = ("../escape", "ABSOLUTE", "idx-a/../../escape", "idx-a/../idx-b", "..", "idx-a\n", "")


@pytest.fixture
def loader(settings: Settings) -> IndexLoader:
    return IndexLoader(settings, ApiMetrics())


def refused(loader: IndexLoader, index_id: str) -> tuple[Exception, str, str]:
    with pytest.raises(LOAD_ERRORS) as caught:
        loader.load(index_id)
    assert isinstance(caught.value, Exception)
    return (caught.value, *refusal(caught.value))


def test_load_returns_a_complete_pinned_serving(loader: IndexLoader, build_index: BuildIndex) -> None:
    _, store = build_index("idx-a")
    serving = loader.load("idx-a", "default")
    assert serving.index_id == "idx-a" and serving.generation == 1 and serving.origin == "default"
    assert serving.index.search("vitamin d bones", k=1)[0].doc_id == "d1"
    assert serving.hold.generation == 1
    assert [p.name.split(".")[0] for p in (store.root / "pins").glob("*.*.*")] == ["1"]
    serving.hold.release()
    assert not list((store.root / "pins").glob("*.*.*"))


def test_a_second_index_of_the_same_model_reuses_its_weights(
    loader: IndexLoader, build_index: BuildIndex, extra_doc: Document
) -> None:
    build_index("idx-a")
    build_index("idx-b", docs=[extra_doc])
    first, second = loader.load("idx-a"), loader.load("idx-b")
    assert [h.doc_id for h in second.index.search("antibiotic resistance", k=1)] == ["d11"]
    assert second.index.model is first.index.model, "same fingerprint must not reload the weights"


def test_ids_that_are_not_index_ids_are_refused(
    loader: IndexLoader, build_index: BuildIndex, settings: Settings
) -> None:
    index, _ = build_index("idx-a")
    escape = settings.data_dir / "escape"
    SnapshotStore(escape).write(index)  # a perfectly loadable index, outside indexes/
    for raw in BAD_IDS:
        value = str(escape.resolve()) if raw == "ABSOLUTE" else raw
        exc, reason, message = refused(loader, value)
        assert isinstance(exc, InvalidIndexIdError) and reason == "invalid_id", value
        assert "not an index id" in message, value


def test_a_directory_escaping_the_data_root_is_refused(
    loader: IndexLoader, build_index: BuildIndex, settings: Settings
) -> None:
    index, _ = build_index("idx-a")
    outside = settings.data_dir.parent / "elsewhere"
    SnapshotStore(outside).write(index)
    (settings.indexes_dir / "sneaky").symlink_to(outside, target_is_directory=True)
    _, _, message = refused(loader, "sneaky")  # a valid id; its directory escapes
    assert "outside" in message


def test_an_unknown_index_is_refused_until_it_appears(
    loader: IndexLoader, build_index: BuildIndex, extra_doc: Document
) -> None:
    assert loader.latest_generation_of("idx-later") is None
    exc, reason, message = refused(loader, "idx-later")
    assert isinstance(exc, IndexNotFoundError) and reason == "unknown_index"
    assert "idx-later" in message
    build_index("idx-later", docs=[extra_doc])
    assert loader.latest_generation_of("idx-later") == 1
    assert loader.load("idx-later").index.get("d11") is not None


def test_an_index_built_with_another_model_is_refused_naming_it(
    loader: IndexLoader, build_index: BuildIndex
) -> None:
    _, store = build_index("idx-other")
    manifest_path = store.root / "gen-000001" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["fingerprint"] = "0" * 64
    manifest["model"]["source"] = "/nonexistent/model"
    manifest_path.write_text(json.dumps(manifest))
    exc, reason, message = refused(loader, "idx-other")
    assert isinstance(exc, ModelMismatchError) and reason == "model_mismatch"
    assert "000000000000" in message, "the error must name the index's model"
    assert not list((store.root / "pins").glob("*.*.*")), "a refused load leaves no pin"


def test_refusal_reasons() -> None:
    assert refusal(SnapshotError("torn"))[0] == "snapshot_error"
    assert refusal(OSError("disk")) == ("snapshot_error", "OSError: disk")
    assert refusal(KeyError("counts"))[0] == "snapshot_error"


def test_the_default_index_is_the_configured_models_once_built(
    loader: IndexLoader, build_index: BuildIndex, model: EmbeddingModel
) -> None:
    assert loader.default_index_id() is None
    build_index(model.index_id)
    assert loader.default_index_id() == model.index_id
