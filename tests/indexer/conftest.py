"""Fixtures for the search core: one model per test session, tiny corpora, throwaway data dirs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from contracts.documents import Document
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from indexer.index import Index
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore

SMALL_DOCS = [
    Document(
        "d1", "Vitamin D", "Vitamin D deficiency is associated with bone loss and fractures.", 1
    ),
    Document(
        "d2", "Heart disease", "Statins lower LDL cholesterol and reduce cardiovascular events.", 1
    ),
    Document("d3", "Sleep", "Short sleep duration impairs memory consolidation in adolescents.", 1),
    Document(
        "d4", "Malaria", "Artemisinin resistance in Plasmodium falciparum is spreading in Asia.", 1
    ),
    Document(
        "d5", "Diabetes", "Metformin improves insulin sensitivity in type 2 diabetes patients.", 1
    ),
    Document("d6", "Exercise", "Aerobic exercise increases hippocampal volume in older adults.", 1),
    Document(
        "d7", "Invoice", "Invoice INV-2024-00917 for ACME GmbH is overdue; please pay soon.", 1
    ),
    Document("d8", "Invoice", "Invoice INV-2024-00918 for Globex was paid in full last week.", 1),
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Seals and merges in the writer's thread, so a test sees them when `apply` returns; the
    # worker-thread path has its own tests (test_vector_background.py) and runs in every
    # streaming test (the default).
    return Settings(data_dir=tmp_path / "data", seal_chunks=64, background_maintenance=False)


@pytest.fixture
def make_index(
    model: EmbeddingModel, settings: Settings, cache: EmbeddingCache
) -> Callable[..., Index]:
    def make(docs: list[Document] | None = None, **overrides: object) -> Index:
        index = Index.create(
            model, settings.with_overrides(**overrides) if overrides else settings, cache
        )
        index.apply(SMALL_DOCS if docs is None else docs)
        return index

    return make


@pytest.fixture
def pending_change(make_index: Callable[..., Index], tmp_path: Path) -> tuple[Index, SnapshotStore]:
    """SMALL_DOCS written as generation 1 (offsets docs/0 at 8), then d9 applied and not yet
    written: where every test of a generation write that fails before it commits starts."""
    index = make_index()
    store = SnapshotStore(tmp_path / "idx")
    store.write(index, {"docs": {0: 8}})
    index.apply([Document("d9", "Later", "a later document", 1)])
    return index, store
