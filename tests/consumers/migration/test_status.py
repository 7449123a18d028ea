"""The status document of a migration: the same JSON in Redis and in a file, and the state metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from consumers.migration.status import FINISHED_STATES, STATES, MigrationStatus
from contracts.pointer import Pointer, migration_status_key
from semsearch.embedded.redis import EmbeddedRedis


def _state_metric() -> str:
    return next(s for s in STATES if REGISTRY.get_sample_value("semsearch_migration_state", {"semsearch_migration_state": s}) == 1.0)


def test_every_change_is_published_to_redis_and_the_file(pointer: Pointer, tmp_path: Path) -> None:
    status = MigrationStatus(pointer, tmp_path)
    status.begin(model="/models/b", requested_at=3.0)
    status.update("bootstrapping", progress={"documents_done": 1})
    status.update(progress={"documents_total": 4}, to_index="minilm-bbbbbbbbbbbb")

    in_redis = json.loads(pointer.client.get(migration_status_key(pointer.key)))
    in_file = json.loads((tmp_path / "status.json").read_text())
    assert in_redis == in_file == status.current
    assert in_file["state"] == "bootstrapping" and in_file["model"] == "/models/b"
    assert in_file["progress"] == {"documents_done": 1, "documents_total": 4}
    assert in_file["elapsed_s"] >= 0
    assert _state_metric() == "bootstrapping"


def test_without_redis_the_file_is_still_written(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    pointer = Pointer.from_url(redis_server.url, "semsearch:active", timeout_s=0.5)
    redis_server.stop()  # Redis gone: a warning, never a failed migration
    try:
        status = MigrationStatus(pointer, tmp_path)
        status.begin(model="m")
        status.update("failed", outcome="failed")
        assert json.loads((tmp_path / "status.json").read_text())["state"] == "failed"
    finally:
        pointer.close()


def test_unknown_states_are_refused_and_finished_ones_are_known(tmp_path: Path) -> None:
    status = MigrationStatus(None, tmp_path)
    with pytest.raises(ValueError, match="unknown migration state"):
        status.update("half-done")
    assert set(STATES) >= FINISHED_STATES
    assert not FINISHED_STATES & {"loading", "bootstrapping", "catching-up", "validating"}


def test_the_status_key_is_in_the_pointer_namespace() -> None:
    assert migration_status_key("semsearch:active") == "semsearch:migration"
    assert migration_status_key("prod:blue:active") == "prod:blue:migration"
