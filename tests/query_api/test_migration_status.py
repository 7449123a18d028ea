"""GET /index's migration block: what the migrator published, Redis first, the file without it."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.migration.status import MigrationStatus
from contracts.pointer import MIGRATION_STATUS_FILE, Pointer
from query_api.migration_status import migration_status
from semsearch.embedded.redis import EmbeddedRedis


def test_the_api_reads_what_the_migrator_wrote(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    pointer = Pointer.from_url(redis_server.url, "team:blue:active")
    writer = MigrationStatus(pointer, tmp_path / "indexer")
    writer.begin(model="/models/b", requested_at=3.0)
    writer.update("validating")
    assert pointer.client.exists("team:blue:migration")  # next to the pointer, not under semsearch:
    assert migration_status(pointer, tmp_path / "api") == writer.current  # the API has no file
    pointer.close()


def test_redis_wins_while_it_answers_and_the_file_serves_without_it(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    pointer = Pointer.from_url(redis_server.url, "semsearch:active", timeout_s=0.5)
    pointer.client.set(pointer.migration_status_key, json.dumps({"state": "flipped"}))
    (tmp_path / MIGRATION_STATUS_FILE).write_text(json.dumps({"state": "bootstrapping"}))
    assert migration_status(pointer, tmp_path) == {"state": "flipped"}
    redis_server.stop()
    assert migration_status(pointer, tmp_path) == {"state": "bootstrapping"}
    assert migration_status(None, tmp_path) == {"state": "bootstrapping"}
    pointer.close()


def test_nothing_published_or_unreadable_is_no_status(tmp_path: Path) -> None:
    assert migration_status(None, tmp_path) is None
    (tmp_path / MIGRATION_STATUS_FILE).write_text("{torn")
    assert migration_status(None, tmp_path) is None
    (tmp_path / MIGRATION_STATUS_FILE).write_text("[1, 2]")
    assert migration_status(None, tmp_path) is None
