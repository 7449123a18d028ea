"""One migration, run by the orchestrator against the real broker and Redis.

The full path (bootstrap -> catch-up -> gate -> flip) to an equally good MiniLM variant, and the
ways a request ends without touching the pointer: the model already serves, the model cannot
serve at all, the model does not exist, nothing is served yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from migration_data import DOCS, write_beir
from migration_models import static_variant, upgrade_variant

from consumers.migration.orchestrator import MigrationOutcome, Orchestrator, resolve_model_source
from consumers.migration.status import MigrationStatus
from consumers.worker import IndexWorker
from contracts.errors import SemsearchError
from contracts.events import ModelUpgrade, UpsertEvent
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.model import EmbeddingModel, load_model
from indexer.snapshots import SnapshotStore, index_dir
from semsearch.embedded.redis import EmbeddedRedis

from ..conftest import Publish, drain


@pytest.fixture
def settings(
    stream_settings: Settings,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    queries, qrels = write_beir(tmp_path / "heldout")
    monkeypatch.setenv("SEMSEARCH_GATE_P99_MS", "30000")  # shared cores: a loose bound
    return stream_settings.with_overrides(
        redis_url=redis_server.url, validation_queries=queries, validation_qrels=qrels
    )


@pytest.fixture
def live_index(
    settings: Settings, open_worker: Callable[..., IndexWorker], publish: Publish
) -> str:
    """The bundled model's index holds DOCS in a snapshot (its worker closed again)."""
    publish([UpsertEvent.build(d, t, x, version=1) for d, t, x in DOCS])
    worker = open_worker(settings)
    drain(worker, len(DOCS))
    worker.close()
    return worker.index.index_id


def _orchestrator(
    settings: Settings,
    pointer: Pointer,
    cache: EmbeddingCache,
    tmp_path: Path,
    handed: list[IndexWorker] | None = None,
) -> Orchestrator:
    return Orchestrator(
        settings,
        bootstrap=str(settings.kafka_bootstrap),
        pointer=pointer,
        cache=cache,
        status=MigrationStatus(pointer, tmp_path / "status"),
        publisher=None,
        stop=threading.Event(),
        hand_over=None if handed is None else handed.append,
    )


def _run(orchestrator: Orchestrator, model: str) -> MigrationOutcome:
    return orchestrator.run(ModelUpgrade(model=model, reason="test"))


def test_a_good_model_is_bootstrapped_caught_up_gated_and_flipped_to(
    settings: Settings,
    live_index: str,
    pointer: Pointer,
    cache: EmbeddingCache,
    publish: Publish,
    tmp_path: Path,
) -> None:
    target = load_model(upgrade_variant(tmp_path / "models"))
    handed: list[IndexWorker] = []
    orchestrator = _orchestrator(settings, pointer, cache, tmp_path, handed)
    # An event after the live snapshot: the shadow catches up with it, the live copy replays it.
    publish([UpsertEvent.build(DOCS[0][0], "Changed", "Changed after the snapshot.", 2)])

    outcome = _run(orchestrator, target.info.source)

    assert outcome.outcome == "flipped", outcome.message
    assert (outcome.from_index, outcome.to_index) == (live_index, target.index_id)
    assert pointer.get() == target.index_id
    assert pointer.history() == [live_index]  # the unset pointer was named first: rollback works
    assert outcome.report is not None and outcome.report.passed
    body = outcome.to_json()
    assert body["gate"]["passed"] and body["stats"]["documents"] == len(DOCS)
    assert body["stats"]["shadow_quality"] and body["stats"]["seconds"] > 0
    assert orchestrator.status.current["state"] == "flipped"
    # The shadow's worker was handed over, at the offsets the gate compared, with the change.
    [worker] = handed
    try:
        assert worker.index.index_id == target.index_id
        assert worker.index.documents.held_version(DOCS[0][0]) == 2
        stored = SnapshotStore(index_dir(settings, target.index_id)).read_manifest()
        assert stored.extra["gate"]["passed"]
        assert (index_dir(settings, target.index_id) / "gate-report.json").is_file()
    finally:
        worker.close(final_snapshot=False)


def test_requests_that_end_without_moving_the_pointer(
    settings: Settings,
    live_index: str,
    pointer: Pointer,
    cache: EmbeddingCache,
    model: EmbeddingModel,
    tmp_path: Path,
) -> None:
    orchestrator = _orchestrator(settings, pointer, cache, tmp_path)
    assert pointer.set_if_unset(live_index)

    noop = _run(orchestrator, model.info.source)
    assert noop.outcome == "noop" and "already serves" in noop.message
    assert orchestrator.status.current["state"] == "idle"

    unusable = _run(orchestrator, str(static_variant(tmp_path / "models")))
    assert unusable.outcome == "rejected"
    assert unusable.report is not None and unusable.report.reasons[0].startswith("model:")
    assert orchestrator.status.current["gate"]["passed"] is False

    missing = _run(orchestrator, str(tmp_path / "no-such-model"))
    assert missing.outcome == "failed" and "not a directory" in missing.message
    assert orchestrator.target_of(ModelUpgrade(model=str(tmp_path / "no-such-model"))) is None
    assert orchestrator.target_of(ModelUpgrade(model="bundled")) == model.index_id

    assert pointer.get() == live_index and pointer.history() == []


def test_nothing_to_migrate_from_fails_and_names_why(
    settings: Settings, pointer: Pointer, cache: EmbeddingCache, tmp_path: Path
) -> None:
    outcome = _run(_orchestrator(settings, pointer, cache, tmp_path), "bundled")
    assert outcome.outcome == "failed" and "nothing is served yet" in outcome.message
    assert pointer.get() is None


def test_a_request_names_a_directory_or_the_bundled_model(tmp_path: Path) -> None:
    assert resolve_model_source("bundled") is None
    assert resolve_model_source(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(SemsearchError, match="absolute path"):
        resolve_model_source("some/hub-name")
