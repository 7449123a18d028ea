"""The 3 AM incident as tests: an index built with one tokenizer must never be searched with another.

Three ways it happens in production, each refused before a single query is answered:
1. the model files at the recorded path change in place (a package upgrade rewrote
   tokenizer_config.json): the fingerprint no longer matches;
2. the files are identical but the code that reads them changed (a library upgrade): forged
   here by recording the changed model's fingerprint in the manifest - only the canaries can
   tell, and they do;
3. the change happens under a process that is already serving: the drift monitor catches it at
   its next periodic check and exports `semsearch_model_mismatch` = 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from migration_data import DOCS
from migration_models import incident_variant, make_variant
from prometheus_client import CollectorRegistry
from tests_support import wait_until

from consumers.worker import IndexWorker
from contracts.documents import Document
from contracts.errors import ModelMismatchError
from contracts.events import UpsertEvent
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.drift import DriftMonitor
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import MANIFEST, Manifest, SnapshotStore, index_dir
from producers.publisher import Publisher
from query_api.app import create_app
from semsearch.embedded.redis import EmbeddedRedis

CORPUS = [Document(doc_id, title, text, 1) for doc_id, title, text in DOCS[:8]]
QUERY = "Prion protein in appendix samples after BSE"


def _build(model: EmbeddingModel, settings: Settings, cache: EmbeddingCache) -> Manifest:
    index = Index.create(model, settings, cache)
    index.apply(CORPUS)
    assert index.search(QUERY, k=1, mode="vector")[0].doc_id == CORPUS[0].doc_id
    return SnapshotStore(index_dir(settings, model.index_id)).write(index, {"docs": {0: 8}})


def _point_at(settings: Settings, index_id: str) -> None:
    assert settings.redis_url
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    try:
        assert pointer.set_if_unset(index_id)
    finally:
        pointer.close()


def _api_refuses(settings: Settings, index_id: str, fingerprints: tuple[str, ...]) -> None:
    """The API, started against the index, never becomes ready and answers no query."""
    app = create_app(settings)
    holder = app.state.holder
    with TestClient(app) as client:
        wait_until(lambda: holder.last_error is not None, 60, "the API to record its refusal")
        assert holder.current is None
        search = client.get("/search", params={"q": QUERY, "mode": "vector"})
        assert search.status_code == 503, search.text
        ready = client.get("/readyz")
        assert ready.status_code == 503
        error = ready.json()["last_error"]
        assert "model_mismatch" in error
        for fingerprint in fingerprints:
            assert fingerprint[:12] in error
        metrics = client.get("/metrics").text
        assert f'semsearch_model_mismatch{{index_id="{index_id}"}} 1.0' in metrics


def test_tokenizer_config_changed_in_place_is_refused_everywhere(
    tmp_path: Path, redis_server: EmbeddedRedis, cache: EmbeddingCache
) -> None:
    # The pinned model lives in a directory a package manager may rewrite (weights symlinked).
    pinned_dir = make_variant(tmp_path / "models", "all-minilm-l6-v2")
    settings = Settings(
        data_dir=tmp_path / "data",
        model=str(pinned_dir),
        redis_url=redis_server.url,
        refresh_ms=50,
    )
    built_with = EmbeddingModel(pinned_dir)  # not via load_model: this "process" ends here
    manifest = _build(built_with, settings, cache)
    _point_at(settings, manifest.index_id)

    # The upgrade: same directory, same model name, the tokenizer stops lowercasing.
    config = pinned_dir / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_lower_case": False}))
    restarted = EmbeddingModel(pinned_dir)
    assert restarted.info.name == built_with.info.name
    assert restarted.info.fingerprint != built_with.info.fingerprint

    with pytest.raises(ModelMismatchError) as refused:
        SnapshotStore(index_dir(settings, manifest.index_id)).load(restarted, settings)
    message = str(refused.value)
    assert (
        built_with.info.fingerprint[:12] in message and restarted.info.fingerprint[:12] in message
    )
    assert "semsearch upgrade-model" in message

    _api_refuses(
        settings, manifest.index_id, (built_with.info.fingerprint, restarted.info.fingerprint)
    )


def test_same_files_different_behaviour_is_caught_by_the_canaries(
    tmp_path: Path, redis_server: EmbeddedRedis, cache: EmbeddingCache
) -> None:
    pinned = load_model()
    changed = load_model(incident_variant(tmp_path / "models"))
    assert changed.info.name == pinned.info.name  # same name on the model card
    settings = Settings(
        data_dir=tmp_path / "data",
        model=changed.info.source,
        redis_url=redis_server.url,
        refresh_ms=50,
    )
    manifest = _build(pinned, settings, cache)

    # Forge what a library upgrade looks like: the recorded fingerprint matches the files at
    # hand (nothing on disk differs), yet the code now tokenizes differently.
    path = index_dir(settings, manifest.index_id) / f"gen-{manifest.generation:06d}" / MANIFEST
    data = json.loads(path.read_text())
    data["model"]["fingerprint"] = changed.info.fingerprint
    path.write_text(json.dumps(data))
    forged = Manifest.from_json(data)

    with pytest.raises(ModelMismatchError, match="embeds differently") as refused:
        SnapshotStore(index_dir(settings, manifest.index_id)).load(changed, settings)
    assert "different token ids" in str(refused.value)

    registry = CollectorRegistry()
    monitor = DriftMonitor.for_manifest(changed, forged, interval_s=0.0, registry=registry)
    with pytest.raises(ModelMismatchError):
        monitor.check()
    labels = {"index_id": manifest.index_id}
    assert registry.get_sample_value("semsearch_model_mismatch", labels) == 1.0
    assert monitor.mismatched

    _point_at(settings, manifest.index_id)
    _api_refuses(
        settings, manifest.index_id, (changed.info.fingerprint,)
    )  # recorded == loaded: forged


def test_drift_under_a_running_process_is_caught_at_the_next_check(tmp_path: Path) -> None:
    running = EmbeddingModel(make_variant(tmp_path / "models", "all-minilm-l6-v2"))
    index = Index.create(running, Settings(data_dir=tmp_path / "data"))
    index.apply(CORPUS[:2])
    registry = CollectorRegistry()
    now = [0.0]
    monitor = DriftMonitor.for_index(
        index, interval_s=60.0, registry=registry, clock=lambda: now[0]
    )
    labels = {"index_id": index.index_id}
    assert monitor.maybe_check() is None  # not due yet: a check costs eight embeddings
    now[0] = 61.0
    comparison = monitor.maybe_check()
    assert comparison is not None and comparison.minimum > 0.999
    assert registry.get_sample_value("semsearch_model_mismatch", labels) == 0.0

    # A hot library change: the tokenizer (processor) the model uses is replaced under it.
    other = EmbeddingModel(incident_variant(tmp_path / "models"))
    running._model[0].processor = other._model[0].processor
    now[0] = 130.0
    with pytest.raises(ModelMismatchError, match="embeds differently"):
        monitor.maybe_check()
    assert registry.get_sample_value("semsearch_model_mismatch", labels) == 1.0


def test_the_indexer_refuses_to_embed_with_a_drifted_model(
    tmp_path: Path, stream_settings: Settings, bootstrap: str
) -> None:
    running = EmbeddingModel(make_variant(tmp_path / "models", "all-minilm-l6-v2"))
    settings = stream_settings.with_overrides(drift_check_s=0.0)  # check before every batch
    index = Index.create(running, settings)
    worker = IndexWorker.from_index(index, settings, bootstrap=bootstrap, start_offsets={})
    publisher = Publisher(bootstrap)
    try:
        first, second = (UpsertEvent.build(d, t, x, version=1) for d, t, x in DOCS[:2])
        publisher.publish_docs(settings.docs_topic, [first])
        deadline = time.monotonic() + 60
        while index.get(first.doc_id) is None:
            assert time.monotonic() < deadline, "the healthy worker never indexed the event"
            worker.step()
        other = EmbeddingModel(incident_variant(tmp_path / "models"))
        running._model[0].processor = other._model[0].processor  # the library changed under us
        publisher.publish_docs(settings.docs_topic, [second])
        with pytest.raises(ModelMismatchError, match="embeds differently"):
            while time.monotonic() < deadline:
                worker.step()
        assert index.get(second.doc_id) is None  # nothing was embedded in the other space
        assert worker.drift.mismatched
    finally:
        worker.close(final_snapshot=False)
        publisher.close()
