"""Fixtures for the API: a real embedded Redis per test, tiny snapshot-backed indexes on disk.

Indexes are built with the real model (one per test session) and written with the real
SnapshotStore, so the holder loads them exactly as it loads production snapshots. Different
index ids with the same model are made by renaming the id before the first write - the model
check compares fingerprints, not ids - which keeps every test to one model load.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_support import wait_until

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastapi.testclient import TestClient

from contracts.documents import Document
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from query_api.app import create_app
from query_api.holder import IndexHolder
from semsearch.embedded.redis import EmbeddedRedis

DOCS = [
    Document("d1", "Vitamin D", "Vitamin D deficiency is associated with bone loss and fractures.", 1),
    Document("d2", "Heart disease", "Statins lower LDL cholesterol and reduce cardiovascular events.", 1),
    Document("d3", "Sleep", "Short sleep duration impairs memory consolidation in adolescents.", 1),
    Document("d4", "Malaria", "Artemisinin resistance in Plasmodium falciparum is spreading in Asia.", 1),
    Document("d5", "Diabetes", "Metformin improves insulin sensitivity in type 2 diabetes patients.", 1),
    Document("d6", "Exercise", "Aerobic exercise increases hippocampal volume in older adults.", 1),
    Document("d7", "Invoice", "Invoice INV-2024-00917 for ACME GmbH is overdue; please pay soon.", 1),
    Document("d8", "Invoice", "Invoice INV-2024-00918 for Globex was paid in full last week.", 1),
    Document("d9", "Smoking", "Smoking cessation lowers the risk of lung cancer within a decade.", 1),
    Document("d10", "Coffee", "Moderate coffee intake is linked to lower mortality in cohorts.", 1),
]
EXTRA = Document("d11", "Antibiotics", "Overuse of antibiotics drives resistant bacterial infections.", 1)


@pytest.fixture
def extra_doc() -> Document:
    """A document that is in none of the DOCS: its presence marks a newer index/generation."""
    return EXTRA


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    """Shared across tests: each passage is embedded once per session."""
    return EmbeddingCache(tmp_path_factory.mktemp("embeddings") / "embeddings.sqlite")


@pytest.fixture
def settings(tmp_path: Path, redis_server: EmbeddedRedis) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        refresh_ms=50,
        seal_chunks=64,
        pointer_key="semsearch:active",
    )


@pytest.fixture
def pointer(settings: Settings) -> Iterator[Pointer]:
    """The test's active-index pointer in its own Redis (what `semsearch up` and the CLI write)."""
    assert settings.redis_url
    handle = Pointer.from_url(settings.redis_url, settings.pointer_key)
    yield handle
    handle.close()


@pytest.fixture
def holder(settings: Settings) -> Iterator[IndexHolder]:
    """An IndexHolder on the test's settings that serves only what the pointer names."""
    held = IndexHolder(settings, use_default_index=False)
    yield held
    held.stop()


BuildIndex = Callable[..., tuple[Index, SnapshotStore]]


@pytest.fixture
def build_index(model: EmbeddingModel, settings: Settings, embedding_cache: EmbeddingCache) -> BuildIndex:
    """build_index("idx-a", docs=None) → (writer index, its store) with generation 1 written."""

    def build(index_id: str, docs: list[Document] | None = None) -> tuple[Index, SnapshotStore]:
        index = Index.create(model, settings, embedding_cache)
        index.index_id = index_id
        index.apply(DOCS if docs is None else docs)
        store = SnapshotStore(index_dir(settings, index_id), keep=settings.keep_generations)
        store.write(index, {"docs": {0: len(DOCS)}})
        return index, store

    return build


@pytest.fixture
def serve_api() -> Iterator[Callable[[Any], str]]:
    """serve_api(app) → base URL of a real uvicorn server for `app` on a free localhost port."""
    from query_api.server import api_url, bind_socket, make_server

    running: list[tuple[Any, threading.Thread]] = []

    def serve(app: Any) -> str:
        sock = bind_socket("127.0.0.1", 0)
        server = make_server(app, log_level="warning")
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start", poll_s=0.01)
        assert server.started, "uvicorn exited before it started"
        return api_url(sock)

    yield serve
    for server, thread in running:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def client(settings: Settings, holder: IndexHolder) -> TestClient:
    """No lifespan: the holder is only driven by the test's poll_once() calls."""
    return TestClient(create_app(settings, holder))


@pytest.fixture
def serving(client: TestClient, holder: IndexHolder, pointer: Pointer, build_index: BuildIndex) -> TestClient:
    """An app whose holder serves idx-a (test modules with a lifespan app override this)."""
    build_index("idx-a")
    pointer.set_if_unset("idx-a")
    holder.poll_once()
    assert holder.ready
    return client
