"""Fixtures of the migration tests: the active-index pointer in the test's own Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contracts.pointer import Pointer
from semsearch.embedded.redis import EmbeddedRedis


@pytest.fixture
def pointer(redis_server: EmbeddedRedis) -> Iterator[Pointer]:
    pointer = Pointer.from_url(redis_server.url, "semsearch:active")
    yield pointer
    pointer.close()
